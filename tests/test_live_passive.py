"""Passive capture (issue 5): threads blocked in calls that a ptrace stop interrupts with EINTR
are never stopped, and their stacks are still complete.

tests/targets/eintr.c counts, per role, the calls that returned and those that failed with
EINTR; every call blocks for hours, so any return is a disturbance we caused.
"""

from __future__ import annotations

import ctypes
import os
import re

import pytest
from conftest import VARIANTS
from helpers import (
    Target,
    assert_key_order,
    assert_untouched,
    compile_target,
    parse_report,
    read_syscall_line,
    run_stackdump,
)

# Role -> (its function in the target, whether a ptrace stop makes its call fail with EINTR).
EINTR_ROLES = {
    "epoll": ("wait_epoll", True),
    "epoll_pwait": ("wait_epoll_pwait", True),
    "semop": ("wait_semop", True),
    "sigtimedwait": ("wait_sigtimedwait", True),
    "recv": ("wait_recv", True),
    "accept": ("wait_accept", False),
    "read": ("wait_read", False),
    "poll": ("wait_poll", False),
    "futex": ("wait_futex", False),
    "nanosleep": ("wait_nanosleep", False),
}
# Socket calls fail with EINTR only when the socket has a timeout, which cannot be seen from
# outside: auto leaves them all unstopped.
PASSIVE_IN_AUTO = {role for role, (_, prone) in EINTR_ROLES.items() if prone} | {"accept"}
DUMPS = int(os.environ.get("STACKDUMP_EINTR_DUMPS", "200"))


class EintrTarget(Target):
    """eintr.c: removes its System V semaphore set at teardown (SIGKILL cannot)."""

    def kill(self) -> None:
        semid = None
        if self.alive():
            try:
                semid = self.status()["semid"]
            except (RuntimeError, TimeoutError, KeyError, OSError):
                semid = None
        super().kill()
        if semid is not None:
            ctypes.CDLL(None).semctl(semid, 0, 0)  # IPC_RMID


@pytest.fixture(scope="module")
def eintr_bin(build_dir):
    def build(variant: str):
        return compile_target("eintr.c", build_dir, f"eintr-{variant}", VARIANTS[variant])

    return build


def _start(binary) -> EintrTarget:
    target = EintrTarget(binary, {role: 1 for role in EINTR_ROLES})
    try:
        target.wait_ready()
    except BaseException:
        target.kill()
        raise
    return target


def _assert_complete(report, target: Target) -> None:
    for role, (function, _) in EINTR_ROLES.items():
        section = report.thread(target.tid(role))
        assert section.status == "ok", (role, section.keys)
        functions = section.functions()
        for caller in (function, "role_main", "start_thread"):
            assert caller in functions, (role, caller, section.frames)


@pytest.mark.parametrize("variant", ["O2", "nofp"])
def test_default_capture_never_interrupts_a_blocked_call(live, eintr_bin, variant):
    dumps = DUMPS if variant == "O2" else max(1, DUMPS // 10)
    with _start(eintr_bin(variant)) as target:
        for _ in range(dumps):
            result = run_stackdump("-p", str(target.pid))
            assert result.returncode == 0, result.stderr
            report = parse_report(result.stdout)
            assert report.header["capture"] == "auto"
            _assert_complete(report, target)
            for role in EINTR_ROLES:
                section = report.thread(target.tid(role))
                assert_key_order(section)
                passive = section.keys["capture_method"] == "passive_syscall"
                assert passive == (role in PASSIVE_IN_AUTO), (role, section.keys)
                if passive:
                    assert section.keys["pause_us"] == "0"
                    assert "fp_status" not in section.keys
        status = target.status()
        assert_untouched(target.pid)
    disturbed = {k: v for k, v in status.items() if k != "semid" and v}
    assert disturbed == {}, f"after {dumps} dumps: {disturbed}"


def test_ptrace_capture_does_interrupt_them(live, eintr_bin):
    """Proves the test above can fail: stopping these threads makes their calls fail."""
    with _start(eintr_bin("O2")) as target:
        result = run_stackdump("-p", str(target.pid), "--capture", "ptrace")
        assert result.returncode == 0, result.stderr
        report = parse_report(result.stdout)
        assert report.header["capture"] == "ptrace"
        assert report.summary["remote_signal_attempts"] == len(EINTR_ROLES) + 1
        status = target.status()
    for role, (_, eintr_prone) in EINTR_ROLES.items():
        assert (status[f"eintr_{role}"] > 0) == eintr_prone, (role, status)


def test_passive_capture_stops_no_thread_and_skips_running_ones(live, threads_bin):
    roles = {"spin": 1, "read": 1, "epoll": 1, "cond": 1}
    with Target(threads_bin("O2"), roles).wait_ready() as target:
        before = read_syscall_line(target.pid, target.tid("read"))
        result = run_stackdump("-p", str(target.pid), "--capture", "passive")
        assert result.returncode == 0, result.stderr
        report = parse_report(result.stdout)
        assert report.summary["remote_signal_attempts"] == 0
        assert report.stats["passive"] == len(roles)  # blocked roles and main
        spin = report.thread(target.tid("spin"))
        assert spin.status == "skipped_running"
        assert spin.frames == []
        for role in ("read", "epoll", "cond"):
            section = report.thread(target.tid(role))
            assert section.keys["capture_method"] == "passive_syscall", section.keys
            assert section.keys["unwind_status"] == "end_of_stack", section.keys
        assert report.summary["skipped"] == 1
        assert read_syscall_line(target.pid, target.tid("read")) == before
        assert target.status()["read_returned"] == 0


def test_skip_blocking_syscalls_keeps_its_meaning_in_every_mode(live, threads_bin):
    with Target(threads_bin("O2"), {"epoll": 1, "cond": 1}).wait_ready() as target:
        for mode in ("auto", "ptrace", "passive"):
            result = run_stackdump(
                "-p", str(target.pid), "--capture", mode, "--skip-blocking-syscalls"
            )
            report = parse_report(result.stdout)
            for role, name in (("epoll", "epoll_wait"), ("cond", "futex")):
                section = report.thread(target.tid(role))
                assert section.status == "skipped_blocking_syscall", (mode, section.keys)
                assert section.keys["syscall"] == name


PASSIVE_ROLES = {"read": 1, "cond": 1, "sleep": 1, "epoll": 1, "poll": 1, "accept": 1}


def _sp_pc(line):
    """A call interrupted by a stop may come back as restart_syscall (219) at the same place:
    only sp and pc say whether the thread moved."""
    return line.split()[-2:] if line else None


def _pcs(section) -> list:
    return [re.match(r"0x[0-9a-f]+", frame).group(0) for frame in section.frames]


@pytest.mark.parametrize("variant", ["O0", "O2", "nofp", "nocfi"])
def test_passive_unwind_matches_ptrace_unwind(live, threads_bin, variant):
    """Differential: the same blocked threads, stopped (all registers) and not (pc and sp,
    frame pointer recovered from the stack), give the same frames."""
    with Target(threads_bin(variant), PASSIVE_ROLES).wait_ready() as target:
        lines = {
            tid: read_syscall_line(target.pid, tid) for tids in target.tids.values() for tid in tids
        }
        stopped = parse_report(
            run_stackdump("-p", str(target.pid), "-a", "--capture", "ptrace").stdout
        )
        passive = parse_report(
            run_stackdump("-p", str(target.pid), "-a", "--capture", "passive").stdout
        )
        compared = 0
        for tid, line in lines.items():
            if _sp_pc(read_syscall_line(target.pid, tid)) != _sp_pc(line):
                continue  # the thread moved between the dumps: nothing to compare
            a, b = stopped.thread(tid), passive.thread(tid)
            assert b.keys["capture_method"] == "passive_syscall"
            assert _pcs(b) == _pcs(a), (tid, a.frames, b.frames)
            assert b.keys["unwind_status"] == "end_of_stack", b.keys
            compared += 1
        assert compared >= len(PASSIVE_ROLES)


def test_a_thread_that_keeps_waking_gets_its_whole_budget(live, threads_bin):
    """Copied in place only when provably still: a thread that sleeps 10 us at a time (it
    wakes every ~60 us, faster than a checked copy takes) is tried again and again until
    --timeout-ms is spent, then reported as skipped_running with what happened; never as
    `timeout`, a limit it did not reach."""
    with Target(threads_bin("O2"), {"nap": 1}).wait_ready() as target:
        gave_up = 0
        for _ in range(5):
            result = run_stackdump(
                "-p", str(target.pid), "--capture", "passive", "--timeout-ms", "50"
            )
            section = parse_report(result.stdout).thread(target.tid("nap"))
            assert section.status in ("ok", "skipped_running"), section.keys
            assert result.returncode == 0, result.stderr  # passive: skipped as asked
            if section.status == "ok":
                continue
            gave_up += 1
            error = section.keys["error"]
            spent, looks = re.search(r"in (\d+) ms: running at \d+ of (\d+) looks", error).groups()
            assert int(spent) >= 50 and int(looks) > 5, error
        assert gave_up, "the budget was never exercised"
        assert_untouched(target.pid)


@pytest.mark.parametrize("variant", ["O2", "nofp"])
def test_threads_copied_in_place_from_remembered_walks_equal_each_walked(
    live, threads_bin, variant
):
    """Issue 31: threads copied in place (pc and sp alone) that park alike are unwound once
    and the others checked against what that walk read (unwind/traces.py), as coroutines
    are; every thread's report is the one walking each gives. Without frame pointers
    (nofp) the walk also recovers them from the stack, which the check must cover too."""
    from stackdump import api
    from stackdump.engine import DumpOptions
    from stackdump.types import AnalysisOptions, CaptureMode, CaptureOptions

    roles = {"epoll": 4, "poll": 3, "read": 3, "cond": 2}
    with Target(threads_bin(variant), roles).wait_ready() as target:
        capture = CaptureOptions(pid=target.pid, capture_mode=CaptureMode.PASSIVE)
        reports = [
            api.dump(
                api.Process(target.pid), DumpOptions(capture, AnalysisOptions(remember_unwinds=r))
            )
            for r in (True, False)
        ]
        remembered, walked = (
            {
                t.tid: (t.status, t.capture_method, t.unwind_status, t.error, t.frames)
                for t in report.threads
            }
            for report in reports
        )
        assert remembered == walked
        workers = [tid for tids in target.tids.values() for tid in tids if tid != target.pid]
        assert len(workers) == sum(roles.values())
        for tid in workers:
            status, method, unwind_status, _, frames = remembered[tid]
            assert (status.value, method.value, unwind_status.value) == (
                "ok",
                "passive_syscall",
                "end_of_stack",
            ), tid
            assert any(f.function == "start_thread" for f in frames), tid
