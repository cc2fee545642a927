"""Issue 12: the report's destination (-o, stdout, stderr) never harms the host, is checked
before any thread is stopped, and a script can trust exit 0 (docs/FORMAT.md "Output
destination", "Exit status")."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import Target, compile_target, parse_report, run_stackdump
from test_live_passive import EintrTarget

STACKDUMP = [sys.executable, "-m", "stackdump"]


@pytest.fixture(scope="module")
def sleeper(live, threads_bin):
    with Target(threads_bin("O2"), {"read": 2, "sleep": 1}).wait_ready() as target:
        yield target


def _in_shell(redirect: str, *args: str) -> subprocess.CompletedProcess:
    """stackdump ARGS run by sh with REDIRECT applied (`2>&-`, `>&-`, `umask 027 &&`)."""
    script = f'{redirect} exec "$@"' if redirect.endswith("&&") else f'"$@" {redirect}'
    return subprocess.run(
        ["sh", "-c", script, "sh", *STACKDUMP, *args], capture_output=True, text=True, timeout=60
    )


def _report_in(path: Path, pid: int) -> None:
    report = parse_report(path.read_text())
    assert report.header["pid"] == str(pid)
    assert report.summary["captured"] == 4


def test_character_device_is_written_in_place_never_replaced(sleeper, tmp_path):
    # GIVEN a private mount namespace whose /dev/null is a fresh device node on a tmpfs
    script = (
        "set -e; mount -t tmpfs tmpfs /dev; mknod -m 666 /dev/null c 1 3; "
        f'"$@" -p {sleeper.pid} -o /dev/null; echo "rc=$?"; stat -c "%F %a %U" /dev/null'
    )
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is missing")
    # WHEN stackdump writes its report to /dev/null there
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *STACKDUMP],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # THEN the device is still the same character device, and nothing was printed
    assert result.stdout.splitlines() == ["rc=0", "character special file 666 root"], (
        result.stdout,
        result.stderr,
    )
    assert result.stderr == ""


def test_fifo_is_written_in_place(sleeper, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = run_stackdump("-p", str(sleeper.pid), "-o", str(fifo))
    reader.join(60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    parse_report(received[0].decode())


def test_symlink_is_followed_and_the_file_keeps_mode_and_owner(sleeper, tmp_path):
    target = tmp_path / "report.txt"
    target.write_text("old\n")
    target.chmod(0o640)
    nobody = pwd.getpwnam("nobody")
    os.chown(target, nobody.pw_uid, nobody.pw_gid)
    link = tmp_path / "link"
    link.symlink_to(target)

    result = run_stackdump("-p", str(sleeper.pid), "-o", str(link))

    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    _report_in(target, sleeper.pid)
    st = target.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "report.txt"]  # no temp left


def test_hard_linked_file_is_written_through_every_link(sleeper, tmp_path):
    first = tmp_path / "a.txt"
    first.write_text("old\n")
    second = tmp_path / "b.txt"
    os.link(first, second)
    result = run_stackdump("-p", str(sleeper.pid), "-o", str(first))
    assert result.returncode == 0, result.stderr
    assert first.stat().st_nlink == 2
    _report_in(second, sleeper.pid)


def test_new_file_honours_the_umask(sleeper, tmp_path):
    out = tmp_path / "new.txt"
    result = _in_shell("umask 027 &&", "-p", str(sleeper.pid), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    _report_in(out, sleeper.pid)


@pytest.mark.parametrize("name", ["-", "/dev/stdout"])
def test_dash_and_dev_stdout_mean_stdout(sleeper, name):
    result = run_stackdump("-p", str(sleeper.pid), "-o", name)
    assert result.returncode == 0, result.stderr
    parse_report(result.stdout)
    assert os.path.islink("/dev/stdout")


def test_empty_output_name_is_a_usage_error():
    result = run_stackdump("-p", "1", "-o", "")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "-o takes a file name" in result.stderr


@pytest.mark.parametrize(
    "path,why",
    [
        ("{tmp}/missing/report.txt", "No such file or directory"),
        ("{tmp}", "it is a directory"),
        ("/proc/1/mem", ""),
    ],
)
def test_bad_destination_fails_before_any_thread_is_stopped(live, build_dir, tmp_path, path, why):
    # GIVEN threads whose epoll_wait fails with EINTR if they are ever stopped
    binary = compile_target("eintr.c", build_dir, "eintr-O2", ["-O2", "-g"])
    with EintrTarget(binary, {"epoll": 2}).wait_ready() as target:
        typed = path.format(tmp=tmp_path)
        # WHEN capture would stop every thread, but the destination is unusable
        result = run_stackdump("-p", str(target.pid), "--capture", "ptrace", "-o", typed)
        # THEN exit 2, the message names what was typed, and no thread was ever stopped
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr.startswith(f'stackdump: error: cannot write the report to "{typed}"')
        assert why in result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert target.status()["eintr_epoll"] == 0
        # ... which a usable destination would have done (the check above can fail)
        assert run_stackdump("-p", str(target.pid), "--capture", "ptrace").returncode == 0
        assert target.status()["eintr_epoll"] > 0


def test_closed_stderr_still_gives_the_report(sleeper):
    result = _in_shell("2>&-", "-p", str(sleeper.pid))
    assert result.returncode == 0
    parse_report(result.stdout)


def test_closed_stdout_fails_cleanly_before_capture_or_writes_to_o(sleeper, tmp_path):
    closed = _in_shell(">&-", "-p", str(sleeper.pid))
    assert closed.returncode == 2
    assert closed.stderr.splitlines() == [
        "stackdump: error: standard output is closed: nowhere to write the report (give -o FILE)"
    ]
    out = tmp_path / "r.txt"
    with_file = _in_shell(">&-", "-p", str(sleeper.pid), "-o", str(out))
    assert with_file.returncode == 0, with_file.stderr
    _report_in(out, sleeper.pid)


def test_full_device_is_an_output_error_naming_stdout(sleeper):
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*STACKDUMP, "-p", str(sleeper.pid)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert result.returncode == 4
    assert "cannot write the report to standard output: No space left on device" in (result.stderr)


def test_reader_leaving_early_is_not_exit_0(sleeper):
    # `stackdump | head -1`: the report was not delivered whole, so the exit says so
    proc = subprocess.Popen(
        [*STACKDUMP, "-p", str(sleeper.pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader is gone before anything was written
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4
    assert b"the reader closed the pipe before the report was complete" in err


def test_full_and_read_only_file_systems(sleeper, tmp_path):
    # GIVEN, in a private mount namespace, a file system with no room left and a read-only one
    (tmp_path / "full").mkdir()
    (tmp_path / "ro").mkdir()
    script = (
        f"mount -t tmpfs -o size=8k tmpfs {tmp_path}/full && "
        f"mount -t tmpfs -o ro tmpfs {tmp_path}/ro || exit 99; "
        f"head -c 65536 /dev/zero > {tmp_path}/full/filler 2>/dev/null; "
        f'"$@" -p {sleeper.pid} -o {tmp_path}/full/r.txt; echo "full=$?"; ls -A {tmp_path}/full; '
        f'"$@" -p {sleeper.pid} -o {tmp_path}/ro/r.txt; echo "ro=$?"'
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *STACKDUMP],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # THEN the full one is an output error naming the file, leaving nothing behind, and the
    # read-only one is refused before capture
    assert result.stdout.splitlines() == ["full=4", "filler", "ro=2"], result.stderr
    errors = result.stderr.splitlines()
    assert errors == [
        f'stackdump: error: cannot write the report to "{tmp_path}/full/r.txt": No space left '
        f'on device; "{tmp_path}/full/r.txt" was left as it was',
        f'stackdump: error: cannot write the report to "{tmp_path}/ro/r.txt": Read-only file '
        "system",
    ]
