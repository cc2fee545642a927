"""Profiles over time: the same live capture taken N times by one process (symbol tables, CFI
and DWARF opened once, each distinct pc symbolized once per sample), aggregated by stack.

Each thread of each sample counts once, labelled running (`state=R` just before it was
captured) or blocked (any other state: the syscall and wchan say in what); with
`--coroutines`, each suspended coroutine counts too, as blocked, named by its kind. Threads that
appear or exit between samples are counted in the samples they were in. A stop request
(SIGINT/SIGTERM) ends sampling after the sample in hand (the first is always taken whole): what was
sampled is the profile.
"""

from __future__ import annotations

import contextlib
import functools
import time
from array import array
from typing import Callable, Dict, List, Optional, Tuple

from stackdump import proc, runtimes
from stackdump.capture.live import (
    Progress,
    Series,
    ShouldStop,
    TargetChanged,
    capture_process,
    resolve_target,
)
from stackdump.capture.remote import Buffers
from stackdump.capture.unchanged import UnchangedThreads
from stackdump.engine import Analyzer, DumpOptions
from stackdump.errors import AlreadyTraced, NotUserProcess, ProcessNotFound
from stackdump.profiles import BLOCKED, RUNNING, Profile, Runs, Stack
from stackdump.progress import Watch, Watcher
from stackdump.records import frozen
from stackdump.types import ModuleEntry, Report, ReportHeader, ThreadReport, ThreadStatus


@frozen
class Run:
    """How a series of captures went: what a profile or a watch says besides its samples."""

    taken: int
    started_ns: int  # wall clock (time.time_ns) of the first sample
    duration_ns: int
    reused: int  # thread-samples counted from an earlier capture (capture/unchanged.py)
    interrupted: bool
    ended_early: str  # why the series stopped before the count asked for, or ""


# Called with each sample's index, its report and when it began (ns after the first).
Sink = Callable[[int, Report, int], None]


def sample(
    options: DumpOptions,
    count: int,
    interval_ms: int,
    state_filter: str = "all",
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
    clock: Callable[[], float] = time.monotonic,
    skip_unchanged: bool = True,
) -> Profile:
    """`skip_unchanged`: a thread that has not run since the last sample is counted from its
    last capture, not stopped and read again (capture/unchanged.py); a profile comes out the
    same either way."""
    tally = _Tally(state_filter)
    run = captures(
        options, count, interval_ms, tally.add, progress, should_stop, clock, skip_unchanged
    )
    return tally.profile(interval_ms, run)


def watch(
    options: DumpOptions,
    seconds: int,
    interval_ms: int,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
) -> Watch:
    """Captures `interval_ms` apart over `seconds` (the first at 0, the last at `seconds`),
    each thread's CPU time read from /proc as each begins, judged by `progress.Watcher`."""
    count = max(2, seconds * 1000 // interval_ms + 1)
    pid = resolve_target(options.capture.pid, options.capture.timeout_ms)
    watcher = Watcher(
        functools.partial(proc.read_run_times, pid), runtimes.waits_for_lock, runtimes.waited_s
    )
    run = captures(
        options, count, interval_ms, watcher.add, progress, should_stop, before=watcher.before
    )
    return watcher.watch(interval_ms, run)


def captures(
    options: DumpOptions,
    count: int,
    interval_ms: int,
    sink: Sink,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
    clock: Callable[[], float] = time.monotonic,
    skip_unchanged: bool = True,
    before: Callable[[int], None] = lambda index: None,
) -> Run:
    """`count` captures `interval_ms` apart (start to start), each analyzed and handed to
    `sink`; `before(index)` runs as each begins, before any thread is touched. The first is
    always taken whole; a stop request ends the series after the capture in hand."""
    stop = should_stop or (lambda: False)
    started_wall, started = time.time_ns(), clock()
    ended_early, interrupted, taken = "", False, 0
    series = Series()  # checks the target now: no file is opened for a wrong one
    pid = series.target(options.capture.pid, options.capture.timeout_ms)
    recall: Optional[UnchangedThreads] = None
    # Not with --cpu-window: a thread's recent CPU use changes while it sleeps.
    if skip_unchanged and not options.capture.cpu_window_ms:
        recall = UnchangedThreads(pid, series.kept)
    buffers = Buffers()
    after = functools.partial(runtimes.after_capture, absent=runtimes.Absent())
    with Analyzer(options.analysis) as analyzer, recall or contextlib.nullcontext(), series:
        for index in range(count):
            if index and stop():
                interrupted = True
                break
            began = clock()
            before(index)
            try:
                snapshot = capture_process(
                    options.capture, None, stop if index else None, analyzer.settle,
                    after=after, recall=recall, buffers=buffers, series=series,
                )  # fmt: skip
            except (ProcessNotFound, NotUserProcess, AlreadyTraced) as e:
                if not taken:
                    raise
                ended_early = _ended(options.capture.pid, e, index)
                break
            report = analyzer.analyze(snapshot)
            sink(index, report, int((began - started) * 1e9))
            taken += 1
            if report.interrupted or snapshot.process_exited:
                interrupted = interrupted or report.interrupted
                if snapshot.process_exited:
                    ended_early = f"process {report.header.pid} exited during sample {index + 1}"
                break
            if progress is not None:
                progress("sampling", index + 1, count)
            if index + 1 < count and _wait(began + interval_ms / 1000, stop, clock, series):
                interrupted = True
                break
    if not taken:
        raise ProcessNotFound(f"no such process: {options.capture.pid}")
    duration_ns = int((clock() - started) * 1e9)
    reused = recall.reused if recall is not None else 0
    return Run(taken, started_wall, duration_ns, reused, interrupted, ended_early)


def _ended(pid: int, error: Exception, taken: int) -> str:
    """Why a series that has samples stopped before the next: the process exited (or is a
    zombie: exited, not yet reaped), became another program, or another tracer holds it."""
    if isinstance(error, (TargetChanged, AlreadyTraced)):
        return f"{error} after {taken} sample(s)"
    return f"process {pid} exited after {taken} sample(s)"


class _Tally:
    """What the samples so far add up to: each distinct stack once, each thread's samples
    (of the state asked for) by its stack's index, as runs of alike ones in a row."""

    def __init__(self, state_filter: str) -> None:
        self.state_filter = state_filter
        self.stacks: Dict[Stack, int] = {}
        self.names: Dict[int, str] = {}
        self.runs = Runs()
        self.offsets = array("q")  # 8 bytes a sample: a day at 1,000 Hz is 86 million
        self.modules: Dict[str, ModuleEntry] = {}
        self.header: Optional[ReportHeader] = None
        self.warnings: List[str] = []
        # The last sample's thread reports, by identity, and what each added (None: not
        # counted): a thread counted again from its last capture has the very same report.
        self._last: Dict[int, Tuple[ThreadReport, Optional[tuple]]] = {}

    def profile(self, interval_ms: int, run: Run) -> Profile:
        assert self.header is not None  # a profile has at least one sample
        return Profile(
            header=self.header,
            interval_ms=interval_ms,
            samples_taken=len(self.offsets),
            started_ns=run.started_ns,
            sample_offsets_ns=self.offsets,
            duration_ns=run.duration_ns,
            stacks=tuple(self.stacks),
            names=self.names,
            runs=self.runs,
            modules=tuple(sorted(self.modules.values(), key=lambda m: m.start)),
            state_filter=self.state_filter,
            reused=run.reused,
            interrupted=run.interrupted,
            ended_early=run.ended_early,
            warnings=tuple(self.warnings),
        )

    def add(self, index: int, report: Report, offset_ns: int) -> None:
        self.warnings.extend(report.warnings)
        self.header = self.header or report.header
        self.offsets.append(offset_ns)
        for m in report.modules:
            self.modules.setdefault(m.path, m)
        last, now = self._last, {}
        for thread in (*report.threads, *(report.coroutines or ())):
            earlier = last.get(id(thread))
            if earlier is not None and earlier[0] is thread:
                counted = earlier[1]
            else:
                counted = self._counted(thread)
            now[id(thread)] = (thread, counted)
            if counted is not None:
                self.runs.add(index, counted)
        self._last = now

    def _counted(self, thread: ThreadReport) -> Optional[tuple]:
        """A thread-sample's fields but its index (`ThreadRun`'s from `tid` on); None when
        it is not counted."""
        if thread.status is not ThreadStatus.OK or not thread.frames:
            return None
        context = thread.context
        # A suspended coroutine (--coroutines) is off CPU by definition.
        state = RUNNING if context is not None and context.state == "R" else BLOCKED
        if self.state_filter != "all" and state != self.state_filter:
            return None
        self.names[thread.tid] = thread.coroutine or thread.name
        stack_id = self.stacks.setdefault(thread.frames, len(self.stacks))
        wchan = context.wchan if context is not None else None
        labels = runtimes.labels_of(thread.runtime_keys)
        return thread.tid, stack_id, state, thread.blocked_in, wchan, labels


def _wait(until: float, stop: ShouldStop, clock: Callable[[], float], series: Series) -> bool:
    """Sleep until `until`, a little at a time; True when asked to stop meanwhile. A thread
    a capture left seized (it timed out) stops whenever it can, and stays stopped until
    released: look for it every millisecond while there is one."""
    while True:
        if stop():
            return True
        left = until - clock()
        if left <= 0:
            return False
        time.sleep(min(left, 0.001 if series.reap() else 0.02))
