"""Issue 13: right answers while the world moves: a target that dies mid-dump, a main thread
that exited before the others, sleeps the kernel restarted, threads born during the dump,
two dumps at once (README "Never harming the target", docs/FORMAT.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from helpers import (
    DEADLINE_S,
    Target,
    assert_untouched,
    compile_target,
    finish,
    parse_report,
    run_stackdump,
    wait_for_syscall,
)
from test_live_faults import _start_stackdump

from stackdump import proc

STACKDUMP = [sys.executable, "-m", "stackdump"]
RESTART_SYSCALL = 219


def test_target_killed_mid_dump_keeps_every_captured_stack(live, threads_bin):
    # GIVEN a 1,000-thread target built without frame pointers (only the binary's own CFI
    # unwinds its frames), dumped one thread at a time
    with Target(threads_bin("nofp"), {"read": 999}).wait_ready() as target:
        tids = sorted(target.tids["read"])
        middle = tids[len(tids) // 2]
        before = proc.read_context_switches(target.pid, middle)
        dumper = _start_stackdump("-p", str(target.pid), "--capture", "ptrace")
        # WHEN the target is killed once half its threads were captured: the middle thread,
        # idle in read, switched context only because stackdump stopped it (a lasting sign,
        # where its TracerPid shows the dumper for some microseconds only)
        traced = _wait_until_switched(target.pid, middle, before, dumper)
        target.proc.kill()
        try:
            # Its parent can reap it while stackdump still runs: no exited thread is left
            # a zombie waiting for its tracer.
            target.proc.wait(DEADLINE_S)
        finally:
            out, err = finish(dumper)
        assert traced
    # THEN the threads captured before keep full, symbolized stacks, and the report and the
    # exit status say the process exited
    assert dumper.returncode == 1, err
    assert f"process {target.pid} exited during the dump" in err
    report = parse_report(out)
    assert report.stats["process_exited"] == 1
    assert report.header["thread_count"] == "1000"
    captured = [t for t in report.threads if t.status == "ok"]
    assert len(captured) >= len(tids) // 2
    for section in captured:
        if section.tid == target.pid:
            continue
        functions = section.functions()
        assert "error" not in section.keys, section.keys
        for name in ("blocking_read", "read_main", "start_thread"):
            assert name in functions, (section.tid, section.frames)
    gone = [t for t in report.threads if t.status != "ok"]
    assert gone and all(t.status == "thread_exited" for t in gone)


def _wait_until_switched(pid: int, tid: int, before, dumper: subprocess.Popen) -> bool:
    deadline = time.monotonic() + DEADLINE_S
    while dumper.poll() is None and time.monotonic() < deadline:
        if proc.read_context_switches(pid, tid) != before:
            return True
        os.sched_yield()
    return False


@pytest.fixture(scope="module")
def zombie_leader(live, build_dir):
    binary = compile_target("zombie_leader.c", build_dir, "zombie_leader", ["-O1", "-g"])
    with Target(binary, {"worker": 3}).wait_ready() as target:
        deadline_wait = [0]

        def leader_exited() -> bool:
            deadline_wait[0] += 1
            return proc.thread_state(target.pid, target.pid) == "Z"

        while not leader_exited():
            if deadline_wait[0] > 10_000_000:
                raise TimeoutError("the main thread never exited")
            os.sched_yield()
        yield target


def test_zombie_leader_with_live_threads_is_sampled(zombie_leader):
    """A profile of a process whose main thread has exited: each sample reads the process
    through a live worker, and the main thread's missing image is not taken for another
    program (capture/live.Series)."""
    target = zombie_leader
    result = run_stackdump("-p", str(target.pid), "--samples", "5", "--interval-ms", "10")
    assert result.returncode == 0, result.stderr
    workers = len(target.tids["worker"])
    assert re.search(rf"^summary: samples=5 thread_samples={5 * workers} ", result.stdout, re.M)
    assert "worker_wait" in result.stdout
    assert_untouched(target.pid)


@pytest.mark.parametrize("which", ["leader", "worker"])
def test_zombie_leader_with_live_threads_is_dumped(zombie_leader, which):
    target = zombie_leader
    pid = target.pid if which == "leader" else target.tids["worker"][1]
    result = run_stackdump("-p", str(pid))
    assert result.returncode == 0, result.stderr
    report = parse_report(result.stdout)
    assert report.header["pid"] == str(target.pid)
    assert report.header["exe"].endswith("/zombie_leader")
    leader = report.thread(target.pid)
    assert leader.status == "thread_exited"
    assert "main thread has exited" in leader.keys["error"]
    for tid in target.tids["worker"]:
        section = report.thread(tid)
        assert section.status == "ok", section.keys
        assert {"worker_wait", "worker_main", "start_thread"} <= set(section.functions())
    assert report.summary["remote_signal_attempts"] == 3
    assert_untouched(target.pid)


def test_a_sleep_restarted_after_a_stop_is_still_a_blocking_syscall(live, threads_bin):
    with Target(threads_bin("O2"), {"sleep": 1}).wait_ready() as target:
        sleeper = target.tid("sleep")
        # GIVEN a sleep that one ptrace stop turned into restart_syscall
        assert run_stackdump("-p", str(target.pid), "--capture", "ptrace").returncode == 0
        wait_for_syscall(target.pid, sleeper, RESTART_SYSCALL)
        # WHEN it is dumped with --skip-blocking-syscalls, THEN it is skipped, not stopped
        skipped = run_stackdump("-p", str(target.pid), "--skip-blocking-syscalls")
        assert skipped.returncode == 0, skipped.stderr
        section = parse_report(skipped.stdout).thread(sleeper)
        assert section.status == "skipped_blocking_syscall"
        assert section.keys["syscall"] == "restart_syscall"
        assert section.keys["syscall_number"] == str(RESTART_SYSCALL)
        # ... and passive capture copies it in place
        passive = run_stackdump("-p", str(target.pid), "--capture", "passive")
        assert passive.returncode == 0, passive.stderr
        section = parse_report(passive.stdout).thread(sleeper)
        assert section.keys["capture_method"] == "passive_syscall"
        assert "sleep_forever" in section.functions()


def test_two_dumps_at_once_never_report_each_other(live, threads_bin):
    with Target(threads_bin("O2"), {"read": 200}).wait_ready() as target:
        for _ in range(5):
            dumpers = [
                _start_stackdump("-p", str(target.pid), "--capture", "ptrace") for _ in range(2)
            ]
            for dumper in dumpers:
                out, err = finish(dumper)
                assert dumper.returncode == 0, err
                report = parse_report(out)
                assert report.summary["captured"] == 201, [
                    (t.tid, t.keys) for t in report.threads if t.status != "ok"
                ]
        assert_untouched(target.pid)


@pytest.mark.parametrize("capture", ["auto", "ptrace"])
def test_a_return_address_in_no_mapping_ends_the_walk_with_an_error(live, build_dir, capture):
    # GIVEN a frame-pointer chain that leads to 0x16, past frames without CFI
    flags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-asynchronous-unwind-tables"]
    binary = compile_target("crafted.c", build_dir, "crafted", [*flags, "-fno-unwind-tables"])
    with Target(binary, {"crafted": 1}).wait_ready() as target:
        # WHEN the thread is copied in place (auto: it is in epoll_wait) or stopped
        result = run_stackdump("-p", str(target.pid), "--capture", capture)
        assert result.returncode == 0, result.stderr
        section = parse_report(result.stdout).thread(target.tid("crafted"))
    # THEN the frames before it are there, 0x16 is not, and the thread says why it stopped
    expected = "passive_syscall" if capture == "auto" else "dwarf_cfi"
    assert section.keys["capture_method"] == expected, section.keys
    assert section.functions()[:2] == ["epoll_wait", "crafted_wait"], section.frames
    assert not any("0x0000000000000016" in frame for frame in section.frames), section.frames
    assert section.keys["unwind_status"] in ("step_error", "missing_register"), section.keys
    assert "error" in section.keys
    if capture == "ptrace":
        assert "crafted_main" in section.functions()
        assert section.keys["error"] == (
            '"return address 0x16 is in no executable mapping: the walk stops before it"'
        )


def _policy(pid: int) -> int:
    try:
        return os.sched_getscheduler(pid) & ~os.SCHED_RESET_ON_FORK
    except OSError:
        return -1


@pytest.mark.parametrize(
    "launcher,own_policy",
    [([], os.SCHED_OTHER), (["chrt", "--idle", "0"], os.SCHED_IDLE)],
    ids=["default", "chrt-idle"],
)
def test_real_time_priority_is_held_only_while_a_thread_is_stopped(
    live, threads_bin, launcher, own_policy
):
    # GIVEN a thread that cannot reach its stop (its child is in vfork), so stackdump waits
    # out --timeout-ms inside that thread's stop window, and 300 threads that make a report
    # larger than a pipe; stackdump started with its own policy, or with SCHED_IDLE
    with Target(threads_bin("O2"), {"vfork": 1, "read": 300}).wait_ready() as target:
        read_end, write_end = os.pipe()
        dumper = subprocess.Popen(
            [*launcher, *STACKDUMP, "-p", str(target.pid), "--timeout-ms", "2000"],
            stdout=write_end,
            stderr=subprocess.DEVNULL,
        )
        os.close(write_end)
        try:
            # WHEN it waits inside the window, THEN it runs SCHED_FIFO
            deadline = time.monotonic() + DEADLINE_S
            while _policy(dumper.pid) != os.SCHED_FIFO:
                assert dumper.poll() is None and time.monotonic() < deadline, "never FIFO"
                os.sched_yield()
            # ... and once capture is over (blocked writing its report), the policy it was
            # started with again (not SCHED_OTHER when the user chose another)
            blocked = False
            while not blocked:
                assert time.monotonic() < deadline, "never blocked in write"
                with open(f"/proc/{dumper.pid}/syscall") as f:
                    # write(), or poll() while the pipe is full (output.py)
                    blocked = f.read().split()[0] in ("1", "7")
            assert _policy(dumper.pid) == own_policy
        finally:
            dumper.kill()
            dumper.wait()
            os.close(read_end)
        assert_untouched(target.pid)


def test_a_dump_started_real_time_keeps_its_priority_in_the_stop_window(live, threads_bin):
    # GIVEN stackdump started SCHED_FIFO at priority 10 (`chrt --fifo 10`), waiting out
    # --timeout-ms in the stop window of a thread that cannot stop (its child is in vfork)
    with Target(threads_bin("O2"), {"vfork": 1}).wait_ready() as target:
        dumper = subprocess.Popen(
            ["chrt", "--fifo", "10", *STACKDUMP, "-p", str(target.pid), "--timeout-ms", "2000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # WHEN it sleeps in the window waiting for that stop (rt_sigtimedwait)
            deadline = time.monotonic() + DEADLINE_S
            waiting = False
            while not waiting:
                assert dumper.poll() is None and time.monotonic() < deadline, "never waited"
                with open(f"/proc/{dumper.pid}/syscall") as f:
                    waiting = f.read().split()[0] == "128"
            # THEN it is still FIFO at 10: the window's FIFO 1 would have lowered it
            assert _policy(dumper.pid) == os.SCHED_FIFO
            assert os.sched_getparam(dumper.pid).sched_priority == 10
            assert dumper.wait(timeout=DEADLINE_S) in (0, 1)
        finally:
            dumper.kill()
            dumper.wait()
        assert_untouched(target.pid)


def test_a_seize_refused_by_an_exited_thread_is_not_a_permission_error(zombie_leader):
    """The kernel refuses PTRACE_SEIZE of a thread that has exited (a zombie) with EPERM, as
    it refuses one it does not permit: the first refusal of a capture used to be taken for
    the second, and a profile whose target was killed between two samples ended with "not
    permitted to trace" (exit 3) and lost its samples. A zombie main thread, asked for
    directly: THREAD_EXITED, and the workers are untouched."""
    from stackdump.capture.ptrace import Tracer
    from stackdump.capture.remote import RemoteMemory, StackCopier
    from stackdump.types import ThreadStatus

    target = zombie_leader
    worker = target.tids["worker"][0]
    maps = proc.read_maps(target.pid, worker)
    copier = StackCopier(RemoteMemory(worker), maps, 65536, 128)
    with Tracer(target.pid, copier, 100) as tracer:
        thread = tracer.capture(target.pid, "leader")
    assert thread.status is ThreadStatus.THREAD_EXITED, thread
    assert_untouched(target.pid)
