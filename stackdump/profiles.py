"""The profile model: thread-samples of N captures aggregated by stack and state, what
`sampling.sample` produces and the profile writers (text, folded, pprof, speedscope, Chrome
trace) read. Data only: importing it imports no capture or analysis code.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

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


@frozen
class Profile:
    header: ReportHeader  # of the first sample
    interval_ms: int
    samples_taken: int
    started_ns: int  # wall clock (time.time_ns) of the first sample
    sample_offsets_ns: Tuple[int, ...]  # when each sample began, from the first
    duration_ns: int
    stacks: Tuple[Stack, ...]
    names: Dict[int, str]  # tid -> thread name (the last one seen)
    # Each thread's samples, consecutive alike ones as one run; in the order each run began
    # (by sample, then in the order the sample took the threads).
    runs: Tuple[ThreadRun, ...]
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
        return sum(r.count for r in self.runs)

    def counts(self) -> Dict[Tuple[int, str], int]:
        """(stack, state) -> thread-samples."""
        out: Dict[Tuple[int, str], int] = {}
        for r in self.runs:
            key = (r.stack, r.state)
            out[key] = out.get(key, 0) + r.count
        return out
