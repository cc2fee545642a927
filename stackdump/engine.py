"""The library entry point: a source makes a snapshot, an `Analyzer` turns it into a Report.

`dump(options)` captures a live process (stackdump.capture.live) and analyzes it. An
`Analyzer` is long-lived: it keeps every object it opened (ELF images, debug files, CFI
tables, DWARF indexes, by module identity) across `analyze()` calls, so repeated snapshots
of one process (sampling) open each file once. Analysis works on the snapshot alone: no pid,
no /proc. Nothing here prints or exits: errors are raised as `stackdump.errors` types.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from stackdump import runtimes
from stackdump.arch import host
from stackdump.cache import DiskCache
from stackdump.capture.live import FOREIGN, Progress
from stackdump.elf.debuginfod import Debuginfod, settings_from_environ
from stackdump.elf.modules import HostFiles, ModuleMap
from stackdump.elf.packages import cached_symbols_fix
from stackdump.elf.store import LoadedObject, ModuleCounts, ObjectStore
from stackdump.interrupts import Cancelled, Interrupts
from stackdump.locks import OWNER_OFFSET, owner_offset, with_mutex_waits
from stackdump.notes import Notes
from stackdump.records import frozen
from stackdump.symbols.demangle import Demangler
from stackdump.symbols.symbolizer import DWARF_MODULE, Symbolizer, dwarf_reader
from stackdump.syscalls import signal_name, syscall_name
from stackdump.types import (
    AnalysisOptions,
    CaptureMethod,
    CaptureOptions,
    CoreInfo,
    FileSource,
    Frame,
    LocationMode,
    ModuleEntry,
    ProcessSnapshot,
    Report,
    ReportHeader,
    Summary,
    SymbolizedFrame,
    SyscallState,
    ThreadReport,
    ThreadSnapshot,
    ThreadStatus,
    UnwindResult,
    UnwindStatus,
    replaced,
)
from stackdump.unwind.cfi_source import CfiSource
from stackdump.unwind.code_map import CodeMap
from stackdump.unwind.traces import Recorder, Traces
from stackdump.unwind.unwinder import memory_of, unwind

UNWINDER_NAME = "frame_pointer_with_dwarf_cfi_fallback"
_T = TypeVar("_T")
_HOST = host()  # a live thread's processor
_MAX_NAMED = 4096  # distinct coroutine stacks whose names are kept
_MAX_KEPT = 65536  # frames tuples' counts, reports' waits: forgotten all at once past this


@frozen
class DumpOptions:
    capture: CaptureOptions
    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)


@dataclass
class _Memo:
    """What one address-space layout determines, kept across the snapshots of a process
    while its maps stay the same (sampling): CFI rows, function starts, names and call sites by
    absolute pc (but those of code in no object: `Symbolizer`), the frames and syscalls
    threads share."""

    maps: tuple
    vdso: Optional[bytes]
    rows: Dict[int, object] = field(default_factory=dict)
    starts: Dict[int, Optional[int]] = field(default_factory=dict)
    call_sites: Dict[int, tuple] = field(default_factory=dict)
    names: Dict[Tuple[int, bool], SymbolizedFrame] = field(default_factory=dict)
    frames: Dict[Tuple[int, str, bool, bool], Frame] = field(default_factory=dict)
    syscalls: Dict[Tuple[bool, Optional[int]], SyscallState] = field(default_factory=dict)
    # By tid: a thread sampling counted again from its last capture (the same snapshot
    # object) has the same report.
    reports: Dict[int, Tuple[ThreadSnapshot, ThreadReport]] = field(default_factory=dict)
    traces: Traces = field(default_factory=Traces)
    # The last snapshot's thread reports, and what was derived from them: a sample whose
    # every thread was counted again from the last has the very same reports, and so the
    # same frame counts and mutex waits (with the owner's offset they were found with).
    last_reports: Tuple[ThreadReport, ...] = ()
    last_counts: Optional[ModuleCounts] = None
    # By the identity of a frames tuple (kept with it): its frames by object, counted once
    # for all the samples and threads that share it.
    by_frames: Dict[int, Tuple[tuple, ModuleCounts]] = field(default_factory=dict)
    # By the identity of a thread report (kept with it): the mutex it waits for, if any, for
    # the owner's offset `waits_offset` (`locks.with_mutex_waits`).
    waits: Dict[int, tuple] = field(default_factory=dict)
    waits_offset: int = -1
    last_waits: Optional[Tuple[int, Tuple[ThreadReport, ...], Tuple[Tuple[int, ...], ...]]] = None
    modules: Optional[ModuleMap] = None  # `maps` as a ModuleMap, made on first use
    code: Optional[CodeMap] = None  # `maps`' executable ranges, made on first use
    entries: Dict[tuple, ModuleEntry] = field(default_factory=dict)  # ObjectStore.module_entries

    def module_map(self) -> ModuleMap:
        if self.modules is None:
            self.modules = ModuleMap(self.maps)
        return self.modules

    def code_map(self) -> CodeMap:
        if self.code is None:
            self.code = CodeMap(self.maps)
        return self.code


class _Session:
    """What analyzing one snapshot's threads needs: its objects (sharing the analyzer's
    loaded ones), CFI, code map and symbolizer, and the counters at its start."""

    def __init__(self, analyzer: Analyzer, files: FileSource, maps, vdso) -> None:
        options = analyzer.options
        self.files = files
        memo = analyzer.memo_for(maps, vdso)
        self.objects = ObjectStore(
            files,
            maps,
            vdso,
            options.debug_dirs,
            analyzer.disk,
            analyzer.loaded,
            analyzer.remote,
            analyzer.notes,
            memo.module_map(),
        )
        self.memo = memo
        self.cfi = CfiSource(self.objects, runtimes.own_code, memo.rows, memo.starts)
        self.code_map = memo.code_map()
        self._maps = maps
        self.hits_before = analyzer.disk.hits
        self.decoded_before = _cus_decoded(self.objects)
        self.max_frames = options.max_frames
        self.remember = options.remember_unwinds
        self._symbolizer: Optional[Symbolizer] = None
        self._demangler = analyzer.demangler
        self.mode = options.mode
        self._frames = memo.frames
        self._syscalls = memo.syscalls
        self.reports = memo.reports
        # A coroutine's frames (the tuple a remembered walk gave) -> their names, for this
        # snapshot only (a perf map may name JIT code otherwise in the next): `_named_frames`.
        self.named: Dict[Tuple[int, str], tuple] = {}
        # Runtime keys with their call sites named, by the keys and the sites: 100,000
        # coroutines created in a few places name a few (`_with_call_sites`).
        self.named_keys: Dict[tuple, tuple] = {}

    @property
    def symbolizer(self) -> Symbolizer:
        if self._symbolizer is None:
            anonymous = runtimes.anonymous_code(self._maps, getattr(self.files, "pid", None))
            self._symbolizer = Symbolizer(
                self.objects,
                self.mode,
                anonymous,
                runtimes.own_code,
                self.memo.names,
                self.memo.call_sites,
                self._demangler,
            )
        return self._symbolizer

    def unwind(self, thread: ThreadSnapshot, memory=None) -> Optional[UnwindResult]:
        """`memory`: what stands for the thread's stack copy (a `traces.Recorder`)."""
        if thread.unwound is not None:
            return thread.unwound
        if thread.status is not ThreadStatus.OK or thread.regs is None:
            return None
        cfi = self.cfi
        result = unwind(
            thread.regs,
            memory if memory is not None else memory_of(thread),
            self.max_frames,
            cfi.row,
            cfi,
            self.code_map,
            cfi.problem,
        )
        method, frames = result.capture_method, result.frames
        if thread.passive:
            method = CaptureMethod.PASSIVE_SYSCALL
        elif thread.coroutine:
            method = CaptureMethod.SAVED_CONTEXT
        first = frames[0] if frames else None
        if thread.pc_after_call and first is not None and cfi.function_start(first.pc) != first.pc:
            frames = (dataclasses.replace(first, activation=False), *frames[1:])
        if method is result.capture_method and frames is result.frames:
            return result
        return UnwindResult(  # not dataclasses.replace: ~5 us less, per coroutine
            frames,
            method,
            result.fp_status,
            result.unwind_status,
            result.error,
            result.recovered_frame_pointers,
        )

    def settle(self, thread: ThreadSnapshot) -> ThreadSnapshot:
        """The thread unwound, its stack copy released: what a live capture keeps. Its
        frames keep what analysis reads (pc, how each was found, what kind of frame it is),
        not the stack addresses that pointed into the released copy, so threads with the
        same stack share their frames. Its syscall keeps its number (the arguments, sp and
        pc were for capture)."""
        syscall = self._slim(thread.syscall)
        traced = self._traced(thread)
        if traced is not None and traced[2] is None:  # unwound as an earlier one was
            return replaced(thread, stack=b"", extra_stacks=(), unwound=traced[1], syscall=syscall)
        result = self.unwind(thread, traced[2] if traced is not None else None)
        if result is None or thread.unwound is not None:
            return (
                thread
                if syscall is thread.syscall
                else dataclasses.replace(thread, syscall=syscall)
            )
        shared = self._frames
        frames = []
        for f in result.frames:
            key = (f.pc, f.method, f.activation, f.trampoline)
            bare = shared.get(key)
            if bare is None:
                bare = shared[key] = Frame(
                    f.pc, method=f.method, activation=f.activation, trampoline=f.trampoline
                )
            frames.append(bare)
        result = UnwindResult(  # not dataclasses.replace: ~4 us less, per thread
            tuple(frames),
            result.capture_method,
            result.fp_status,
            result.unwind_status,
            result.error,
            result.recovered_frame_pointers,
        )
        if traced is not None and not result.error:
            self.memo.traces.keep(traced[0], traced[2], result)
        return replaced(thread, stack=b"", extra_stacks=(), unwound=result, syscall=syscall)

    def _traced(self, thread: ThreadSnapshot):
        """For a suspended coroutine or a thread copied in place (passive: pc and sp alone,
        like a coroutine's; an event loop's thread is back in the same epoll_wait at each
        sample, and a pool's threads park alike): (its key, the remembered unwind, None)
        when one fits, else (its key, None, a Recorder to unwind through); None for anything
        else (a stopped thread's registers are all known, and rarely twice the same)."""
        regs = thread.regs
        if not (thread.coroutine or thread.passive) or regs is None or thread.extra_stacks:
            return None
        if thread.status is not ThreadStatus.OK or thread.unwound is not None or not self.remember:
            return None
        memory, sp = memory_of(thread), regs.sp
        kind = (bool(thread.coroutine), thread.passive, thread.pc_after_call)
        key = Traces.key(regs.as_dict(), sp, memory, kind)
        found = self.memo.traces.find(key, memory, sp)
        return (key, found, None) if found is not None else (key, None, Recorder(memory, sp))

    def _slim(self, call: Optional[SyscallState]) -> Optional[SyscallState]:
        if call is None:
            return None
        key = (call.running, call.number)
        slim = self._syscalls.get(key)
        if slim is None:
            slim = self._syscalls[key] = SyscallState(call.running, call.number)
        return slim


class Analyzer:
    """Unwinds and symbolizes snapshots. Use as a context manager; `analyze()` may be called
    any number of times and consumes each snapshot's `files`."""

    def __init__(self, options: AnalysisOptions) -> None:
        self.options = options
        self.disk = DiskCache(options.cache_dir)
        self.remote = Debuginfod(options.debuginfod) if options.debuginfod else None
        self.notes = Notes()  # warnings for stderr, each said once however many snapshots
        self.demangler = Demangler()  # names hold across snapshots, whatever their maps
        # Every object opened so far, by module identity, kept across snapshots.
        self.loaded: Dict[Tuple[str, int, str], LoadedObject] = {}
        self._session: Optional[_Session] = None
        self._memo: Optional[_Memo] = None

    def memo_for(self, maps, vdso: Optional[bytes]) -> _Memo:
        """The memo of the last snapshot when its maps (and vDSO) were these, else a new
        one: a pc means the same code only in the same layout."""
        memo = self._memo
        if memo is None or memo.maps != maps or memo.vdso != vdso:
            memo = self._memo = _Memo(maps, vdso)
        return memo

    def __enter__(self) -> Analyzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._session = None
        for loaded in self.loaded.values():
            loaded.close()
        self.loaded.clear()
        self.disk.close()
        if self.remote is not None:
            self.remote.close()

    def settle(self, files: FileSource, maps, vdso) -> Callable[[ThreadSnapshot], ThreadSnapshot]:
        """For a source that can hand threads over as it captures them (capture_process's
        `settle`): unwind each at once and drop its stack bytes, so a dump of 10,000 threads
        holds their frames, not 10,000 stack copies. `analyze()` then takes the snapshot
        built from those same files."""
        self._session = _Session(self, files, maps, vdso)
        return self._session.settle

    def analyze(
        self,
        snapshot: ProcessSnapshot,
        started_ns: Optional[int] = None,
        progress: Optional[Progress] = None,
        stop_requested: bool = False,
        interrupts: Optional[Interrupts] = None,
    ) -> Report:
        """Unwind (unless `settle` did) and symbolize every captured thread. A SIGINT or
        SIGTERM meanwhile (`interrupts`, deferred: stackdump.interrupts) leaves the thread it
        hit and every later one unsymbolized (`0x... in OBJECT+0xOFFSET`), nothing lost and
        no more DWARF read; a second propagates. `stop_requested`: one came before analysis
        began (during the last capture): every frame is printed so."""
        files = snapshot.files if snapshot.files is not None else HostFiles()
        session, self._session = self._session, None
        winding = _Winding(interrupts, stop_requested)
        with contextlib.closing(files):
            if session is None or session.files is not snapshot.files:
                session = _Session(self, files, snapshot.maps, snapshot.vdso)
            if self.remote is not None:
                # Capture is over: every thread runs, the network may be waited for.
                self.remote.progress = progress
                session.objects.allow_downloads(winding.asked)
            reports, unsymbolized = _thread_reports(snapshot.threads, session, winding, progress)
            if snapshot.core is not None and snapshot.core.signal:
                reports = _mark_signal_thread(reports, snapshot.core)
            _remember(session.memo, reports)
            coroutines = None
            if snapshot.coroutines is not None:
                coroutines = tuple(_thread_reports(snapshot.coroutines, session, winding)[0])
            if progress is not None:
                progress("symbolization", len(reports), len(reports))
            cus_decoded = _cus_decoded(session.objects) - session.decoded_before
            counts = _counts_again(session, reports, coroutines)
            modules = session.objects.module_entries(counts, session.memo.entries)
            found = winding.attempt(lambda: _owner_offset(session, reports))
        owner_offset = OWNER_OFFSET if found is None else found
        threads, deadlocks = _waits_again(session.memo, reports, owner_offset)
        elapsed_ns = time.perf_counter_ns() - started_ns if started_ns else snapshot.capture_ns
        hits = self.disk.hits - session.hits_before
        summary = _summarize(snapshot, elapsed_ns, hits, cus_decoded, unsymbolized)
        header = _header(snapshot, self.options.mode)
        for note in snapshot.notes:
            self.notes.add(note)
        return Report(
            header=header,
            threads=threads,
            deadlocks=deadlocks,
            coroutines=coroutines,
            coroutines_truncated=snapshot.coroutines_truncated,
            modules=modules,
            summary=summary,
            interrupted=snapshot.interrupted or winding.stopped,
            symbolization_interrupted=winding.stopped,
            warnings=self.warnings() + runtimes.hints(header, threads),
        )

    def warnings(self) -> Tuple[str, ...]:
        """What was skipped or not trusted since the last call (each said once)."""
        self.notes.add(self.disk.problem)
        if self.remote is not None:
            self.notes.add(self.remote.problem)
            self.notes.add(self.remote.summary())
        return self.notes.take()


class _Winding:
    """Whether a signal has stopped symbolization (see Analyzer.analyze), and the running
    of work that one may cut short: once stopped, no more such work starts."""

    def __init__(self, interrupts: Optional[Interrupts], stopped: bool) -> None:
        self.stopped = stopped
        # Only signals from now on: one that cut capture short still lets it symbolize.
        self.asked: Callable[[], bool] = interrupts.since_now() if interrupts else _never
        self._cancellable = interrupts.cancellable if interrupts else None

    def attempt(self, work: Callable[[], _T]) -> Optional[_T]:
        """work(), or None when a signal asked to stop, before it or during it."""
        self.stopped = self.stopped or self.asked()
        if self.stopped:
            return None
        if self._cancellable is None:  # nothing can cut it short (a profile's samples)
            return work()
        try:
            with self._cancellable():
                return work()
        except Cancelled:
            self.stopped = True
            return None


def _never() -> bool:
    return False


def _mark_signal_thread(reports: List[ThreadReport], core: CoreInfo) -> List[ThreadReport]:
    """A core's thread that received the fatal signal says so on its line."""
    name = signal_name(core.signal)
    return [
        dataclasses.replace(r, signal=name) if r.tid == core.signal_thread else r for r in reports
    ]


def _thread_report(thread: ThreadSnapshot, session: _Session, symbolize: bool) -> ThreadReport:
    pause_us = thread.pause_ns // 1000 if thread.attempted else None
    if thread.passive:
        pause_us = 0
    blocked_in = _blocked_in(thread)
    if thread.status is ThreadStatus.SKIPPED_BLOCKING_SYSCALL:
        number = thread.syscall.number if thread.syscall else None
        return ThreadReport(
            tid=thread.tid,
            name=thread.name,
            status=thread.status,
            syscall_name=syscall_name(number, _HOST) if number is not None else None,
            syscall_number=number,
            context=thread.context,
            blocked_in=blocked_in,
        )
    if thread.status is not ThreadStatus.OK or thread.regs is None:
        carried = _carried(
            thread, blocked_in, session.symbolizer if symbolize else None, session.named_keys
        )
        return ThreadReport(pause_us=pause_us, error=thread.error, **carried)
    result = session.unwind(thread)
    assert result is not None
    symbolizer = session.symbolizer
    frames, end = _named_frames(session, result.frames, thread.coroutine, symbolize)
    bounds = (thread.stack_map.start, thread.stack_map.end) if thread.stack_map else None
    # What capture said of the stack (a core cut before it) is why the unwind failed.
    unwind_status, error = result.unwind_status, thread.error or result.error
    if end is not None:
        # Where the runtime's own tracebacks end this stack (the frames were cut there):
        # what lies beyond is not this stack's, and reaching it is no failure.
        unwind_status, error = UnwindStatus.END_OF_STACK, ""
    return ThreadReport(
        frames=frames,
        capture_method=result.capture_method,
        fp_status=result.fp_status,
        unwind_status=unwind_status,
        stack_bounds=bounds,
        pause_us=pause_us,
        error=error,
        recovered_frame_pointers=result.recovered_frame_pointers,
        running_coroutine=thread.running_coroutine,
        entry_function=_entry_name(session, thread.entry) if symbolize else None,
        **_carried(thread, blocked_in, symbolizer if symbolize else None, session.named_keys),
    )


def _same(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _remember(memo: _Memo, reports) -> None:
    """Keep what was derived from the last snapshot's reports only when these are those
    very objects (sampling counts threads that did not run again as they are)."""
    if not _same(reports, memo.last_reports):
        memo.last_reports, memo.last_counts, memo.last_waits = tuple(reports), None, None


def _counts_again(session: _Session, reports, coroutines) -> ModuleCounts:
    """`_frame_counts`, made once for the reports `_remember` keeps (coroutines' each time)."""
    memo = session.memo
    if coroutines is not None:
        return _frame_counts(session, reports, coroutines)
    if memo.last_counts is None:
        memo.last_counts = _frame_counts(session, reports, None)
    return memo.last_counts


def _waits_again(memo: _Memo, reports, owner_offset: int):
    """`with_mutex_waits`, made once for the reports `_remember` keeps and this owner
    offset (its threads tuple then the same object each time), each report's wait found once
    for the samples that count it again."""
    last = memo.last_waits
    if last is None or last[0] != owner_offset:
        if memo.waits_offset != owner_offset or len(memo.waits) > _MAX_KEPT:
            memo.waits, memo.waits_offset = {}, owner_offset
        last = (owner_offset, *with_mutex_waits(reports, owner_offset, memo.waits))
        memo.last_waits = last
    return last[1], last[2]


def _frame_counts(session: _Session, reports, coroutines) -> ModuleCounts:
    """The reports' frames by object (`ObjectStore.frames_by_module`). Reports sharing one
    frames tuple (coroutines parked alike, a thread counted again from the last sample) are
    counted by the tuple, each tuple's frames looked up once while the layout holds."""
    shared: Dict[int, list] = {}
    for r in (*reports, *(coroutines or ())):
        entry = shared.get(id(r.frames))
        if entry is None:
            shared[id(r.frames)] = [r.frames, 1]
        else:
            entry[1] += 1
    memo, objects = session.memo, session.objects
    known = memo.by_frames
    if len(known) > _MAX_KEPT:
        known.clear()
    counts: ModuleCounts = {}
    for frames, times in shared.values():
        found = known.get(id(frames))
        if found is None or found[0] is not frames:
            found = known[id(frames)] = (frames, objects.frames_by_module(frames))
        for key, (module, frames_in, unknown) in found[1].items():
            total = counts.get(key)
            if total is None:
                counts[key] = [module, frames_in * times, unknown * times]
            else:
                total[1] += frames_in * times
                total[2] += unknown * times
    return counts


def _named_frames(
    session: _Session, frames: Tuple[Frame, ...], coroutine: str, symbolize: bool
) -> Tuple[Tuple[SymbolizedFrame, ...], Optional[int]]:
    """The frames named (or, when not `symbolize`, only placed), cut where the runtime's
    tracebacks end the stack, and that end's index (None: not cut). Coroutines parked alike
    share their frames' tuple (unwind/traces.py): they share this answer too, one tuple the
    text writer also writes once."""
    symbolizer = session.symbolizer
    key = (id(frames), coroutine)
    known = session.named.get(key) if symbolize and coroutine else None
    if known is not None and known[0] is frames:
        return known[1], known[2]
    if symbolize:
        named = [_symbolize_softly(symbolizer, frame) for frame in frames]
    else:
        named = [symbolizer.unsymbolized(frame) for frame in frames]
    end = runtimes.stack_end([f.function for f in named], coroutine) if symbolize else None
    answer = tuple(named[: end + 1] if end is not None else named)
    if symbolize and coroutine and len(session.named) < _MAX_NAMED:
        session.named[key] = (frames, answer, end)
    return answer, end


def _with_call_sites(thread: ThreadSnapshot, symbolizer: Optional[Symbolizer], known: dict):
    """The thread's runtime keys, its call sites' keys named; `known`: those made so far,
    the same tuple for the same keys (each text is made and written once)."""
    if not thread.call_sites:
        return thread.runtime_keys
    key = (thread.runtime_keys, thread.call_sites)
    named = known.get(key)
    if named is None:
        sites = dict(thread.call_sites)
        named = tuple(
            (k, _call_site_text(sites[k], symbolizer) if k in sites else v)
            for k, v in thread.runtime_keys
        )
        if symbolizer is not None and len(known) < _MAX_NAMED:
            known[key] = named
    return named


def _call_site_text(pc: int, symbolizer: Optional[Symbolizer]) -> str:
    """ "FUNCTION at FILE:LINE" of the call returning to pc, as much as is known."""
    try:
        named = symbolizer.call_site(pc) if symbolizer is not None else None
    except Exception:  # noqa: BLE001 - as _symbolize_softly: this key only loses its name
        named = None
    if named is None or named[0] is None:
        return f"0x{pc:x}"
    function, file, line = named
    return f"{function} at {file}:{line}" if file and line else function


def _thread_reports(
    threads: Sequence[ThreadSnapshot], session: _Session, winding: _Winding, progress=None
) -> Tuple[List[ThreadReport], int]:
    """Each thread's report, symbolized until a signal says to stop (then unsymbolized),
    and how many frames went unsymbolized so."""
    reports: List[ThreadReport] = []
    unsymbolized = 0
    known = session.reports
    for done, thread in enumerate(threads):
        if progress is not None:
            progress("symbolization", done, len(threads))
        earlier = known.get(thread.tid)
        if earlier is not None and earlier[0] is thread:
            reports.append(earlier[1])
            continue
        report = winding.attempt(lambda t=thread: _thread_report(t, session, True))
        if report is None:
            report = _thread_report(thread, session, False)
            unsymbolized += report.physical_frames
        elif not thread.coroutine:
            known[thread.tid] = (thread, report)
        reports.append(report)
    return reports, unsymbolized


def _header(snapshot: ProcessSnapshot, mode: LocationMode) -> ReportHeader:
    how = snapshot.options or CaptureOptions(pid=snapshot.pid)
    return ReportHeader(
        pid=snapshot.pid,
        exe=snapshot.exe,
        thread_count=snapshot.thread_count or len(snapshot.threads),
        timeout_ms=how.timeout_ms,
        mode=mode,
        skip_blocking_syscalls=how.skip_blocking_syscalls,
        unwinder=UNWINDER_NAME,
        capture=how.capture_mode,
        cmdline=snapshot.cmdline,
        core=snapshot.core,
        host=snapshot.host,
    )


def _carried(
    thread: ThreadSnapshot, blocked_in: Optional[str], symbolizer: Optional[Symbolizer], known
) -> dict:
    """What a thread's report takes from its snapshot whether or not it was unwound; its
    runtime keys with their call sites named (`symbolizer`), or as addresses (None);
    `known`: `_with_call_sites`'."""
    return dict(
        tid=thread.tid,
        name=thread.name,
        status=thread.status,
        context=thread.context,
        blocked_in=blocked_in,
        coroutine=thread.coroutine,
        coroutine_id=thread.coroutine_id,
        runtime_keys=_with_call_sites(thread, symbolizer, known),
        group_keys=thread.group_keys,
        ids_as_ranges=thread.ids_as_ranges,
    )


def _owner_offset(session: _Session, reports: List[ThreadReport]) -> int:
    """Where the mutex keeps its owner: from DWARF in the modes that read DWARF."""
    if session.mode is LocationMode.DISABLED:
        return OWNER_OFFSET
    member_offset_at = dwarf_reader().member_offset_at
    return owner_offset(reports, lambda pc, s, m: member_offset_at(session.objects, pc, s, m))


def _cus_decoded(objects: ObjectStore) -> int:
    """DWARF units decoded so far: none before the reader was loaded."""
    loaded = sys.modules.get(DWARF_MODULE)
    return loaded.cus_decoded(objects) if loaded is not None else 0


def with_fixes(report: Report, cache: DiskCache) -> Report:
    """The report with a fix for each object whose frames went unnamed for want of a symbol
    table (the Debian package to install: `dpkg -S`, ~0.1 s a file, kept in `cache` until
    dpkg's state changes). Asked for by a writer that shows it, once per dump; a profile's
    samples do without."""
    if not any(m.unknown_frames and m.symbols != "symtab" for m in report.modules):
        return report
    modules = tuple(_with_fix(m, cache) for m in report.modules)
    return dataclasses.replace(report, modules=modules)


def _with_fix(module: ModuleEntry, cache: DiskCache) -> ModuleEntry:
    if not module.unknown_frames or module.symbols == "symtab" or module.path.startswith("["):
        return module
    debuginfod = settings_from_environ(os.environ) is not None
    missing = not module.file_found
    fix = cached_symbols_fix(cache, module.path, module.build_id, debuginfod, missing)
    return dataclasses.replace(module, fix=fix)


def _entry_name(session: _Session, entry: Optional[int]) -> Optional[str]:
    if not entry:
        return None
    return _symbolize_softly(session.symbolizer, Frame(pc=entry, activation=True)).function


def _blocked_in(thread: ThreadSnapshot) -> Optional[str]:
    """The syscall the thread was blocked in when captured (not one it was running)."""
    call = thread.syscall
    if call is None or call.running or call.number is None or call.number < 0:
        return None
    arch = thread.regs.arch if thread.regs is not None else _HOST  # skipped: a live thread
    return syscall_name(call.number, arch) or str(call.number)


def _symbolize_softly(symbolizer: Symbolizer, frame) -> SymbolizedFrame:
    """Per-frame fail-soft: a parser error no layer anticipated costs this frame its name,
    never the dump (the object layers already turn every known parse error into "unknown")."""
    try:
        return symbolizer.symbolize(frame)
    except Exception:  # noqa: BLE001 - the last line of defence for one frame
        return SymbolizedFrame(pc=frame.pc, function=None, module=None, module_offset=None)


# The order `_summarize` counts in (OK first, the most common); every status is in it.
_STATUSES = (
    ThreadStatus.OK,
    ThreadStatus.SKIPPED_BLOCKING_SYSCALL,
    ThreadStatus.THREAD_EXITED,
    ThreadStatus.TIMEOUT,
    ThreadStatus.ATTACH_ERROR,
    ThreadStatus.SKIPPED_RUNNING,
)
assert set(_STATUSES) == set(ThreadStatus)


def _summarize(
    snapshot: ProcessSnapshot,
    elapsed_ns: int,
    cache_hits: int,
    cus_decoded: int,
    unsymbolized: int,
) -> Summary:
    """The summary of a snapshot's threads (every one is reported, each once)."""
    threads = snapshot.threads
    # One pass: a profile summarizes each of its samples (~18 us in eight passes). Statuses
    # counted by their place in `_STATUSES` (found by identity): an Enum member as a dict
    # key hashes in Python code.
    statuses = [0] * len(_STATUSES)
    attempted = passive = foreign = max_pause_ns = 0
    for t in threads:
        statuses[_STATUSES.index(t.status)] += 1
        if t.attempted:
            attempted += 1
            max_pause_ns = max(max_pause_ns, t.pause_ns)
        passive += t.passive
        if t.error and t.error.startswith(FOREIGN):
            foreign += 1
    ok, skipped, exited, timed_out, errors, skipped_running = statuses
    return Summary(
        captured=ok,
        skipped=skipped + skipped_running + exited + errors,
        timed_out=timed_out,
        remote_signal_attempts=attempted,
        elapsed_ms=elapsed_ns // 1_000_000,
        max_pause_us=max_pause_ns // 1000,
        exited=exited,
        errors=errors,
        cache_hits=cache_hits,
        cus_decoded=cus_decoded,
        passive=passive,
        foreign=foreign,
        reported=len(threads),
        process_exited=snapshot.process_exited,
        exec_seen=snapshot.exec_seen,
        unsymbolized=unsymbolized,
    )
