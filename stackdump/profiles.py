"""The profile model: thread-samples of N captures aggregated by stack and state, what
`sampling.sample` produces and the profile writers (text, folded, pprof, speedscope, Chrome
trace) read. Data only: importing it imports no capture or analysis code.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from stackdump.records import frozen
from stackdump.types import ModuleEntry, ReportHeader, SymbolizedFrame

RUNNING, BLOCKED = "running", "blocked"
STATES = ("all", RUNNING, BLOCKED)

Stack = Tuple[SymbolizedFrame, ...]  # innermost first


@frozen
class ThreadSample:
    """One thread in one sample."""

    sample: int  # index of the sample
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
    thread_samples: Tuple[ThreadSample, ...]
    modules: Tuple[ModuleEntry, ...]  # every object a sampled frame points into
    state_filter: str = "all"
    # Thread-samples of threads that had not run since the sample before, counted from that
    # capture instead of stopped and read again (sampling.py).
    reused: int = 0
    interrupted: bool = False
    ended_early: str = ""  # why sampling stopped before `samples_taken` reached the request
    warnings: Tuple[str, ...] = ()  # for stderr, as Report.warnings

    def counts(self) -> Dict[Tuple[int, str], int]:
        """(stack, state) -> thread-samples."""
        out: Dict[Tuple[int, str], int] = {}
        for s in self.thread_samples:
            key = (s.stack, s.state)
            out[key] = out.get(key, 0) + 1
        return out
