"""Live capture tests: real targets, real ptrace, the real `stackdump` command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import (
    Target,
    assert_key_order,
    assert_untouched,
    parse_report,
    read_syscall_line,
    run_stackdump,
    wait_for_syscall,
)

pytestmark = pytest.mark.usefixtures("live")

CHAIN = ["leaf", "middle", "outer", "spin_main"]


@pytest.mark.parametrize("variant", ["O0", "O2", "nofp", "nocfi"])
def test_spinning_thread_shows_its_call_chain(threads_bin, variant):
    # GIVEN a thread spinning in leaf <- middle <- outer <- spin_main
    with Target(threads_bin(variant), {"spin": 1}).wait_ready() as target:
        spin = target.tid("spin")
        # WHEN it is dumped
        result = run_stackdump(
            "-p", str(target.pid), "--thread-id", str(spin), "--mode", "disabled"
        )
        # THEN its section names the whole chain innermost first, down to the thread's start
        assert result.returncode == 0, result.stderr
        report = parse_report(result.stdout)
        section = report.thread(spin)
        assert section.status == "ok"
        assert section.functions() == [*CHAIN, "start_thread", "clone3"], section.frames
        assert int(section.keys["frames"]) == len(section.frames)
        # libc's start_thread keeps no frame pointer: the frame-pointer walk alone stops
        # there (or earlier without frame pointers), and CFI supplied the rest.
        assert section.keys["capture_method"] == "dwarf_cfi"
        assert section.keys["unwind_status"] == "end_of_stack"
        if variant != "nofp":
            assert section.keys["fp_status"] == "end_of_chain"
        assert_key_order(section)
        assert_untouched(target.pid)
        assert target.status()["spin"] > 0


def test_blocked_read_is_captured_and_read_does_not_return(threads_bin):
    # GIVEN a thread blocked in read() on a pipe nobody writes to
    with Target(threads_bin("O0"), {"read": 1}).wait_ready() as target:
        reader = target.tid("read")
        before = read_syscall_line(target.pid, reader)
        assert before.split()[0] == "0"
        # WHEN the whole process is dumped with default options
        result = run_stackdump("-p", str(target.pid))
        # THEN the reader was stopped and captured ...
        assert result.returncode == 0, result.stderr
        report = parse_report(result.stdout)
        section = report.thread(reader)
        assert section.status == "ok"
        assert section.functions() == [
            "read",
            "blocking_read",
            "read_main",
            "start_thread",
            "clone3",
        ], section.frames
        assert "pause_us" in section.keys
        # ... and its read() was restarted, never returned: same call, same buffer argument.
        assert wait_for_syscall(target.pid, reader, 0) == before
        assert target.status()["read_returned"] == 0
        assert_untouched(target.pid)


def test_skip_blocking_syscalls_leaves_blocked_reader_alone(threads_bin):
    with Target(threads_bin("O0"), {"read": 1, "spin": 1}).wait_ready() as target:
        reader, spinner = target.tid("read"), target.tid("spin")
        result = run_stackdump(
            "-p",
            str(target.pid),
            "--thread-id",
            f"{reader},{spinner}",
            "--skip-blocking-syscalls",
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        name = Path(f"/proc/{target.pid}/task/{reader}/comm").read_text().strip()
        prefix = (
            f"----- thread {reader} ({name}) status=skipped_blocking_syscall syscall=read "
            f"syscall_number=0 "
        )
        # Then the thread context (docs/FORMAT.md): what it was doing, not a second syscall=.
        i = next(k for k, line in enumerate(lines) if line.startswith(prefix))
        assert re.fullmatch(r"state=S( wchan=\S+)? cpu_ms=\d+ -----", lines[i][len(prefix) :])
        assert lines[i + 1] == "<no stack captured>"
        report = parse_report(result.stdout)
        assert report.header["skip_blocking_syscalls"] == "true"
        assert report.thread(spinner).status == "ok"
        assert report.summary == {
            "captured": 1,
            "skipped": 1,
            "timed_out": 0,
            "remote_signal_attempts": 1,
        }
        assert_untouched(target.pid)
        assert target.status()["read_returned"] == 0


def test_thread_id_selects_threads_in_given_order(threads_bin):
    with Target(threads_bin("O0"), {"read": 1, "sleep": 1, "cond": 1}).wait_ready() as target:
        a, b = target.tid("sleep"), target.tid("read")
        result = run_stackdump("-p", str(target.pid), "--thread-id", f"{a},{b}")
        assert result.returncode == 0, result.stderr
        report = parse_report(result.stdout)
        assert report.header["thread_count"] == "2"
        assert [t.tid for t in report.threads] == [a, b]

        legacy = run_stackdump("-p", str(target.pid), "--tid", str(b))
        assert legacy.returncode == 0, legacy.stderr
        assert [t.tid for t in parse_report(legacy.stdout).threads] == [b]
        assert_untouched(target.pid)


def test_thread_ids_not_in_the_process_say_so_and_exit_1(threads_bin):
    with open("/proc/sys/kernel/pid_max") as f:
        nowhere = int(f.read()) + 1  # no thread can have this id
    with (
        Target(threads_bin("O0"), {}).wait_ready() as target,
        Target(threads_bin("O0"), {}).wait_ready() as other,
    ):
        result = run_stackdump("-p", str(target.pid), "--thread-id", f"{nowhere},{other.pid}")
        # Doris's status is kept; the error says what the thread id really is
        assert result.returncode == 1, result.stderr
        report = parse_report(result.stdout)
        assert report.header["thread_count"] == "2"
        first, second = report.threads
        assert (first.tid, first.status) == (nowhere, "thread_exited")
        assert first.keys["error"] == f'"not a thread of process {target.pid}"'
        assert (second.tid, second.status) == (other.pid, "thread_exited")
        assert second.keys["error"] == (
            f'"not a thread of process {target.pid}: it is a thread of process '
            f'{other.pid} ({other.binary_name})"'
        )
        assert report.summary == {
            "captured": 0,
            "skipped": 2,
            "timed_out": 0,
            "remote_signal_attempts": 0,
        }
        assert report.stats["foreign"] == 2
        assert_untouched(other.pid)


def test_whole_process_report_is_consistent(threads_bin):
    roles = {"spin": 1, "read": 2, "cond": 2, "sleep": 2}
    with Target(threads_bin("O2"), roles).wait_ready() as target:
        result = run_stackdump("-p", str(target.pid), "-a")
        assert result.returncode == 0, result.stderr
        report = parse_report(result.stdout)
        tids = sorted(t for ts in target.tids.values() for t in ts)
        assert [t.tid for t in report.threads] == tids  # TID order, every thread
        assert report.header["pid"] == str(target.pid)
        assert report.header["thread_count"] == str(len(tids))
        assert report.header["dwarf_location_info_mode"] == "fast"
        assert report.header["exe"].endswith("threads-O2")
        s = report.summary
        assert s["captured"] + s["skipped"] + s["timed_out"] == len(tids)
        assert s["captured"] == len(tids) and s["remote_signal_attempts"] == len(tids)
        for section in report.threads:
            assert_key_order(section)
            assert section.keys["stack_bounds"].startswith("0x")
            # -a puts each frame's pc first
            assert all(f.startswith("0x") for f in section.frames), section.frames
        assert report.stats["max_pause_us"] >= 0
        assert_untouched(target.pid)


def test_thread_that_cannot_stop_times_out_and_is_released(threads_bin):
    # GIVEN a thread waiting in vfork(), which no ptrace stop can interrupt
    with Target(threads_bin("O0"), {"vfork": 1}).wait_ready() as target:
        stuck = target.tid("vfork")
        result = run_stackdump(
            "-p", str(target.pid), "--thread-id", str(stuck), "--timeout-ms", "50"
        )
        # THEN it is reported as timed out, the dump is partial (exit 1), and it runs on
        assert result.returncode == 1, result.stderr
        report = parse_report(result.stdout)
        section = report.thread(stuck)
        assert section.status == "timeout"
        assert section.keys["pause_us"] == "0"
        assert "did not stop" in section.keys["error"]
        assert report.summary["timed_out"] == 1
        assert_untouched(target.pid)


def test_output_file_is_written_whole(threads_bin, tmp_path):
    with Target(threads_bin("O0"), {"sleep": 1}).wait_ready() as target:
        out = tmp_path / "dump.txt"
        result = run_stackdump("-p", str(target.pid), "-o", str(out))
        assert result.returncode == 0, result.stderr
        assert result.stdout == ""
        parse_report(out.read_text())
        assert [p.name for p in tmp_path.iterdir()] == ["dump.txt"]  # no temp file left


def test_fifty_dumps_of_a_hundred_threads(threads_bin):
    roles = {"spin": 1, "read": 18, "cond": 50, "sleep": 30}
    with Target(threads_bin("O2"), roles).wait_ready() as target:
        for _ in range(50):
            result = run_stackdump("-p", str(target.pid), "--mode", "disabled")
            assert result.returncode == 0, result.stderr
            report = parse_report(result.stdout)
            assert report.header["thread_count"] == "100"
            assert report.summary["captured"] == 100
            assert_untouched(target.pid)
        assert target.alive()
        assert target.status()["read_returned"] == 0


def test_the_library_refuses_to_capture_from_another_thread(threads_bin):
    """`stackdump.dump` (and `profile`) of a live process called from a worker thread: a
    clear `NotMainThread` before any thread is touched, not Python's ValueError from the
    SIGALRM handler the stop window needs; from the main thread the same call works."""
    import threading

    import stackdump
    from stackdump.errors import NotMainThread

    with Target(threads_bin("O2"), {"read": 1}).wait_ready() as target:
        raised = []

        def call() -> None:
            try:
                stackdump.dump(stackdump.Process(target.pid))
            except BaseException as e:  # noqa: BLE001 - what it raised is the assertion
                raised.append(e)

        worker = threading.Thread(target=call)
        worker.start()
        worker.join()
        assert len(raised) == 1 and isinstance(raised[0], NotMainThread), raised
        assert "main thread" in str(raised[0])
        assert_untouched(target.pid)
        report = stackdump.dump(stackdump.Process(target.pid))
        assert {t.status.value for t in report.threads} == {"ok"}


def test_a_low_soft_limit_on_open_files_costs_no_names(live, threads_bin):
    """A profile of 25 threads keeps their /proc files open, and pins the mapped files; under
    a soft RLIMIT_NOFILE of 40 the debug files found later could not be opened, and frames
    lost their source lines with exit 0. stackdump raises its own soft limit to the hard one
    (as Go's runtime does): the same profile under that limit names every frame alike."""
    import resource
    import subprocess
    import sys

    def low_limit() -> None:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (40, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )

    with Target(threads_bin("O2"), {"read": 12, "cond": 12}).wait_ready() as target:
        args = [sys.executable, "-m", "stackdump", "-p", str(target.pid), "--samples", "3",
                "--interval-ms", "10"]  # fmt: skip
        outputs = [
            subprocess.run(args, capture_output=True, text=True, timeout=120, preexec_fn=limit)
            for limit in (None, low_limit)
        ]
    for out in outputs:
        assert out.returncode == 0, out.stderr
    plain, limited = (re.findall(r" at \S+:\d+", out.stdout) for out in outputs)
    assert any("threads.c:" in line for line in plain)
    assert limited == plain


def test_the_library_leaves_its_callers_signals_as_it_found_them(threads_bin):
    """A capture blocks SIGCHLD and catches SIGALRM while it stops threads; a profile keeps
    them so from its first stop to its last sample (ptrace.Signals). After a dump and after a
    profile that stopped a spinning thread at every sample, the caller's mask and handler
    are its own again."""
    import signal

    import stackdump

    def handler(signum, frame) -> None:
        pass

    before = signal.signal(signal.SIGALRM, handler)
    try:
        with Target(threads_bin("O2"), {"spin": 1, "read": 1}).wait_ready() as target:
            for run in (
                lambda: stackdump.dump(stackdump.Process(target.pid)),
                lambda: stackdump.profile(stackdump.Process(target.pid), 5, 1),
            ):
                run()
                assert signal.getsignal(signal.SIGALRM) is handler
                assert signal.SIGCHLD not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
                assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
            assert_untouched(target.pid)
    finally:
        signal.signal(signal.SIGALRM, before)
