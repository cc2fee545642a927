"""Passive capture: copy a blocked thread's stack without ever stopping it.

A thread blocked in a system call has its user pc and sp in /proc/<pid>/task/<tid>/syscall.
Its stack is copied with process_vm_readv while it stays blocked, and the copy is kept only
when the thread provably did not run in between: the syscall state (number, arguments, sp,
pc) read before the copy is the one read after it, and so are its CPU time and the number
of times it was put on a CPU (/proc/<pid>/task/<tid>/schedstat; on a kernel without it, its
voluntary and involuntary context-switch counts), read just after the first and just before
the second. A thread that ran would have had to be put on a CPU, which moves the count (and
switched out again to look blocked, which moves the others); a thread still running reads
as "running". The kernel validates its own
/proc/<pid>/task/<tid>/syscall read the same way (task_current_syscall).

Only pc and sp are known afterwards; the unwinder recovers what else it needs from the copy.
"""

from __future__ import annotations

import time
from typing import Optional

from stackdump import proc
from stackdump.arch import host
from stackdump.capture.remote import StackCopier
from stackdump.types import Registers, SyscallState, ThreadSnapshot, ThreadStatus

_HOST = host()

# Between tries at a thread that keeps waking up: long enough for it to block again (an
# event loop between two epoll_waits), short enough to catch it when it does.
RETRY_S = 0.0002


def _runs(pid: int, tid: int, kept: Optional[proc.KeptFiles]):
    """What moves whenever the thread is given a CPU (see the module docstring); None when
    it has gone. schedstat is a short line: the status file's counts cost three times as
    much to read, twice a try, and an event loop under load takes several tries."""
    return proc.read_schedstat(pid, tid, kept) or proc.read_context_switches(pid, tid)


class PassiveCapturer:
    """Copies blocked threads of one process in place."""

    def __init__(
        self,
        pid: int,
        copier: StackCopier,
        timeout_ms: int,
        kept: Optional[proc.KeptFiles] = None,
    ):
        """`kept`: the files of a series, to read each thread's through."""
        self.pid = pid
        self._kept = kept
        self._copier = copier
        self._timeout_ns = timeout_ms * 1_000_000
        # The main thread's own stack ends with [stack]; another thread's thread pointer,
        # which marks its end, is not known without a stop.
        main = copier.main_stack
        self._main_top = main.end if main is not None else 0

    def capture(self, tid: int, name: str, seen: Optional[SyscallState] = None) -> ThreadSnapshot:
        """`seen`: the thread's /proc syscall state as just read by the caller, used as the
        first try's "before" (the switch counts are read after it, so a thread that ran in
        between and blocked again is still caught by the counts or the "after" read).

        A thread seen running, or that ran during a copy, is looked at again until its
        --timeout-ms budget is spent; then it is `skipped_running`, with what was seen."""
        started = time.perf_counter_ns()
        deadline = started + self._timeout_ns
        running = raced = 0
        tries = 0
        kept = self._kept
        while tries == 0 or time.perf_counter_ns() < deadline:
            if tries:
                time.sleep(RETRY_S)
            tries += 1
            state = (
                seen if tries == 1 and seen is not None else proc.read_syscall(self.pid, tid, kept)
            )
            before = _runs(self.pid, tid, kept)
            if before is None:
                return ThreadSnapshot(tid=tid, name=name, status=ThreadStatus.THREAD_EXITED)
            if state is None or state.running:
                running += 1
                continue
            stack_map, start, copied = self._copier.copy(tid, state.sp)
            after_state = proc.read_syscall(self.pid, tid, kept)
            after = _runs(self.pid, tid, kept)
            if after is None:
                return ThreadSnapshot(tid=tid, name=name, status=ThreadStatus.THREAD_EXITED)
            if after_state != state or after != before:
                raced += 1
                continue
            return ThreadSnapshot(
                tid=tid,
                name=name,
                status=ThreadStatus.OK,
                regs=Registers.of({_HOST.pc: state.pc, _HOST.sp: state.sp}, _HOST),
                stack_map=stack_map,
                stack_base=start,
                stack=self._copier.data(copied),
                syscall=state,
                passive=True,
                stack_top=self._main_top if tid == self.pid else 0,
            )
        spent_ms = (time.perf_counter_ns() - started) // 1_000_000
        return ThreadSnapshot(
            tid=tid,
            name=name,
            status=ThreadStatus.SKIPPED_RUNNING,
            error=f"not stopped, to spare its system call EINTR, and never still long enough "
            f"to copy in {spent_ms} ms: running at {running} of {tries} looks, and woke during "
            f"the other {raced} copies",
        )
