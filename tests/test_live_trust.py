"""Root runs stackdump against processes other users own (issue 27): nothing such a user
plants (a file forging another's build-id, a cache directory, a FIFO) may steer or hang it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ON_CI
from helpers import TARGETS, assert_untouched, parse_report, run_stackdump, wait_for_syscall
from test_live_permissions import NOBODY, _run_without_cap_sys_ptrace, _setpriv_problem

BUILD_ID = "0x5eed" + "ab" * 18
NOBODY_WRAP = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _need_root() -> None:
    problem = _setpriv_problem()
    if problem:
        if ON_CI:
            pytest.fail(problem)
        pytest.skip(problem)


@pytest.fixture
def nobody_dir():
    directory = tempfile.mkdtemp(prefix="stackdump-trust-")
    os.chmod(directory, 0o755)
    try:
        yield Path(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _build(source: str, out: Path) -> None:
    cmd = ["gcc", "-O0", "-fno-omit-frame-pointer", f"-Wl,--build-id={BUILD_ID}"]
    subprocess.run([*cmd, str(TARGETS / source), "-o", str(out)], check=True)


def _pad(paths, size: int) -> None:
    for path in paths:
        os.truncate(path, size)


class _Blocked:
    """A program blocked in read() on a pipe; kill() it in a finally block."""

    def __init__(self, argv) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
        wait_for_syscall(self.proc.pid, self.proc.pid, 0)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()


def _functions(out: str):
    return [t.functions() for t in parse_report(out).threads]


@pytest.fixture
def victim(live, nobody_dir) -> Path:
    """The real program, root's, runnable by nobody too."""
    _need_root()
    path = nobody_dir / "victim"
    _build("trust_victim.c", path)
    return path


@pytest.fixture
def forged(victim, nobody_dir):
    """(the real program, root's; the forger, nobody's): the same build-id and size."""
    home = nobody_dir / "nobody"
    home.mkdir()
    forger = home / "forger"
    _build("trust_forger.c", forger)
    _pad((victim, forger), max(victim.stat().st_size, forger.stat().st_size) + 4096)
    os.chown(home, NOBODY, NOBODY)
    os.chown(forger, NOBODY, NOBODY)
    return victim, forger


@pytest.mark.parametrize("mode", ["DISABLED", "FULL"])
def test_a_forged_build_id_names_no_other_process_frames(forged, tmp_path, mode):
    # GIVEN nobody's process running a file that claims the real program's build-id and size
    victim, forger = forged
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    attacker = _Blocked([*NOBODY_WRAP, str(forger)])
    try:
        # WHEN root dumps it with the cache on
        first = run_stackdump("-p", str(attacker.proc.pid), "--mode", mode, env=env)
        assert first.returncode == 0, first.stderr
        # (its own frames are named from its own table, in that dump)
        assert "HACKD_wait" in first.stdout
    finally:
        attacker.kill()
    real = _Blocked([str(victim)])
    try:
        uncached = run_stackdump("-p", str(real.proc.pid), "--mode", mode, "--no-cache")
        cached = run_stackdump("-p", str(real.proc.pid), "--mode", mode, env=env)
    finally:
        real.kill()
    # THEN a later dump of the real program names its frames as an uncached dump does
    assert cached.returncode == 0, cached.stderr
    assert "HACKD" not in cached.stdout
    assert "victim_wait" in cached.stdout
    assert _functions(cached.stdout) == _functions(uncached.stdout)


def test_a_cache_directory_another_user_owns_is_not_used(victim, tmp_path):
    # GIVEN $XDG_CACHE_HOME/stackdump made by nobody: a FIFO where an entry would be, and a
    # subdirectory that is a symlink to a directory of root's
    home = tmp_path / "xdg"
    home.mkdir()
    planted = home / "stackdump"
    planted.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for i in range(256):
        name = f"{i:02x}"
        if i % 2:
            os.symlink(elsewhere, planted / name)
        else:
            (planted / name).mkdir()
            for j in range(4):
                os.mkfifo(planted / name / f"fifo{j}")
    for path in planted.rglob("*"):
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    os.chown(planted, NOBODY, NOBODY)
    env = {**os.environ, "XDG_CACHE_HOME": str(home)}
    real = _Blocked([str(victim)])
    try:
        # WHEN root dumps with that cache
        started = time.monotonic()
        result = run_stackdump("-p", str(real.proc.pid), "--mode", "FULL", env=env, timeout=60)
        took = time.monotonic() - started
        uncached = run_stackdump("-p", str(real.proc.pid), "--mode", "FULL", "--no-cache")
    finally:
        real.kill()
    # THEN it finishes, with one warning naming the directory and why, correct names, and
    # nothing written through the links
    assert took < 30
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, result.stderr
    assert str(planted) in warnings[0] and f"uid {NOBODY}" in warnings[0]
    assert _functions(result.stdout) == _functions(uncached.stdout)
    assert list(elsewhere.iterdir()) == []


def test_core_of_a_fifo_is_a_usage_error_at_once(tmp_path):
    fifo = tmp_path / "core"
    os.mkfifo(fifo)
    result = run_stackdump("--core", str(fifo), timeout=20)
    assert result.returncode == 2, result
    assert "not a regular file (a FIFO)" in result.stderr
    assert result.stdout == ""


def test_symbolize_without_permission_fails_as_a_dump_does(victim):
    # GIVEN nobody's process, and root without CAP_SYS_PTRACE (who may not read its maps)
    os.chmod(victim, 0o755)
    target = _Blocked([*NOBODY_WRAP, str(victim)])
    try:
        result = _run_without_cap_sys_ptrace("--symbolize", "0x1000", "-p", str(target.proc.pid))
    finally:
        target.kill()
    # THEN the permission error of a dump, not '??' with exit 0
    assert result.returncode == 3, result
    assert "stackdump: error: not permitted to read the" in result.stderr
    assert "hint:" in result.stderr
    assert result.stdout == ""


@pytest.fixture
def sticky(live, nobody_dir) -> Path:
    """A sticky directory everyone can write, as /tmp."""
    _need_root()
    path = nobody_dir / "tmp"
    path.mkdir()
    os.chmod(path, 0o1777)
    return path


def test_output_through_another_users_symlink_in_tmp_is_refused(threads_bin, nobody_dir, sticky):
    # GIVEN a root-only file, and nobody's symlink to it in a sticky world-writable directory
    important = nobody_dir / "important"
    important.write_text("root's\n")
    os.chmod(important, 0o600)
    link = sticky / "report.txt"
    os.symlink(important, link)
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    real = _Blocked([str(threads_bin("O0"))])
    try:
        # WHEN root writes a report there
        result = run_stackdump("-p", str(real.proc.pid), "-o", str(link))
        assert_untouched(real.proc.pid)
    finally:
        real.kill()
    # THEN exit 2 before any thread was stopped, and the file unchanged
    assert result.returncode == 2, result
    assert f"uid {NOBODY}" in result.stderr and "not followed" in result.stderr
    assert "thread_count" not in result.stdout
    assert important.read_text() == "root's\n"
    assert [p.name for p in sticky.iterdir()] == ["report.txt"]


def test_output_to_a_file_another_user_planted_in_tmp_is_refused(sticky):
    planted = sticky / "stacks.txt"
    planted.write_text("")
    os.chown(planted, NOBODY, NOBODY)
    result = run_stackdump("-p", str(os.getpid()), "-o", str(planted))
    assert result.returncode == 2, result
    assert "planted" in result.stderr
    assert planted.read_text() == ""
