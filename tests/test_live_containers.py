"""Targets whose files the host cannot see by path (issue 5): a binary in its own mount
namespace, and a binary and library deleted after start. Both get full symbols: files are
opened through /proc/<pid>/root (the target's mount namespace) and /proc/<pid>/map_files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ON_CI
from helpers import (
    TARGETS,
    Target,
    assert_untouched,
    link_two_units,
    parse_report,
    run_stackdump,
)


def _unshare_problem() -> str:
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True
    )
    return "" if probe.returncode == 0 else f"unshare --mount refused: {probe.stderr.strip()}"


def test_target_in_its_own_mount_namespace(live, threads_bin, tmp_path):
    problem = _unshare_problem()
    if problem:
        if ON_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    private, mountpoint = tmp_path / "private", tmp_path / "mnt"
    private.mkdir()
    mountpoint.mkdir()
    shutil.copy(threads_bin("O2"), private / "app")
    app = mountpoint / "app"  # exists only inside the target's namespace
    wrap = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f"mount --bind {private} {mountpoint} && exec",
    ]
    with Target(app, {"read": 1, "epoll": 1}, wrap=wrap).wait_ready() as target:
        assert not app.exists()
        assert os.readlink(f"/proc/{target.pid}/exe") == str(app)
        result = run_stackdump("-p", str(target.pid))
        assert result.returncode == 0, result.stderr
        report = parse_report(result.stdout)
        assert report.header["exe"] == str(app)
        source = f"{TARGETS}/threads.c"
        for role, functions in (
            ("read", ["blocking_read", "read_main"]),
            ("epoll", ["wait_epoll", "epoll_main"]),
        ):
            section = report.thread(target.tid(role))
            assert section.functions()[1:3] == functions, section.frames
            assert f" at {source}:" in section.frames[1], section.frames
        assert_untouched(target.pid)


@pytest.fixture(scope="module")
def shared_lib_target(build_dir):
    """two_units with its thread code in a shared library: libtwounits.so."""
    out = build_dir / "shared"
    out.mkdir(exist_ok=True)
    lib, exe = out / "libtwounits.so", out / "two_units_shared"
    if not exe.exists():
        subprocess.run(
            [
                "gcc",
                "-O1",
                "-g",
                "-fPIC",
                "-shared",
                "-Wl,-soname,libtwounits.so",
                str(TARGETS / "two_units_lib.c"),
                "-o",
                str(lib),
            ],
            check=True,
        )
        link_two_units(lib, exe, ["-Wl,-rpath,$ORIGIN"])
    return out


def _copy_of(built: Path, where: Path):
    """(executable, library) copied from the shared_lib_target build into `where`."""
    for name in ("libtwounits.so", "two_units_shared"):
        shutil.copy(built / name, where / name)
    return where / "two_units_shared", where / "libtwounits.so"


def _started(exe: Path) -> Target:
    target = Target(exe, {})
    target.roles_wanted = {"read": 1}  # two_units takes no arguments
    try:
        return target.wait_ready()
    except BaseException:
        target.kill()
        raise


def test_deleted_binary_and_library(live, shared_lib_target, tmp_path):
    exe, lib = _copy_of(shared_lib_target, tmp_path)
    with _started(exe) as target:
        maps = Path(f"/proc/{target.pid}/maps").read_text()
        assert str(lib) in maps, "the copy of the library ($ORIGIN) is what is mapped"
        exe.unlink()
        lib.unlink()
        assert f"{lib} (deleted)" in Path(f"/proc/{target.pid}/maps").read_text()
        result = run_stackdump("-p", str(target.pid))
        assert result.returncode == 0, result.stderr
        section = parse_report(result.stdout).thread(target.tid("read"))
        assert section.functions()[1:3] == ["lib_blocking_read", "lib_thread_main"], section.frames
        assert f" at {TARGETS}/two_units_lib.c:" in section.frames[1], section.frames
        main = parse_report(result.stdout).thread(target.pid)
        assert "main" in main.functions(), main.frames
        assert_untouched(target.pid)


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_library_damaged_on_disk_after_loading(live, shared_lib_target, tmp_path, damage):
    """A library truncated or overwritten in place after the process loaded it: its own
    frame degrades to OBJECT+0xOFFSET, and the thread says where and why its walk stopped
    (the process maps the same damaged pages, so there is nothing better to read)."""
    exe, lib = _copy_of(shared_lib_target, tmp_path)
    with _started(exe) as target:
        size = lib.stat().st_size
        with open(lib, "r+b") as f:  # in place: same inode, as `cp new old` or `> old` do
            if damage == "truncate":
                f.truncate(0)
            else:
                f.write(b"\0" * size)
        result = run_stackdump("-p", str(target.pid))
        assert result.returncode == 0, result.stderr
        report = parse_report(result.stdout)
        section = report.thread(target.tid("read"))
        assert section.functions()[0] == "read", section.frames
        assert re.fullmatch(rf"0x[0-9a-f]{{16}} in {lib}\+0x[0-9a-f]+", section.frames[1])
        assert section.keys["unwind_status"] == "no_cfi", section.keys
        why = "truncated after it was loaded" if damage == "truncate" else "changed after it"
        assert f"in {lib}: " in section.keys["error"] and why in section.keys["error"], section.keys
        main = report.thread(target.pid)
        assert "main" in main.functions(), main.frames
        assert_untouched(target.pid)
