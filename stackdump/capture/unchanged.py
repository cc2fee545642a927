"""Which threads have not run since the last sample, so that sampling counts their stacks
again without stopping or reading them (issue 31).

A thread that has not been on a CPU since it was captured has the same registers and the
same stack: nothing but the thread itself writes its return addresses. The kernel says
whether it has run: `/proc/PID/task/TID/schedstat` holds the time it has spent on a CPU
(nanoseconds, brought up to date each time it leaves one) and how many times it has been put
on one (`pcount`, counted as it arrives). A sleeping thread (state S, D or I) with the same
state, start time (a new thread that took a dead one's TID has another), run time and count
as when it was kept has not run since. Its name is compared too: another thread of the
process can rename it (pthread_setname_np writes its comm) without waking it. A running
thread's run time is only brought up to date at scheduler ticks, so a thread in state R is
never counted again. Nor is one that waits on a futex whose words have changed since its
capture read them (`ThreadContext.futex`: a mutex's owner): the unlock that hands a mutex to
one waiter wakes that one only, and the others sleep on, their owner now another thread.
Those words are read again for every such thread as each sample starts, in one batch.

The signature kept is read after the capture, once the thread sleeps again: a ptrace stop
wakes a sleeping thread, which on release runs just long enough to restart its system call.
It is kept only when the thread is back in a system call (or fault) at the very pc and sp it
was captured at and its stack holds the very bytes copied then: being back at that pc and sp
alone does not prove that it only restarted, as it may have returned, run, and blocked again
there through other callers (a function called from two places at one depth, a library
unloaded and another loaded in its place). The signature is read first: a thread that runs
after it is captured afresh at the next sample, whatever the checks after it saw. Anything
else, and the next sample captures it afresh. At a recall the schedstat line is read before
the stat line: a thread whose line moved has run, and its stat is not read. One whose line
held had not run when it was read, which is what counting it again claims. A thread
that could not be counted again at `_BUSY` samples in a row (it runs at each) is kept only
at every `_RETRY`th sample: the reads and the comparison a keep makes are lost on it. The
three files are read through the series' kept files (`proc.KeptFiles`): opened once, read
again with pread.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from stackdump.proc import LINE, PROC, KeptFiles, parse_syscall
from stackdump.types import Registers, ThreadSnapshot, ThreadStatus

# A thread found running or run again at this many samples in a row is busy: it is kept (its
# files read again and its stack compared after its capture) only every `_RETRY`th sample,
# as that work is lost on a thread that runs at every sample; one that has settled down is
# kept again within `_RETRY` samples. Capturing a thread afresh is never wrong, only dearer.
_BUSY = 3
_RETRY = 16
# Sleeping states a thread stays in until something wakes it and it runs.
_ASLEEP = frozenset("SDI")
_FILES = ("stat", "schedstat", "syscall")


# What changes whenever a thread runs (see the module docstring), as the kernel wrote it:
# stat's state and start time (clock ticks after boot: tells a thread from one that took its
# TID), the whole schedstat line (run time, time waited for a CPU, times put on one), and
# stat's name field, which a sibling may change while the thread sleeps. Compared as bytes,
# not parsed: a sample compares one per sleeping thread. The whole line is stricter than run
# time and count alone: a change in the time waited for a CPU at most has a thread that did
# not run captured again.
Signature = Tuple[bytes, bytes, bytes, bytes]
Read = Callable[[int, int], bytes]  # (address, size) -> what can be read there now
# [(address, size), ...] -> what `Read` gives for each, in as few system calls as it can
ReadRanges = Callable[[Sequence[Tuple[int, int]]], List[bytes]]
_ASLEEP_BYTES = frozenset(state.encode() for state in _ASLEEP)


def parse_signature(stat: bytes, schedstat: bytes) -> Optional[Signature]:
    """From the text of a thread's `stat` and `schedstat`; None when either is not whole,
    or schedstat counts nothing (a kernel that does not count writes "0 0 0" for every
    thread, which would make every thread look as if it had not run since). `stat`'s name
    field may hold ')' and spaces: fields are counted after the last ')'."""
    name_end = stat.rfind(b") ")
    fields = stat[name_end + 2 :].split(b" ", 20)
    if name_end < 0 or len(fields) < 21:
        return None
    if not schedstat.endswith(b"\n") or schedstat.endswith(b" 0\n"):
        return None
    if schedstat.count(b" ") != 2:
        return None
    return fields[0], fields[19], schedstat, stat[:name_end]


class UnchangedThreads:
    """Across the samples of one profile: each thread's last capture and its signature then.
    `recall(tid)` is asked before a thread is captured; `keep(tid, thread)` after. `kept`:
    the series' files to read through; closing this (context manager) closes those of its
    threads."""

    def __init__(self, pid: int, kept: KeptFiles) -> None:
        self.pid = pid
        self.reused = 0  # thread-samples counted from an earlier capture
        self._kept_files = kept
        self._paths: Dict[int, Tuple[str, ...]] = {}
        self._kept: Dict[int, Tuple[Signature, ThreadSnapshot]] = {}
        self._samples = 0
        # Samples in a row at which a thread could not be counted again (`_BUSY`).
        self._missed: Dict[int, int] = {}

    def __enter__(self) -> UnchangedThreads:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for tid in list(self._paths):
            self._forget(tid)

    def start(self, tids, read_ranges: ReadRanges) -> None:
        """A sample begins with these threads: forget every other (exited) one, and every
        kept one whose futex words changed (module docstring; `read_ranges`: the process's
        memory now)."""
        self._samples += 1
        current = set(tids)
        for tid in [t for t in self._paths if t not in current]:
            self._forget(tid)
        for tid in [t for t in self._kept if t not in current]:
            del self._kept[tid]
        for tid in [t for t in self._missed if t not in current]:
            del self._missed[tid]
        self._drop_moved_futexes(read_ranges)

    def _drop_moved_futexes(self, read_ranges: ReadRanges) -> None:
        waiting = []
        for tid, (_signature, thread) in self._kept.items():
            context = thread.context
            if context is not None and context.futex is not None:
                waiting.append((tid, context.futex))
        if not waiting:
            return
        now = read_ranges([(address, len(words)) for _tid, (address, words) in waiting])
        for (tid, (_address, words)), words_now in zip(waiting, now):
            if words_now != words:
                del self._kept[tid]

    def recall(self, tid: int) -> Optional[ThreadSnapshot]:
        """The thread as last kept, when it has provably not run since; else None."""
        kept = self._kept.get(tid)
        if kept is None:
            return None
        # schedstat first: a thread that ran (most often the one that ran last time too)
        # is told by it alone, without its stat.
        schedstat = self._kept_files.read(self._paths[tid][1], LINE)
        now = self._read(tid, False, schedstat) if schedstat == kept[0][2] else None
        if now is None or now[0] != kept[0]:
            del self._kept[tid]
            self._missed[tid] = self._missed.get(tid, 0) + 1
            return None
        self._missed.pop(tid, None)
        self.reused += 1
        return kept[1]

    def keep(self, tid: int, thread: ThreadSnapshot, copied: ThreadSnapshot, read: Read) -> None:
        """A fresh capture of `tid`, settled (`thread`; `copied` is it as captured, with its
        stack copy): kept for the next sample when the thread sleeps again where it was
        captured, on the stack it was copied with (`read(address, size)`: its memory now)."""
        self._kept.pop(tid, None)
        regs = thread.regs
        if thread.status is not ThreadStatus.OK or thread.unwound is None or regs is None:
            return  # only settled threads: no stack copy is held
        if not copied.stack:
            return
        if self._missed.get(tid, 0) >= _BUSY and self._samples % _RETRY:
            return  # busy (see `_BUSY`)
        if not self._kept_now(tid, thread, regs, copied, read):
            self._missed[tid] = self._missed.get(tid, 0) + 1

    def _kept_now(
        self, tid: int, thread: ThreadSnapshot, regs: Registers, copied: ThreadSnapshot, read: Read
    ) -> bool:
        """`keep`'s checks, and the thread kept when they hold."""
        now = self._read(tid, True)
        if now is None:
            return False
        signature, call = now
        if signature[0] not in _ASLEEP_BYTES or call is None:
            return False
        if (call.sp, call.pc) != (regs.sp, regs.pc):
            return False
        if read(copied.stack_base, len(copied.stack)) != copied.stack:
            return False  # it ran and came back through other callers: module docstring
        self._kept[tid] = (signature, thread)
        return True

    def mark(self) -> int:
        """Where a capture begins, for `take_back`."""
        return self.reused

    def take_back(self, tids: Iterable[int], mark: int) -> None:
        """The capture begun at `mark` is taken again: forget what it kept of `tids` (the
        threads it captured) and its recalls (each is counted again)."""
        for tid in tids:
            self._kept.pop(tid, None)
        self.reused = mark

    def _read(
        self, tid: int, with_call: bool, schedstat: Optional[bytes] = None
    ) -> Optional[Tuple[Signature, object]]:
        """(signature, the syscall file's state when `with_call`, else None) of a thread now:
        whether it has run since is in the first two files alone (`schedstat`: that file
        as just read, when it was)."""
        paths = self._paths.get(tid)
        if paths is None:
            task = f"{PROC}/{self.pid}/task/{tid}"
            paths = self._paths[tid] = tuple(f"{task}/{name}" for name in _FILES)
        read = self._kept_files.read
        stat = read(paths[0], LINE)
        if schedstat is None:
            schedstat = read(paths[1], LINE)
        if stat is None or schedstat is None:
            return None
        signature = parse_signature(stat, schedstat)
        call = None
        if with_call:
            text = read(paths[2], LINE)
            call = parse_syscall(text.decode("ascii", "replace")) if text is not None else None
        return (signature, call) if signature is not None else None

    def _forget(self, tid: int) -> None:
        for path in self._paths.pop(tid, ()):
            self._kept_files.forget(path)
        self._kept.pop(tid, None)
        self._missed.pop(tid, None)
