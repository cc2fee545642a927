"""The library entry point: a source (a live process, a core file) and options in, a
`Report` out (`dump`), or a `Profile` of samples over time (`profile`); raw addresses and a
process or an object in, their names out (`symbolize`).
What the CLI runs, and what `import stackdump` offers (see the README's "Use from Python").

    import stackdump
    report = stackdump.dump(stackdump.Process(4242))
    for thread in report.threads:
        print(thread.tid, [frame.function for frame in thread.frames])

Capture, unwinding and symbolization are one deferred phase of `interrupts` (when given):
its first SIGINT/SIGTERM winds the dump down wherever it lands, and the report of what is
known comes back marked interrupted (stackdump.interrupts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import threading
import time
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple, Union

from stackdump import addresses, proc, runtimes
from stackdump.addresses import Resolved
from stackdump.capture.live import Progress, capture_process, readable_maps, resolve_target
from stackdump.elf.modules import HostFiles, LiveFiles
from stackdump.engine import Analyzer, DumpOptions, with_fixes
from stackdump.errors import InvalidArgument, NotMainThread
from stackdump.escape import quote
from stackdump.interrupts import Interrupts
from stackdump.records import frozen
from stackdump.types import AnalysisOptions, CaptureOptions, FileSource, ProcessSnapshot, Report

if TYPE_CHECKING:
    from stackdump.profiles import Profile
    from stackdump.progress import Watch


@frozen
class Process:
    """A live process: its threads are stopped one at a time, each only while it is copied."""

    pid: int


@frozen
class CoreFile:
    """A core file; `exe`: the executable when it is no longer where the core names it;
    `sysroot`: the root its mapped files are under (a core from another machine)."""

    path: str
    exe: Optional[str] = None
    sysroot: str = ""


@frozen
class ObjectFile:
    """An ELF object on this machine, as a loader would map it at `load_address` (0: where
    it is linked): for naming addresses from a log without the process."""

    path: str
    load_address: int = 0


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
    if isinstance(source, Process):
        options = _for_pid(options, source.pid)
    elif options is None:
        options = DumpOptions(CaptureOptions(pid=0), AnalysisOptions())
    # Not installed, an Interrupts is only a phase that no signal ever reaches.
    interrupts = interrupts if interrupts is not None else Interrupts()
    started = time.perf_counter_ns()
    with interrupts.deferred() as phase, Analyzer(options.analysis) as analyzer:
        stage("capture")
        if isinstance(source, CoreFile):
            snapshot = _core_snapshot(source, options, analyzer)
        else:
            snapshot = capture_process(
                options.capture, progress, phase.requested, analyzer.settle,
                after=runtimes.after_capture,
            )  # fmt: skip
        # A signal while the last thread was captured or unwound found no next thread to
        # skip: it still asks to stop, so nothing is symbolized.
        stop = phase.requested() and not snapshot.interrupted
        stage("analysis")
        report = analyzer.analyze(snapshot, started, progress, stop, phase)
        # dpkg -S for objects without symbols (a fraction of a second): a signal now finds
        # the report complete, and it goes out.
        report = with_fixes(report, analyzer.disk)
        stage("write")
        return report


def _core_snapshot(source: CoreFile, options: DumpOptions, analyzer: Analyzer) -> ProcessSnapshot:
    remote = analyzer.remote
    fetch = (lambda build_id: remote.find(build_id, "executable", "executable")) if remote else None
    # Loaded only for a core file: its parsers cost a live dump's start-up ~7 ms (issue 31).
    capture_core = importlib.import_module("stackdump.capture.core").capture_core
    return capture_core(
        source.path, options.capture, source.exe, source.sysroot, fetch,
        after=runtimes.after_capture,
    )  # fmt: skip


def symbolize(
    pcs: Sequence[int],
    source: Union[Process, ObjectFile],
    options: Optional[AnalysisOptions] = None,
    backtrace: bool = False,
) -> Tuple[List[Resolved], Tuple[str, ...]]:
    """Name raw addresses from a live process's maps (no thread is stopped) or from an
    object's program headers; with `backtrace`, every address but the first is a return
    address. Also the warnings for stderr. InvalidArgument for an object that is no ELF."""
    options = options if options is not None else AnalysisOptions()
    files: FileSource
    if isinstance(source, ObjectFile):
        try:
            maps = addresses.object_maps(os.path.abspath(source.path), source.load_address)
        except Exception as e:  # noqa: BLE001 - any unreadable ELF: one clear message
            raise InvalidArgument(
                f"{quote(source.path)}: not a readable ELF object ({type(e).__name__})"
            ) from None
        files = HostFiles()
    else:
        pid = resolve_target(source.pid)
        view = proc.live_thread(pid) or pid
        maps = readable_maps(pid, view)
        files = LiveFiles(view, maps)
    with contextlib.closing(files):
        return addresses.symbolize(pcs, files, maps, options, backtrace)


def profile(
    source: Process,
    samples: int,
    interval_ms: int,
    options: Optional[DumpOptions] = None,
    state: str = "all",
    progress: Optional[Progress] = None,
    interrupts: Optional[Interrupts] = None,
    skip_unchanged: bool = True,
) -> Profile:
    """`samples` dumps of a live process `interval_ms` apart, aggregated by stack and state
    ("all", "running", "blocked"). The first SIGINT/SIGTERM of `interrupts` ends sampling
    after the sample in hand: what was sampled is the profile. `skip_unchanged=False`
    captures every thread in every sample, even one that has not run since the last."""
    options = _for_pid(options, source.pid)
    interrupts = interrupts if interrupts is not None else Interrupts()
    with interrupts.deferred() as phase:
        return _sampling().sample(
            options, samples, interval_ms, state, progress, phase.requested,
            skip_unchanged=skip_unchanged,
        )  # fmt: skip


def watch(
    source: Process,
    seconds: int,
    interval_ms: int = 1000,
    options: Optional[DumpOptions] = None,
    progress: Optional[Progress] = None,
    interrupts: Optional[Interrupts] = None,
) -> Watch:
    """Captures of a live process `interval_ms` apart over `seconds`, and whether each
    thread (and, with `options.capture.coroutines`, each coroutine) made progress
    (stackdump.progress). The first SIGINT/SIGTERM ends the watch after the capture in hand."""
    options = _for_pid(options, source.pid)
    interrupts = interrupts if interrupts is not None else Interrupts()
    with interrupts.deferred() as phase:
        return _sampling().watch(options, seconds, interval_ms, progress, phase.requested)


def _sampling():
    """stackdump.sampling, loaded for a profile or a watch only: with the profile and
    progress models it costs a single dump's start-up ~9 ms (issue 31)."""
    return importlib.import_module("stackdump.sampling")


def _for_pid(options: Optional[DumpOptions], pid: int) -> DumpOptions:
    """`options` (the defaults when None) for the live process `pid`, which only the main
    thread may capture (`NotMainThread`, before anything is touched)."""
    if threading.current_thread() is not threading.main_thread():
        raise NotMainThread(
            f"cannot capture process {pid} from this thread: stackdump stops threads only "
            "from the main thread (it bounds each stop with SIGALRM, whose handler only the "
            "main thread may set)"
        )
    if options is None:
        return DumpOptions(CaptureOptions(pid=pid), AnalysisOptions())
    return dataclasses.replace(options, capture=dataclasses.replace(options.capture, pid=pid))
