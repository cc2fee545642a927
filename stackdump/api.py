"""The library entry point: a source (a live process, a core file) and options in, a
`Report` out; what the CLI runs for a dump, and what `import stackdump` offers (see the
README's "Use from Python").

    import stackdump
    report = stackdump.dump(stackdump.Process(4242))
    for thread in report.threads:
        print(thread.tid, [frame.function for frame in thread.frames])

Capture, unwinding and symbolization are one deferred phase of `interrupts` (when given):
its first SIGINT/SIGTERM winds the dump down wherever it lands, and the report of what is
known comes back marked interrupted (stackdump.interrupts).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Optional, Union

from stackdump.capture.core import capture_core
from stackdump.capture.live import Progress, capture_process
from stackdump.engine import Analyzer, DumpOptions, with_fixes
from stackdump.interrupts import Interrupts
from stackdump.types import AnalysisOptions, CaptureOptions, ProcessSnapshot, Report


@dataclass(frozen=True)
class Process:
    """A live process: its threads are stopped one at a time, each only while it is copied."""

    pid: int


@dataclass(frozen=True)
class CoreFile:
    """A core file; `exe`: the executable when it is no longer where the core names it;
    `sysroot`: the root its mapped files are under (a core from another machine)."""

    path: str
    exe: Optional[str] = None
    sysroot: str = ""


Source = Union[Process, CoreFile]


def dump(
    source: Source,
    options: Optional[DumpOptions] = None,
    progress: Optional[Progress] = None,
    interrupts: Optional[Interrupts] = None,
    stage: Callable[[str], None] = lambda name: None,
) -> Report:
    """Capture `source`, unwind and symbolize every thread. `options.capture.pid` is taken
    from a `Process` source. `stage(name)` is told "capture", "analysis" and "write" (the
    report is complete) as the dump goes, for a caller's messages."""
    if options is None:
        options = DumpOptions(CaptureOptions(pid=0), AnalysisOptions())
    if isinstance(source, Process):
        options = dataclasses.replace(
            options, capture=dataclasses.replace(options.capture, pid=source.pid)
        )
    # Not installed, an Interrupts is only a phase that no signal ever reaches.
    interrupts = interrupts if interrupts is not None else Interrupts()
    started = time.perf_counter_ns()
    with interrupts.deferred() as phase, Analyzer(options.analysis) as analyzer:
        stage("capture")
        if isinstance(source, CoreFile):
            snapshot = _core_snapshot(source, options, analyzer)
        else:
            snapshot = capture_process(options.capture, progress, phase.requested, analyzer.settle)
        # A signal while the last thread was captured or unwound found no next thread to
        # skip: it still asks to stop, so nothing is symbolized.
        stop = phase.requested() and not snapshot.interrupted
        stage("analysis")
        report = analyzer.analyze(snapshot, started, progress, stop, phase)
        # dpkg -S for objects without symbols (a fraction of a second): a signal now finds
        # the report complete, and it goes out.
        report = with_fixes(report)
        stage("write")
        return report


def _core_snapshot(source: CoreFile, options: DumpOptions, analyzer: Analyzer) -> ProcessSnapshot:
    remote = analyzer.remote
    fetch = (lambda build_id: remote.find(build_id, "executable", "executable")) if remote else None
    return capture_core(source.path, options.capture, source.exe, source.sysroot, fetch)
