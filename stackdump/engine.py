"""The library entry point: options -> capture -> unwind -> symbolize -> Report.

`capture_process` does everything that touches the live process (reading /proc, then
stopping threads one at a time); `analyze` works offline on what was copied. Nothing here
prints or exits: errors are raised as `stackdump.errors` types for the caller to present.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

from stackdump import permissions, proc
from stackdump.cache import DiskCache
from stackdump.capture import Tracer
from stackdump.elf.modules import VDSO, HostFiles, LiveFiles
from stackdump.elf.store import ObjectStore
from stackdump.errors import AlreadyTraced, NotUserProcess, PermissionDenied, ProcessNotFound
from stackdump.interrupts import Interrupted
from stackdump.passive import PassiveCapturer
from stackdump.remote import RemoteMemory, StackCopier
from stackdump.symbols.dwarf import cus_decoded as dwarf_cus_decoded
from stackdump.symbols.symbolizer import Symbolizer
from stackdump.syscalls import interrupted_by_stop, is_interrupt_sensitive, syscall_name
from stackdump.types import (
    CaptureMode,
    FileSource,
    LocationMode,
    ProcessSnapshot,
    Report,
    ReportHeader,
    Summary,
    SymbolizedFrame,
    SyscallState,
    ThreadReport,
    ThreadSnapshot,
    ThreadStatus,
)
from stackdump.unwind.cfi_source import CfiSource
from stackdump.unwind.code_map import CodeMap
from stackdump.unwind.unwinder import unwind

UNWINDER_NAME = "frame_pointer_with_dwarf_cfi_fallback"
FOREIGN = "not a thread of process "
_EXIT_SETTLE_S = 0.005

# progress(phase, done, total): phase is "capture" or "symbolization"; called between
# threads, never while one is stopped.
Progress = Callable[[str, int, int], None]
# should_stop(): asked between threads; True ends capture early (SIGINT, SIGTERM).
ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class DumpOptions:
    pid: int
    thread_ids: Optional[Tuple[int, ...]] = None
    mode: LocationMode = LocationMode.FAST
    timeout_ms: int = 100
    skip_blocking_syscalls: bool = False
    max_frames: int = 256
    stack_bytes: int = 262144
    debug_dirs: Tuple[str, ...] = ()
    cache_dir: Optional[str] = None  # None: no disk cache
    capture: CaptureMode = CaptureMode.AUTO
    realtime: bool = True  # SCHED_FIFO during each stop window (capture.StopWindowPriority)


def dump(
    options: DumpOptions,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
) -> Report:
    started = time.perf_counter_ns()
    snapshot = capture_process(options, progress, should_stop)
    return analyze(snapshot, options, started, progress)


def resolve_target(pid: int, timeout_ms: int = 100) -> int:
    """Check the target can be dumped; return its thread-group id."""
    if not proc.process_exists(pid):
        raise ProcessNotFound(f"no such process: {pid}")
    status = proc.read_status(pid)
    if not status:
        raise ProcessNotFound(f"no such process: {pid}")
    if proc.is_kernel_thread(pid):
        raise NotUserProcess(f"process {pid} is a kernel thread, not a user-space process")
    tgid = int(status.get("Tgid", pid) or pid)
    if tgid == os.getpid():
        # `bash -c 'stackdump -p $$'` execs stackdump in the shell's place: $$ is us, and
        # the kernel's bare EPERM would send the user chasing capabilities.
        raise NotUserProcess(
            f"process {tgid} is this stackdump itself: a process cannot trace its own threads"
        )
    if proc.live_thread(tgid) is None:
        raise NotUserProcess(f"process {pid} is a zombie: it has exited and has no memory left")
    tracer = _tracer_after(tgid, timeout_ms)
    if tracer:
        who = proc.describe_process(tracer)
        raise AlreadyTraced(
            f"process {tgid} is already traced by process {who} (TracerPid {tracer})",
            help_text=f"detach that debugger or tracer (or stop it: kill {tracer}) and retry",
        )
    return tgid


def _tracer_after(tgid: int, timeout_ms: int) -> int:
    """The process's tracer, if it still holds the main thread after `timeout_ms`: another
    stackdump or eu-stack holds a thread for microseconds, a debugger for good."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        tracer = proc.tracer_of(tgid)
        if not tracer or time.monotonic() >= deadline:
            return tracer
        time.sleep(0.0002)


def capture_process(
    options: DumpOptions,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
) -> ProcessSnapshot:
    """Read /proc, pin the mapped files, then capture the threads one at a time. The
    snapshot's `files` (the mapped files, opened here) belong to the caller: `analyze`
    closes them."""
    pid = resolve_target(options.pid, options.timeout_ms)
    started = time.perf_counter_ns()
    # Everything read from /proc up front, before any thread is stopped (docs/FORMAT.md).
    # Threads first, then the maps: a thread listed was alive when its stack was mapped.
    process_tids = proc.list_tids(pid)
    tids = list(options.thread_ids) if options.thread_ids else process_tids
    if not tids:
        raise ProcessNotFound(f"no such process: {pid}")
    view = proc.live_thread(pid, process_tids) or pid
    maps = proc.read_maps(pid, view)
    exe = proc.read_exe(pid, view)
    members = set(process_tids)
    names = {tid: proc.read_comm(pid, tid) for tid in tids}
    files = LiveFiles(view, maps)
    threads: List[ThreadSnapshot] = []
    interrupted = False
    memory = RemoteMemory(view)
    copier = StackCopier(memory, maps, options.stack_bytes)
    passive = PassiveCapturer(pid, copier, options.timeout_ms)
    # A cyclic-GC pass inside a stop window would stretch that thread's pause; capture
    # allocates little, so collection waits until every thread runs again.
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        vdso = _read_vdso(memory, maps)
        with Tracer(pid, copier, options.timeout_ms, options.realtime) as tracer:
            for done, tid in enumerate(tids):
                if should_stop is not None and should_stop():
                    interrupted = True
                    break
                if tid in members:
                    thread = _capture_one(tracer, passive, pid, tid, names.get(tid), options)
                    if _stack_unmapped(thread):
                        thread = _locate_stack(thread, pid, view, copier)
                else:
                    thread = _foreign(pid, tid)
                threads.append(thread)
                if progress is not None:
                    progress("capture", done + 1, len(tids))
    except BaseException:
        files.close()
        raise
    finally:
        memory.close()
        if gc_enabled:
            gc.enable()
    return ProcessSnapshot(
        pid=pid,
        exe=exe,
        maps=maps,
        threads=tuple(threads),
        vdso=vdso,
        capture_ns=time.perf_counter_ns() - started,
        interrupted=interrupted,
        thread_count=len(tids),
        process_exited=_process_exited(pid, threads),
        files=files,
    )


def _process_exited(pid: int, threads: List[ThreadSnapshot]) -> bool:
    """Whether the process was gone when capture ended. When threads vanished during
    capture, a thread of a process being killed can still look alive for a moment (it has
    taken its SIGKILL and not yet marked itself exiting): look again shortly."""
    if proc.live_thread(pid) is None:
        return True
    if any(t.status is ThreadStatus.THREAD_EXITED and t.attempted for t in threads):
        time.sleep(_EXIT_SETTLE_S)
        return proc.live_thread(pid) is None
    return False


def _stack_unmapped(thread: ThreadSnapshot) -> bool:
    return thread.status is ThreadStatus.OK and thread.stack_map is None and bool(thread.stack)


def _locate_stack(
    thread: ThreadSnapshot, pid: int, view: int, copier: StackCopier
) -> ThreadSnapshot:
    """A stack pointer in no mapping we knew of: a stack mapped after the maps were read, or
    one the read missed (/proc/PID/maps is read in pieces, and a process that maps and
    unmaps as it runs can slip one past it). The stack was copied blind up to
    --stack-bytes; now that the thread runs again, read the maps afresh, right away, while
    the mapping most likely still exists, and keep them for the threads still to come."""
    maps = proc.read_maps(pid, view)
    if maps:
        copier.update_maps(maps)
    m = copier.mapping(thread.stack_base)
    if m is None:
        return thread
    return dataclasses.replace(thread, stack_map=m, stack=thread.stack[: m.end - thread.stack_base])


def _foreign(pid: int, tid: int) -> ThreadSnapshot:
    """A --thread-id that is not a thread of the process: Doris reports it as exited; the
    error says what it really is."""
    owner = proc.thread_group(tid)
    error = f"{FOREIGN}{pid}"
    if owner is not None and owner != pid:
        error += f": it is a thread of process {proc.describe_process(owner)}"
    return ThreadSnapshot(tid=tid, name="?", status=ThreadStatus.THREAD_EXITED, error=error)


def _read_vdso(memory: RemoteMemory, maps) -> Optional[bytes]:
    for m in maps:
        if m.path == VDSO:
            return memory.read(m.start, m.end - m.start) or None
    return None


def _capture_one(
    tracer: Tracer,
    passive: PassiveCapturer,
    pid: int,
    tid: int,
    name: Optional[str],
    options: DumpOptions,
) -> ThreadSnapshot:
    if name is None or not proc.thread_exists(pid, tid):
        return ThreadSnapshot(tid=tid, name="?", status=ThreadStatus.THREAD_EXITED)
    if proc.thread_state(pid, tid) == "Z":
        # Exited but not yet reaped, as a main thread that called pthread_exit stays while
        # the others run: there is nothing to stop, and seizing it would fail with EPERM.
        what = "the main thread" if tid == pid else "the thread"
        return ThreadSnapshot(
            tid=tid,
            name=name,
            status=ThreadStatus.THREAD_EXITED,
            error=f"{what} has exited (a zombie); the process lives on in its other threads",
        )
    syscall = None
    if options.skip_blocking_syscalls or options.capture is not CaptureMode.PTRACE:
        syscall = proc.read_syscall(pid, tid)
        if syscall is None:
            if not proc.thread_exists(pid, tid):
                return ThreadSnapshot(tid=tid, name=name, status=ThreadStatus.THREAD_EXITED)
            # There but unreadable: the same ptrace access check failed. Stopping it will
            # fail too, with the full explanation; passive capture explains it here.
            if options.capture is CaptureMode.PASSIVE:
                raise PermissionDenied(
                    f"not permitted to read the state of process {pid} "
                    f"(/proc/{pid}/task/{tid}/syscall)",
                    help_text=permissions.help_text(pid),
                )
    if (
        options.skip_blocking_syscalls
        and syscall is not None
        and syscall.number is not None
        and is_interrupt_sensitive(syscall.number)
    ):
        return ThreadSnapshot(
            tid=tid, name=name, status=ThreadStatus.SKIPPED_BLOCKING_SYSCALL, syscall=syscall
        )
    if options.capture is CaptureMode.PASSIVE:
        return passive.capture(tid, name, syscall)
    if (
        options.capture is CaptureMode.AUTO
        and syscall is not None
        and _stop_would_interrupt(pid, syscall)
    ):
        return passive.capture(tid, name, syscall)
    return tracer.capture(tid, name, syscall)


def _stop_would_interrupt(pid: int, syscall: SyscallState) -> bool:
    if syscall.running or syscall.number is None or syscall.number < 0:
        return False
    first_arg = syscall.args[0] if syscall.args else -1
    return interrupted_by_stop(syscall.number, first_arg, lambda fd: proc.fd_is_socket(pid, fd))


def analyze(
    snapshot: ProcessSnapshot,
    options: DumpOptions,
    started_ns: Optional[int] = None,
    progress: Optional[Progress] = None,
) -> Report:
    """Unwind and symbolize every captured thread. If `Interrupted` (SIGINT/SIGTERM, see
    stackdump.interrupts) arrives meanwhile, the thread it hit and every later one are
    unwound again and printed unsymbolized (`0x... in OBJECT+0xOFFSET`): nothing captured is
    lost, and no more DWARF is read. A second one propagates."""
    reports: List[ThreadReport] = []
    unsymbolized = 0
    stopped = False
    files = snapshot.files if snapshot.files is not None else HostFiles()
    disk = DiskCache(options.cache_dir)
    try:
        objects = ObjectStore(
            files,
            snapshot.maps,
            snapshot.vdso,
            options.debug_dirs,
            disk,
        )
    except BaseException:
        files.close()
        raise
    with objects, _closing(files):
        symbolizer = Symbolizer(objects, options.mode)
        cfi = CfiSource(objects)
        code_map = CodeMap(snapshot.maps)
        for done, thread in enumerate(snapshot.threads):
            if progress is not None:
                progress("symbolization", done, len(snapshot.threads))
            report = None
            if not stopped:
                try:
                    report = _thread_report(thread, cfi, symbolizer, options, True, code_map)
                except Interrupted:
                    stopped = True
            if report is None:
                report = _thread_report(thread, cfi, symbolizer, options, False, code_map)
                unsymbolized += report.physical_frames
            reports.append(report)
        if progress is not None:
            progress("symbolization", len(reports), len(reports))
        cus_decoded = dwarf_cus_decoded(objects)
    disk.trim()
    elapsed_ns = time.perf_counter_ns() - started_ns if started_ns else snapshot.capture_ns
    summary = _summarize(snapshot.threads, elapsed_ns, disk.hits, cus_decoded)
    return Report(
        header=ReportHeader(
            pid=snapshot.pid,
            exe=snapshot.exe,
            thread_count=snapshot.thread_count or len(snapshot.threads),
            timeout_ms=options.timeout_ms,
            mode=options.mode,
            skip_blocking_syscalls=options.skip_blocking_syscalls,
            unwinder=UNWINDER_NAME,
            capture=options.capture,
        ),
        threads=tuple(reports),
        summary=dataclasses.replace(
            summary,
            unsymbolized=unsymbolized,
            reported=len(reports),
            process_exited=snapshot.process_exited,
        ),
        interrupted=snapshot.interrupted or stopped,
        symbolization_interrupted=stopped,
    )


@contextlib.contextmanager
def _closing(files: FileSource) -> Iterator[None]:
    try:
        yield
    finally:
        files.close()


def _thread_report(
    thread: ThreadSnapshot,
    cfi: CfiSource,
    symbolizer: Symbolizer,
    options: DumpOptions,
    symbolize: bool,
    code_map: CodeMap,
) -> ThreadReport:
    pause_us = thread.pause_ns // 1000 if thread.attempted else None
    if thread.passive:
        pause_us = 0
    if thread.status is ThreadStatus.SKIPPED_BLOCKING_SYSCALL:
        number = thread.syscall.number if thread.syscall else None
        return ThreadReport(
            tid=thread.tid,
            name=thread.name,
            status=thread.status,
            syscall_name=syscall_name(number) if number is not None else None,
            syscall_number=number,
        )
    if thread.status is not ThreadStatus.OK or thread.regs is None:
        return ThreadReport(
            tid=thread.tid,
            name=thread.name,
            status=thread.status,
            pause_us=pause_us,
            error=thread.error,
        )
    result = unwind(thread, options.max_frames, cfi.row, cfi, code_map, cfi.problem)
    frames: List[SymbolizedFrame] = []
    for frame in result.frames:
        if symbolize:
            frames.extend(_symbolize_softly(symbolizer, frame))
        else:
            frames.append(symbolizer.unsymbolized(frame))
    bounds = (thread.stack_map.start, thread.stack_map.end) if thread.stack_map else None
    return ThreadReport(
        tid=thread.tid,
        name=thread.name,
        status=thread.status,
        frames=tuple(frames),
        physical_frames=len(result.frames),
        capture_method=result.capture_method,
        fp_status=result.fp_status,
        unwind_status=result.unwind_status,
        stack_bounds=bounds,
        pause_us=pause_us,
        error=result.error,
        recovered_frame_pointers=result.recovered_frame_pointers,
    )


def _symbolize_softly(symbolizer: Symbolizer, frame) -> Tuple[SymbolizedFrame, ...]:
    """Per-frame fail-soft: a parser error no layer anticipated costs this frame its name,
    never the dump (the object layers already turn every known parse error into "unknown")."""
    try:
        return symbolizer.symbolize(frame)
    except Exception:  # noqa: BLE001 - the last line of defence for one frame
        return (SymbolizedFrame(pc=frame.pc, function=None, module=None, module_offset=None),)


def _summarize(
    threads: Tuple[ThreadSnapshot, ...], elapsed_ns: int, cache_hits: int, cus_decoded: int
) -> Summary:
    def count(status: ThreadStatus) -> int:
        return sum(1 for t in threads if t.status is status)

    exited = count(ThreadStatus.THREAD_EXITED)
    errors = count(ThreadStatus.ATTACH_ERROR)
    return Summary(
        captured=count(ThreadStatus.OK),
        skipped=count(ThreadStatus.SKIPPED_BLOCKING_SYSCALL)
        + count(ThreadStatus.SKIPPED_RUNNING)
        + exited
        + errors,
        timed_out=count(ThreadStatus.TIMEOUT),
        remote_signal_attempts=sum(1 for t in threads if t.attempted),
        elapsed_ms=elapsed_ns // 1_000_000,
        max_pause_us=max((t.pause_ns // 1000 for t in threads if t.attempted), default=0),
        exited=exited,
        errors=errors,
        cache_hits=cache_hits,
        cus_decoded=cus_decoded,
        passive=sum(1 for t in threads if t.passive),
        foreign=sum(1 for t in threads if t.error.startswith(FOREIGN)),
    )
