"""Hung or slow (`--watch`): whether each thread and coroutine made progress over a few
captures, and the class that says how (docs/FORMAT.md "Watching for progress"). Pure: the
captures' reports and the CPU time /proc showed at each are the input.

A thread's *place* in a capture is its stack (functions, inlined ones included) and, when it
was blocked, the call and what it waited on (a futex's address, a descriptor). Over the
captures it was in, the last ones at the same place are its *still* run; the CPU it used over
that run is the difference of its `schedstat` run time. The classes, in the order the report
prints them:

- `deadlocked`: in a cycle of mutex waits (locks.py) in every capture of its still run;
- `blocked`: still, off CPU, in a wait that names something held or slow: a mutex or
  read-write lock (the holder named where the mutex says), a write, sync or file lock, an
  uninterruptible sleep;
- `spinning`: on CPU most of its still run, in the same stack: busy, no progress visible;
- `waiting`: still, off CPU, waiting for work, an event or time (a condition variable,
  epoll, a read, a sleep): an idle worker;
- `running`: it moved: its stack changed between captures (or it was in only one).

`stuck_threads` counts the first three.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from stackdump.records import frozen
from stackdump.types import Report, ReportHeader, ThreadReport, ThreadStatus
from stackdump.views import stack_labels

DEADLOCKED, BLOCKED, SPINNING, WAITING, RUNNING = (
    "deadlocked",
    "blocked",
    "spinning",
    "waiting",
    "running",
)
CLASSES = (DEADLOCKED, BLOCKED, SPINNING, WAITING, RUNNING)  # the order they are printed in
STUCK = (DEADLOCKED, BLOCKED, SPINNING)

# Share of its still run a thread must have spent on a CPU to count as busy. A spinning
# thread is near 1; an idle worker woken now and then, near 0.
BUSY_SHARE = 0.2
# Calls that do not return while something outside the thread is held or slow: a write that
# meets back-pressure, a sync, a connect, a file lock.
_BLOCKING_CALLS = frozenset(
    {
        "write",
        "writev",
        "pwrite64",
        "pwritev",
        "sendto",
        "sendmsg",
        "sendmmsg",
        "connect",
        "fsync",
        "fdatasync",
        "sync_file_range",
        "flock",
        "fcntl",
        "msync",
        "io_destroy",
    }
)
# A lock acquisition in a frame's name: pthread's and C++'s mutexes and read-write locks,
# brpc's bthread mutex. (A coroutine's runtime may also say so: `Watcher.lock_wait`.)
_LOCKING = re.compile(r"(?i)(mutex|rwlock|spinlock).*lock|lll_lock_wait")
_UNLOCKING = re.compile(r"(?i)unlock")
_LOCK_DEPTH = 8  # innermost frames looked at for a lock acquisition


@frozen
class Seen:
    """One thread (or coroutine) in one capture."""

    offset_ns: int  # when that capture began, after the first
    stack: Tuple[str, ...]  # its functions, innermost first
    call: Optional[str]  # the system call it was blocked in
    wait_object: Optional[int]
    state: str  # /proc's state letter ("" for a coroutine)
    run: Optional[Tuple[int, int]]  # (ns on a CPU, times put on one), as the capture began
    in_cycle: bool  # in a deadlock cycle
    lock_wait: bool  # waiting to take a lock (a mutex wait, or a lock function on its stack)

    def place(self) -> tuple:
        return (self.stack, self.call, self.wait_object)


@frozen
class ThreadProgress:
    """What a thread (or coroutine) did over the watch, and its class."""

    report: ThreadReport  # as in the last capture it was in
    progress: str  # one of CLASSES
    samples: int  # captures it was in
    still: int  # of which the last ones at its last place
    still_ns: int  # from the first capture of that run to the last
    cpu_ns: Optional[int]  # CPU used over that run (None: unknown, or a coroutine)
    # Times it was put on a CPU over that run, our own stops' wake-ups included.
    wakeups: Optional[int]
    changes: int  # consecutive captures whose stacks differ
    waits_on: Optional[str] = None  # "futex 0x...", "fd N": what its blocked call names
    waited_s: Optional[int] = None  # a coroutine: how long its runtime says it has waited

    @property
    def cpu_ms(self) -> Optional[int]:
        return None if self.cpu_ns is None else self.cpu_ns // 1_000_000


@frozen
class Watch:
    header: ReportHeader  # of the last capture
    interval_ms: int
    samples_taken: int
    started_ns: int  # wall clock of the first capture
    duration_ns: int
    threads: Tuple[ThreadProgress, ...]  # the last capture's order; those gone by then last
    coroutines: Optional[Tuple[ThreadProgress, ...]]  # None: --coroutines not asked
    last: Report  # the last capture, whole
    interrupted: bool = False
    ended_early: str = ""
    warnings: Tuple[str, ...] = ()

    @property
    def deadlocks(self) -> Tuple[Tuple[int, ...], ...]:
        return self.last.deadlocks

    def counts(self, coroutines: bool = False) -> Dict[str, int]:
        out = {name: 0 for name in CLASSES}
        for t in (self.coroutines or ()) if coroutines else self.threads:
            out[t.progress] += 1
        return out

    @property
    def stuck_threads(self) -> int:
        counts = self.counts()
        return sum(counts[name] for name in STUCK)


RuntimeKeys = Sequence[Tuple[str, str]]


@dataclass
class Watcher:
    """Collects the captures of a watch (a `sampling.captures` sink). `read_run_times()` gives,
    before each capture, each thread's (ns on a CPU, times put on one) from /proc; the
    runtimes say, from a coroutine's keys, whether it waits for a lock and how long it has
    waited (`runtimes.waits_for_lock`, `runtimes.waited_s`)."""

    read_run_times: Callable[[], Dict[int, Tuple[int, int]]]
    lock_wait: Callable[[RuntimeKeys], bool] = lambda keys: False
    waited_s: Callable[[RuntimeKeys], Optional[int]] = lambda keys: None
    _run: Dict[int, Tuple[int, int]] = field(default_factory=dict)
    _seen: Dict[tuple, List[Seen]] = field(default_factory=dict)
    _last: Dict[tuple, ThreadReport] = field(default_factory=dict)
    _report: Optional[Report] = None
    _warnings: List[str] = field(default_factory=list)
    # One tuple per distinct stack, however many threads, coroutines and captures share it
    # (100,000 coroutines parked alike, six captures: one tuple, not 600,000).
    _stacks: Dict[Tuple[str, ...], Tuple[str, ...]] = field(default_factory=dict)
    _labels: Dict[int, Tuple[str, ...]] = field(default_factory=dict)  # by id(frames), per add

    def before(self, index: int) -> None:
        self._run = self.read_run_times()

    def add(self, index: int, report: Report, offset_ns: int) -> None:
        self._report = report
        self._warnings.extend(w for w in report.warnings if w not in self._warnings)
        cycles = {tid for cycle in report.deadlocks for tid in cycle}
        for t in report.threads:
            if t.status is ThreadStatus.THREAD_EXITED:
                continue
            self._note(("thread", t.tid), t, offset_ns, self._run.get(t.tid), t.tid in cycles)
        for c in report.coroutines or ():
            self._note(("coroutine", c.coroutine, _coroutine_id(c)), c, offset_ns, None, False)
        self._labels.clear()  # ids are only good while this report's frames live

    def _stack(self, t: ThreadReport) -> Tuple[str, ...]:
        """Its frames' labels: once per frames tuple (coroutines parked alike share one)."""
        stack = self._labels.get(id(t.frames))
        if stack is None:
            stack = stack_labels(t.frames)
            stack = self._labels[id(t.frames)] = self._stacks.setdefault(stack, stack)
        return stack

    def _note(self, key: tuple, t: ThreadReport, offset_ns: int, run, in_cycle: bool) -> None:
        context = t.context
        stack = self._stack(t)
        call = t.blocked_in
        wait_object = context.wait_object if context is not None else None
        earlier = self._seen.get(key)
        if call == "restart_syscall" and earlier and earlier[-1].stack == stack:
            # How the kernel resumes a sleep, poll or timed futex wait that a ptrace stop
            # (ours, in the capture before) interrupted: still the same call, on the same thing.
            call, wait_object = earlier[-1].call, earlier[-1].wait_object
        seen = Seen(
            offset_ns=offset_ns,
            stack=stack,
            call=call,
            wait_object=wait_object,
            state=context.state if context is not None else "",
            run=run,
            in_cycle=in_cycle,
            lock_wait=t.waits_for_mutex is not None
            or _takes_lock(stack)
            or self.lock_wait(t.runtime_keys),
        )
        self._seen.setdefault(key, []).append(seen)
        self._last[key] = t

    def watch(self, interval_ms: int, run) -> Watch:
        """The watch, once the captures are done (`run`: sampling.Run)."""
        report = self._report
        assert report is not None  # captures() raises before a watch with no capture
        last = last_offset(self._seen)
        # Every thread seen, in the last capture's order, then those that had exited by then.
        order = {t.tid: i for i, t in enumerate(report.threads)}
        seen = sorted(
            (key for key in self._seen if key[0] == "thread"),
            key=lambda key: (order.get(key[1], len(order)), key[1]),
        )
        threads = tuple(self._progress(key, last) for key in seen)
        coroutines = None
        if report.coroutines is not None:
            coroutines = tuple(
                self._progress(key, last) for key in self._seen if key[0] == "coroutine"
            )
        return Watch(
            header=report.header,
            interval_ms=interval_ms,
            samples_taken=run.taken,
            started_ns=run.started_ns,
            duration_ns=run.duration_ns,
            threads=threads,
            coroutines=coroutines,
            last=report,
            interrupted=run.interrupted,
            ended_early=run.ended_early,
            warnings=tuple(self._warnings),
        )

    def _progress(self, key: tuple, last_ns: int) -> ThreadProgress:
        last = self._last[key]
        judged = judge(last, self._seen[key], last_ns, coroutine=key[0] == "coroutine")
        waited = self.waited_s(last.runtime_keys)
        return judged if waited is None else dataclasses.replace(judged, waited_s=waited)


def last_offset(seen: Dict[tuple, List[Seen]]) -> int:
    """When the last capture began (ns after the first)."""
    return max((series[-1].offset_ns for series in seen.values()), default=0)


def _coroutine_id(c: ThreadReport) -> int:
    return c.coroutine_id if c.coroutine_id is not None else c.tid


def _takes_lock(stack: Sequence[str]) -> bool:
    return any(
        _LOCKING.search(name) and not _UNLOCKING.search(name) for name in stack[:_LOCK_DEPTH]
    )


def judge(
    last: ThreadReport, seen: Sequence[Seen], last_ns: int, coroutine: bool = False
) -> ThreadProgress:
    """The class of a thread seen in these captures (oldest first), in a watch whose last
    capture began `last_ns` after its first: one missing from that capture has gone (a thread
    that exited, a coroutine that ran), which is progress."""
    final = seen[-1]
    still = _trailing(seen, Seen.place)
    first = seen[-still]
    progress = RUNNING if final.offset_ns < last_ns else _classify(seen, still, coroutine)
    # A thread that moved: its CPU over the whole watch; one that stayed: over its stay.
    since = seen[0] if progress == RUNNING else first
    cpu_ns = wakeups = None
    if since.run is not None and final.run is not None:
        cpu_ns = max(0, final.run[0] - since.run[0])
        wakeups = max(0, final.run[1] - since.run[1])
    changes = sum(1 for a, b in zip(seen, seen[1:]) if a.stack != b.stack)
    return ThreadProgress(
        report=last,
        progress=progress,
        samples=len(seen),
        still=still,
        still_ns=final.offset_ns - first.offset_ns,
        cpu_ns=cpu_ns,
        wakeups=wakeups,
        changes=changes,
        waits_on=_waits_on(final),
    )


def _classify(seen: Sequence[Seen], still: int, coroutine: bool) -> str:
    if len(seen) < 2:
        return RUNNING  # it came or went between captures
    final = seen[-1]
    # Busy and in the same functions (pcs move inside a loop): spinning, wherever it waits.
    same_stack = _trailing(seen, lambda s: s.stack)
    trailing = seen[-same_stack:]
    span = trailing[-1].offset_ns - trailing[0].offset_ns
    if not coroutine and _busy(trailing, span):
        return SPINNING if same_stack >= _enough(len(seen)) else RUNNING
    if still < _enough(len(seen)):
        return RUNNING
    if all(s.in_cycle for s in seen[-still:]):
        return DEADLOCKED
    if final.lock_wait or final.state == "D" or final.call in _BLOCKING_CALLS:
        return BLOCKED
    return WAITING


def _trailing(seen: Sequence[Seen], key: Callable[[Seen], object]) -> int:
    """How many of the last captures have the last one's `key`."""
    last, count = key(seen[-1]), 1
    while count < len(seen) and key(seen[-1 - count]) == last:
        count += 1
    return count


def _enough(samples: int) -> int:
    """Captures at the same place that make a thread still: at least two, and at least half
    of those it was in."""
    return max(2, (samples + 1) // 2)


def _busy(trailing: Sequence[Seen], span_ns: int) -> bool:
    first, last = trailing[0].run, trailing[-1].run
    if first is not None and last is not None and span_ns > 0:
        return (last[0] - first[0]) >= BUSY_SHARE * span_ns
    return all(s.state == "R" for s in trailing)  # no run times: what /proc said at each


def _waits_on(s: Seen) -> Optional[str]:
    if s.wait_object is None or s.call is None:
        return None
    if s.call == "futex":
        return f"futex 0x{s.wait_object:x}"
    return f"fd {s.wait_object}"
