"""The profile model: thread-samples of N captures aggregated by stack and state, what
`sampling.sample` produces and the profile writers (text, folded, pprof, speedscope, Chrome
trace) read. Data only: importing it imports no capture or analysis code.
"""

from __future__ import annotations

from array import array
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from stackdump.records import frozen, record
from stackdump.types import ModuleEntry, ReportHeader, SymbolizedFrame

RUNNING, BLOCKED = "running", "blocked"
STATES = ("all", RUNNING, BLOCKED)

Stack = Tuple[SymbolizedFrame, ...]  # innermost first


@record
class ThreadRun:
    """One thread in `count` samples in a row, the same each time (stack, state, call,
    wchan, labels). A thread that stays where it is for a whole profile is one run, however
    many samples it spans: a profile's size follows what changed, not samples x threads
    (an hour at 10 Hz of 1,000 threads would be 36 million thread-samples)."""

    sample: int  # index of the first sample
    count: int  # how many samples in a row, from `sample`
    tid: int
    stack: int  # index into Profile.stacks
    state: str  # RUNNING or BLOCKED
    syscall: Optional[str]
    wchan: Optional[str]
    labels: Tuple[Tuple[str, str], ...] = ()  # a coroutine's profiler labels


class Runs:
    """A profile's thread runs, in the order each began, kept in columns: ~20 bytes a run,
    and each distinct kind of run (tid, stack, state, call, wchan, labels) once, so that a
    thread whose stack changes at every sample of a day-long profile costs megabytes, not
    gigabytes. Indexing and iterating give `ThreadRun`s. Sampling builds it (`add`); once in
    a `Profile` it is only read."""

    def __init__(self) -> None:
        self._kinds: List[tuple] = []
        self._kind_ids: Dict[tuple, int] = {}
        self._first = array("q")
        self._count = array("q")
        self._kind = array("l")
        self._latest: Dict[int, int] = {}  # tid -> its latest run

    def add(self, sample: int, kind: tuple) -> None:
        """A thread of `kind` (`ThreadRun`'s fields from `tid` on) in sample `sample`: its
        latest run grows when that ended at the sample before and is of this kind."""
        kind_id = self._kind_ids.get(kind)
        if kind_id is None:
            kind_id = self._kind_ids[kind] = len(self._kinds)
            self._kinds.append(kind)
        at = self._latest.get(kind[0])
        if (
            at is not None
            and self._kind[at] == kind_id
            and self._first[at] + self._count[at] == sample
        ):
            self._count[at] += 1
            return
        self._latest[kind[0]] = len(self._first)
        self._first.append(sample)
        self._count.append(1)
        self._kind.append(kind_id)

    def __len__(self) -> int:
        return len(self._first)

    def __getitem__(self, i: int) -> ThreadRun:
        return ThreadRun(self._first[i], self._count[i], *self._kinds[self._kind[i]])

    def __iter__(self) -> Iterator[ThreadRun]:
        return (self[i] for i in range(len(self._first)))

    @property
    def thread_samples(self) -> int:
        return sum(self._count)


@frozen
class Profile:
    header: ReportHeader  # of the first sample
    interval_ms: int
    samples_taken: int
    started_ns: int  # wall clock (time.time_ns) of the first sample
    sample_offsets_ns: Sequence[int]  # when each sample began, from the first (an array)
    duration_ns: int
    stacks: Tuple[Stack, ...]
    names: Dict[int, str]  # tid -> thread name (the last one seen)
    # Each thread's samples, consecutive alike ones as one run; in the order each run began
    # (by sample, then in the order the sample took the threads).
    runs: Runs
    modules: Tuple[ModuleEntry, ...]  # every object a sampled frame points into
    state_filter: str = "all"
    # Thread-samples of threads that had not run since the sample before, counted from that
    # capture instead of stopped and read again (sampling.py).
    reused: int = 0
    interrupted: bool = False
    ended_early: str = ""  # why sampling stopped before `samples_taken` reached the request
    warnings: Tuple[str, ...] = ()  # for stderr, as Report.warnings

    @property
    def thread_samples(self) -> int:
        """How many thread-samples the runs hold (a thread in a sample, once each)."""
        return self.runs.thread_samples

    def counts(self) -> Dict[Tuple[int, str], int]:
        """(stack, state) -> thread-samples."""
        out: Dict[Tuple[int, str], int] = {}
        for r in self.runs:
            key = (r.stack, r.state)
            out[key] = out.get(key, 0) + r.count
        return out
