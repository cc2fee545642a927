"""Passive capture: copy a blocked thread's stack without ever stopping it.

A thread blocked in a system call has its user pc and sp in /proc/<pid>/task/<tid>/syscall.
Its stack is copied with process_vm_readv while it stays blocked, and the copy is kept only
when the thread provably did not run in between: the syscall line (number, arguments, sp,
pc) is the same before and after, and so are its voluntary and involuntary context-switch
counts. A thread that ran would have had to be switched out again to look blocked, which
moves one of the counts; a thread still running reads as "running". The kernel validates its
own /proc/<pid>/task/<tid>/syscall read the same way (task_current_syscall).

Only pc and sp are known afterwards; the unwinder recovers what else it needs from the copy.
"""

from __future__ import annotations

import bisect
import ctypes
import time
from typing import Optional, Sequence

from stackdump import proc
from stackdump.arch import NUM_DWARF_REGS, RIP, RSP
from stackdump.remote import RemoteMemory
from stackdump.types import MemoryMap, Registers, ThreadSnapshot, ThreadStatus

# A blocked thread that keeps waking up gets this many tries within its timeout.
MAX_ATTEMPTS = 5


class PassiveCapturer:
    """Copies blocked threads of one process in place. `close()` when done."""

    def __init__(self, pid: int, maps: Sequence[MemoryMap], timeout_ms: int, stack_bytes: int):
        self.pid = pid
        self._maps = sorted(maps, key=lambda m: m.start)
        self._starts = [m.start for m in self._maps]
        self._timeout_ns = timeout_ms * 1_000_000
        self._stack_bytes = stack_bytes
        self._buffer = ctypes.create_string_buffer(stack_bytes)
        self._memory = RemoteMemory(pid)

    def close(self) -> None:
        self._memory.close()

    def _stack_map(self, sp: int) -> Optional[MemoryMap]:
        i = bisect.bisect_right(self._starts, sp) - 1
        if i >= 0 and self._maps[i].contains(sp) and self._maps[i].readable:
            return self._maps[i]
        return None

    def capture(self, tid: int, name: str) -> ThreadSnapshot:
        deadline = time.perf_counter_ns() + self._timeout_ns
        reason = "no attempt"
        tries = 0
        while tries < MAX_ATTEMPTS and (tries == 0 or time.perf_counter_ns() < deadline):
            tries += 1
            before = proc.read_context_switches(self.pid, tid)
            line = proc.read_syscall_text(self.pid, tid)
            if before is None or line is None:
                return ThreadSnapshot(tid=tid, name=name, status=ThreadStatus.THREAD_EXITED)
            state = proc.parse_syscall(line)
            if state is None or state.running:
                reason = "it was running"
                continue
            stack_map = self._stack_map(state.sp)
            copied = 0
            if stack_map is not None:
                size = min(stack_map.end - state.sp, self._stack_bytes)
                copied = self._memory.copy_into(tid, self._buffer, state.sp, size)
            after_line = proc.read_syscall_text(self.pid, tid)
            after = proc.read_context_switches(self.pid, tid)
            if after_line is None or after is None:
                return ThreadSnapshot(tid=tid, name=name, status=ThreadStatus.THREAD_EXITED)
            if after_line != line or after != before:
                reason = "it ran while its stack was copied"
                continue
            values = [0] * NUM_DWARF_REGS
            values[RIP], values[RSP] = state.pc, state.sp
            return ThreadSnapshot(
                tid=tid,
                name=name,
                status=ThreadStatus.OK,
                regs=Registers(tuple(values)),
                stack_map=stack_map,
                stack_base=state.sp,
                stack=ctypes.string_at(self._buffer, copied) if copied > 0 else b"",
                syscall=state,
                passive=True,
            )
        return ThreadSnapshot(
            tid=tid,
            name=name,
            status=ThreadStatus.TIMEOUT,
            error=f"not stopped, to spare its system call EINTR, and no consistent copy in "
            f"{tries} tries: {reason}",
        )
