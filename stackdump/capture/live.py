"""Capturing a live process: check the target, read /proc and pin its files before any
thread is stopped, then capture each thread, by a ptrace stop or in place, into a
`ProcessSnapshot`. Nothing here parses a binary or unwinds a stack.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional, Protocol, Tuple

from stackdump import collector, permissions, proc
from stackdump.arch import host
from stackdump.capture import maps_check
from stackdump.capture.pages import Pagemap
from stackdump.capture.passive import PassiveCapturer
from stackdump.capture.ptrace import Held, Signals, StopWindowPriority, Tracer
from stackdump.capture.remote import Buffers, RemoteMemory, StackCopier
from stackdump.capture.view import AfterCapture, ProcessView
from stackdump.elf.modules import VDSO, Lent, LiveFiles
from stackdump.errors import AlreadyTraced, NotUserProcess, PermissionDenied, ProcessNotFound
from stackdump.records import record
from stackdump.syscalls import (
    WAIT_OBJECT_CALLS,
    interrupted_by_stop,
    is_interrupt_sensitive,
    syscall_name,
)
from stackdump.types import (
    CaptureMode,
    CaptureOptions,
    FileSource,
    MemoryMap,
    ProcessSnapshot,
    SyscallState,
    ThreadContext,
    ThreadSnapshot,
    ThreadStatus,
    replaced,
)

FOREIGN = "not a thread of process "
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_EXIT_SETTLE_S = 0.005
# Open files a series may keep (`kept_files_limit`): at least what 100 threads need (what
# a default soft limit of 1,024 always allowed), at most what 10,000 threads need.
_KEPT_FILES = (320, 30_000)
# What else may be open at once: the pinned mapped files (elf/modules.LiveFiles, 512), each
# object's file and debug file, the disk cache's, the output and standard streams.
_OTHER_FILES = 1_088
_HOST = host()  # a live target runs on this machine's processor
_Program = Tuple[str, Optional[Tuple[str, ...]]]  # the executable's path, the command line

# progress(phase, done, total): phase is "capture" or "symbolization"; called between
# threads, never while one is stopped.
Progress = Callable[[str, int, int], None]
# should_stop(): asked between threads; True ends capture early (SIGINT, SIGTERM).
ShouldStop = Callable[[], bool]
# settle(files, maps, vdso) -> keep: called once /proc has been read; keep(thread) is applied
# to each thread as soon as it runs again, before the next is stopped, and what it returns is
# what the snapshot holds (the engine unwinds there and drops the stack copy).
Settle = Callable[
    [LiveFiles, Tuple[MemoryMap, ...], Optional[bytes]], Callable[[ThreadSnapshot], ThreadSnapshot]
]


class Recall(Protocol):
    """Threads a sample need not capture again (`capture/unchanged.py`)."""

    def start(self, tids: Iterable[int], read_ranges: Callable) -> None: ...

    def recall(self, tid: int) -> Optional[ThreadSnapshot]: ...

    def keep(
        self, tid: int, thread: ThreadSnapshot, copied: ThreadSnapshot, read: Callable
    ) -> None: ...

    def mark(self) -> int: ...

    def take_back(self, tids: Iterable[int], mark: int) -> None: ...


def resolve_target(pid: int, timeout_ms: int = 100) -> int:
    """Check the target can be dumped; return its thread-group id."""
    if not proc.process_exists(pid):
        raise ProcessNotFound(f"no such process: {pid}")
    status = proc.read_status(pid, None, ("Tgid",))
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


def kept_files_limit() -> int:
    """How many /proc files a series may keep open, from this process's soft limit on open
    files now (the command raises it to the hard one, at most 65,536: __main__.py): a sample
    reads two or three files of every thread, and opening one by its path costs more than
    reading it. 1,000 idle threads were ~22 ms of CPU a sample when only 100 threads' files
    could be kept."""
    least, most = _KEPT_FILES
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return least
    if soft == resource.RLIM_INFINITY:
        return most
    # Half of what is left: the estimate of the rest may be short.
    return max(least, min(most, (soft - _OTHER_FILES) // 2))


@record
class _MapsRead:
    """A series' last read of the maps: for (the thread read through, the thread ids
    then), and its layout (None: the kernel cannot be asked)."""

    key: Tuple[int, Tuple[int, ...]]
    maps: Tuple[MemoryMap, ...]
    layout: Optional[maps_check.Layout]


class Series:
    """What the captures of one process in a series (a profile, a watch) carry from one to
    the next. The first checks the target whole (`resolve_target`); each later one checks
    only what can change meanwhile: that the process still lives and no one else traces
    it, and that it is the same program (`proc.Leader.image`: an exec, or the pid taken
    by another process, ends the series with `TargetChanged`). The mapped files stay pinned
    while the maps, and the thread they are read through, stay the same: a sample of an
    unchanged process opens none. Close it (context manager) to release them."""

    def __init__(self) -> None:
        self.pid: Optional[int] = None
        self.image: Optional[Tuple[int, ...]] = None
        self._key: Optional[tuple] = None
        self._files: Optional[LiveFiles] = None
        # Threads a capture left seized (timed out): the next capture, or `reap()` between
        # captures, releases them as soon as they stop.
        self.held = Held()
        # Set up at the first stop of the series and kept until it ends (ptrace.Signals).
        self.signals = Signals()
        self._priority: Optional[StopWindowPriority] = None
        self.host = os.uname().nodename
        # The /proc files each capture reads again: the process's few, three of each thread
        # (capture/unchanged.py) and two more (comm, wchan) of each one captured, as many as
        # our limit on open files leaves room for (`kept_files_limit`). Past that a file is
        # opened for each read.
        self.kept = proc.KeptFiles(kept_files_limit())
        self._vdso: Optional[Tuple[Tuple[MemoryMap, ...], Optional[bytes]]] = None
        self._program: Optional[Tuple[tuple, _Program]] = None
        self._copier: Optional[Tuple[int, StackCopier]] = None
        self._maps: Optional[_MapsRead] = None
        self._query_maps: Optional[bool] = None  # whether the kernel has PROCMAP_QUERY

    def __enter__(self) -> Series:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        # One still not stopped stays seized until this thread exits (the kernel detaches
        # a tracer's threads then): at once for the command, which ends here.
        self.held.reap()
        self.signals.restore()
        if self._copier is not None:
            self._copier[1].memory.close()
            self._copier = None
        self._release_files()
        self.kept.close()

    def priority(self, realtime: bool) -> StopWindowPriority:
        """The stop windows' priority, kept across the series: the policy stackdump was
        started with is read at its first stop, not at each capture's."""
        if self._priority is None:
            self._priority = StopWindowPriority(realtime)
        return self._priority

    def reap(self) -> bool:
        """Release the threads left seized that have stopped since; whether any is still
        held (then look again soon: each is stopped until released)."""
        return self.held.reap()

    def _release_files(self) -> None:
        if self._files is not None:
            self._files.close()
        self._files = self._key = None

    def files(self, view: int, maps: Tuple[MemoryMap, ...]) -> Lent:
        if self._files is None or self._key != (view, maps):
            self._release_files()
            self._files, self._key = LiveFiles(view, maps), (view, maps)
        return Lent(self._files)

    def copier(
        self, view: int, maps: Tuple[MemoryMap, ...], make: Callable[[], StackCopier]
    ) -> StackCopier:
        """The stack copier (and the memory reader it holds) of the last capture while the
        maps, and the thread they are read through, stay the same: making them sorted the
        maps and looked for the main thread's stack at every sample."""
        kept = self._copier
        if kept is None or kept[0] != view or kept[1].source is not maps:
            if kept is not None:
                kept[1].memory.close()
            kept = self._copier = (view, make())
        return kept[1]

    def maps(
        self, pid: int, view: int, tids: List[int], reuse: bool
    ) -> Tuple[Tuple[MemoryMap, ...], Optional[maps_check.Layout]]:
        """The maps, read through thread `view`; with `reuse`, the last read's very tuple
        while the process has the same threads and the kernel can be asked whether they
        still hold (capture/maps_check.py). (maps, the layout to check the capture against
        with `maps_hold`; None when the kernel cannot be asked.)"""
        last, key = self._maps, (view, tuple(tids))
        if reuse and last is not None and last.key == key and last.layout is not None:
            return last.maps, last.layout
        maps = proc.read_maps(pid, view, self.kept)
        if self._query_maps is None:
            self._query_maps = self._can_query(proc.maps_path(pid, view))
        layout = maps_check.Layout(maps) if self._query_maps else None
        self._maps = _MapsRead(key, maps, layout)
        return maps, layout

    def _can_query(self, path: str) -> Optional[bool]:
        """Whether this kernel answers PROCMAP_QUERY (None: not known yet)."""
        fd = self.kept.descriptor(path)
        if fd is None:
            return None
        try:
            maps_check.MapsQuery(fd).find(0)
        except maps_check.Unsupported:
            return False
        except OSError:
            return None
        return True

    def maps_hold(
        self, pid: int, view: int, layout: maps_check.Layout, threads: List[ThreadSnapshot]
    ) -> bool:
        """Whether every address the threads used is still mapped as `layout` says; when
        not (or the kernel cannot tell), the next `maps` reads them afresh."""
        path = proc.maps_path(pid, view)
        fd = self.kept.descriptor(path)
        try:
            if fd is not None and maps_check.still_true(maps_check.MapsQuery(fd), layout, threads):
                return True
        except maps_check.Unsupported:
            self._query_maps = False
        except OSError:  # gone, or a descriptor of a thread that ended: a read will tell
            self.kept.forget(path)
        self.maps_changed()
        return False

    def maps_changed(self) -> None:
        """The last read missed a mapping a thread uses: the next capture reads them."""
        self._maps = None

    def vdso(self, maps: Tuple[MemoryMap, ...], read: Callable[[], Optional[bytes]]):
        """The vDSO's code, read again only when the maps changed: in one process, the same
        read-only mapping at the same place holds the same code."""
        if self._vdso is None or self._vdso[0] != maps:
            self._vdso = (maps, read())
        return self._vdso[1]

    def program(
        self, view: int, image: Optional[Tuple[int, ...]], read: Callable[[], _Program]
    ) -> _Program:
        """The executable's path and the command line, read at the series' first capture
        and again only when the program (`image`) or the thread read through changes: a
        profile's header is its first sample's, and the two reads were ~25 us of a sample."""
        if image is None or self._program is None or self._program[0] != (view, image):
            self._program = ((view, image), read())
        return self._program[1]

    def target(self, pid: int, timeout_ms: int) -> int:
        """The process to capture now (its thread-group id): checked whole the first
        time, then by `check` as each capture reads its main thread's state."""
        if self.pid is None:
            self.pid = resolve_target(pid, timeout_ms)
        return self.pid

    def check(self, pid: int, leader: proc.Leader, timeout_ms: int) -> None:
        """What can change between two captures: another tracer took the process
        (`AlreadyTraced`), or it is another program (`TargetChanged`)."""
        if leader.tracer and leader.tracer != os.getpid():
            tracer = _tracer_after(pid, timeout_ms)  # one holding it for a moment is waited for
            if tracer:
                raise AlreadyTraced(
                    f"process {pid} is now traced by process {proc.describe_process(tracer)} "
                    f"(TracerPid {tracer})"
                )
        if self.image is None:
            self.image = leader.image
        elif leader.image is not None and leader.image != self.image:
            raise TargetChanged(
                f"process {pid} runs another program than at the first sample (it called "
                "exec(), or exited and its pid was given to a new process)"
            )


class TargetChanged(ProcessNotFound):
    """A series' process is no longer the one it began with: what was captured of it before
    stands; nothing after belongs with it."""


def readable_maps(pid: int, view: int) -> Tuple[MemoryMap, ...]:
    """The process's memory map read through thread `view`; PermissionDenied (as a dump's)
    when the kernel will not show us its map or its files (another user's process without
    CAP_SYS_PTRACE), where every address would be named `??`."""
    where = f"/proc/{pid}/task/{view}"
    checks = (
        ("memory map", "maps", lambda p: os.close(os.open(p, os.O_RDONLY | os.O_CLOEXEC))),
        ("files", "root/", os.stat),
    )
    for what, path, check in checks:
        try:
            check(f"{where}/{path}")
        except PermissionError:
            raise PermissionDenied(
                f"not permitted to read the {what} of process {pid} (/proc/{pid}/{path})",
                help_text=permissions.help_text(pid),
            ) from None
        except OSError:
            pass  # gone meanwhile: an empty map, as read_maps gives
    return proc.read_maps(pid, view)


def _tracer_after(tgid: int, timeout_ms: int) -> int:
    """The process's tracer, if it still holds the main thread after `timeout_ms`: another
    stackdump or eu-stack holds a thread for microseconds, a debugger for good."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        tracer = proc.tracer_of(tgid)
        if tracer == os.getpid():
            # Ours: a thread killed while we held it stays linked to us until it is reaped
            # (sampling, the next capture of a process that died meanwhile).
            return 0
        if not tracer or time.monotonic() >= deadline:
            return tracer
        time.sleep(0.0002)


def capture_process(
    options: CaptureOptions,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
    settle: Optional[Settle] = None,
    *,
    after: AfterCapture,
    recall: Optional[Recall] = None,
    buffers: Optional[Buffers] = None,
    series: Optional[Series] = None,
) -> ProcessSnapshot:
    """Read /proc, pin the mapped files, then capture the threads one at a time; `after`
    (`runtimes.after_capture`) reads the runtimes' part once every thread runs again. The
    snapshot's `files` belong to the caller: `analyze` closes them. Sampling passes
    `recall` (with `settle`: threads that have not run since the last sample, counted from
    that capture), `buffers` (copy buffers to reuse) and `series` (`Series`)."""
    pid = (resolve_target if series is None else series.target)(options.pid, options.timeout_ms)
    started = time.perf_counter_ns()
    # A series' capture whose addresses the maps it used no longer describe (the series'
    # earlier read, or one the process changed during the capture) is taken again with the
    # maps read afresh (capture/maps_check.py), a few times at most.
    attempts = _MAPS_ATTEMPTS if series is not None and settle is not None else 1
    for attempt in range(attempts):
        c = _Capture(pid, options, buffers, series, reuse_maps=attempt == 0)
        mark = recall.mark() if recall is not None else 0
        # A cyclic-GC pass inside a stop window would stretch that thread's pause; capture
        # allocates little, so collection waits until every thread runs again.
        try:
            with collector.paused():
                vdso = c.vdso()
                keep = settle(c.files, c.maps, vdso) if settle is not None else None
                threads, interrupted = c.threads(keep, progress, should_stop, recall)
                if not c.maps_hold():
                    if attempt + 1 < attempts and not (interrupted or c.gone_or_replaced()):
                        if recall is not None:
                            recall.take_back([t.tid for t in c.fresh], mark)
                        c.files.close()
                        continue
                    c.notes.append(_MAPS_KEPT_CHANGING.format(pid=pid, attempts=attempt + 1))
                finished = c.finish(threads, interrupted, keep, after)
        except BaseException:
            c.files.close()
            raise
        finally:
            c.memory.close()
        return _snapshot(c, vdso, interrupted, finished, time.perf_counter_ns() - started)
    raise AssertionError("the last attempt is never taken again")


_MAPS_ATTEMPTS = 8
_MAPS_KEPT_CHANGING = (
    "the code mapped in process {pid} changed during each of {attempts} capture(s) of a "
    "sample: that sample's frames in code mapped or unmapped meanwhile may be named from "
    "the layout before"
)


def _snapshot(c: _Capture, vdso, interrupted: bool, finished, capture_ns: int) -> ProcessSnapshot:
    exec_seen, threads, coroutines, truncated, leaving = finished
    return ProcessSnapshot(
        pid=c.pid,
        exe=c.exe,
        maps=c.maps,
        threads=tuple(threads),
        vdso=vdso,
        capture_ns=capture_ns,
        interrupted=interrupted,
        thread_count=len(c.tids),
        process_exited=_process_exited(c.pid, threads, leaving),
        cmdline=c.cmdline,
        coroutines=coroutines,
        coroutines_truncated=truncated,
        files=c.files,
        options=c.options,
        exec_seen=exec_seen,
        host=c.host,
        notes=tuple(c.notes),
    )


class _Capture:
    """One live capture: what is read from /proc up front, before any thread is stopped
    (docs/FORMAT.md), and the readers and copiers that take each thread."""

    def __init__(
        self,
        pid: int,
        options: CaptureOptions,
        buffers: Optional[Buffers],
        series: Optional[Series] = None,
        reuse_maps: bool = False,
    ) -> None:
        self.pid, self.options = pid, options
        window = options.cpu_window_ms
        self.recent_cpu = _recent_cpu(pid, window) if window else {}
        # Threads first, then the maps: a thread listed was alive when its stack was mapped.
        self.process_tids = proc.list_tids(pid)
        self._series = series
        self._kept = kept = series.kept if series is not None else None
        if kept is not None and kept.full:
            kept.retain(_of_threads(pid, self.process_tids))
        leader = proc.leader_state(pid, kept)
        self.image = leader.image
        self.tids = list(options.thread_ids) if options.thread_ids else self.process_tids
        if not self.tids:
            raise ProcessNotFound(f"no such process: {pid}")
        view = pid if not leader.leaving else proc.live_thread(pid, self.process_tids)
        if series is not None:
            if view is None:  # the whole process has exited since the last capture
                raise ProcessNotFound(f"process {pid} has exited")
            series.check(pid, leader, options.timeout_ms)
        self.view = view or pid
        self._layout: Optional[maps_check.Layout] = None
        if series is None or options.coroutines:  # a runtime's readers look at every mapping
            self.maps = proc.read_maps(pid, self.view, kept)
        else:
            self.maps, self._layout = series.maps(pid, self.view, self.process_tids, reuse_maps)
        self.exe, self.cmdline = self._program(leader.image)
        if series is None:
            self.files: FileSource = LiveFiles(self.view, self.maps)
        else:
            self.files = series.files(self.view, self.maps)

        def copier() -> StackCopier:
            memory = RemoteMemory(self.view)
            return StackCopier(memory, self.maps, options.stack_bytes, _HOST.red_zone, buffers)

        self.copier = copier() if series is None else series.copier(self.view, self.maps, copier)
        self.memory = self.copier.memory
        self.passive = PassiveCapturer(pid, self.copier, options.timeout_ms, kept)
        self._held = series.held if series is not None else None
        self.host = series.host if series is not None else os.uname().nodename
        self._members = set(self.process_tids)
        self._contexts: Dict[ThreadContext, ThreadContext] = {}
        self.fresh: List[ThreadSnapshot] = []  # the threads captured now, not recalled
        self.notes: List[str] = []  # warnings for the report

    def gone_or_replaced(self) -> bool:
        """Whether the process is exiting or gone, or called exec() since the capture
        began: its maps then say nothing of it, and `finish` tells what happened."""
        leader = proc.leader_state(self.pid, self._kept, with_tracer=False)
        return leader.leaving or leader.image != self.image

    def maps_hold(self) -> bool:
        """Whether the maps, when a series' earlier read, still describe every address the
        threads captured now used (`Series.maps_hold`)."""
        if self._layout is None or self._series is None:
            return True
        return self._series.maps_hold(self.pid, self.view, self._layout, self.fresh)

    def _program(self, image: Optional[Tuple[int, ...]]) -> _Program:
        def read() -> _Program:
            return proc.read_exe(self.pid, self.view), proc.read_cmdline(self.pid, self._kept)

        if self._series is None:
            return read()
        return self._series.program(self.view, image, read)

    def threads(
        self, keep, progress, should_stop, recall: Optional[Recall]
    ) -> Tuple[List[ThreadSnapshot], bool]:
        """Every selected thread, one at a time (each passed to `keep` at once), and
        whether `should_stop` cut the capture short."""
        threads: List[ThreadSnapshot] = []
        options = self.options
        if recall is not None and keep is not None:
            recall.start(self.tids, self.memory.read_ranges)
        else:
            recall = None
        series = self._series
        signals = series.signals if series is not None else None
        priority = series.priority(options.realtime) if series is not None else None
        tracer = Tracer(
            self.pid, self.copier, options.timeout_ms, options.realtime, self._held, signals,
            priority,
        )  # fmt: skip
        with tracer:
            for done, tid in enumerate(self.tids):
                if should_stop is not None and should_stop():
                    return threads, True
                earlier = recall.recall(tid) if recall is not None else None
                if earlier is not None:
                    threads.append(earlier)
                elif tid in self._members:
                    copied = self._member(tracer, tid)
                    thread = keep(copied) if keep else copied
                    if recall is not None:
                        recall.keep(tid, thread, copied, self.memory.read)
                    threads.append(thread)
                    self.fresh.append(thread)
                else:
                    thread = _foreign(self.pid, tid)
                    threads.append(keep(thread) if keep is not None else thread)
                if progress is not None:
                    progress("capture", done + 1, len(self.tids))
        return threads, False

    def _member(self, tracer: Tracer, tid: int) -> ThreadSnapshot:
        pid, options = self.pid, self.options
        kept = self._kept
        syscall = proc.read_syscall(pid, tid, kept)
        # Read before the stop: stopped, every thread would look stopped.
        context = _context(pid, tid, syscall, options, self.memory, self.recent_cpu.get(tid), kept)
        # Threads of a pool are mostly alike (S, same wchan, no CPU): share one.
        if context is not None:
            context = self._contexts.setdefault(context, context)
        name = proc.read_comm(pid, tid, kept)  # here, not up front: sampling skips most threads
        state = context.state if context is not None else None
        thread = _capture_one(tracer, self.passive, pid, tid, name, options, syscall, kept, state)
        if _stack_unmapped(thread):
            thread = _locate_stack(thread, pid, self.view, self.copier)
            if self._series is not None:
                self._series.maps_changed()
        if context is not None and thread.name != "?":
            thread = replaced(thread, context=context)
        return thread

    def finish(self, threads: List[ThreadSnapshot], interrupted: bool, keep, after):
        """Once every thread runs again: whether the process called exec() meanwhile (the
        threads captured after it marked), the runtimes' part (`after`) unless it did,
        and whether its main thread was leaving at the end. (exec seen, threads,
        coroutines, whether they were cut short, leaving)"""
        pid = self.pid
        # The exec check's, and the exit check's (who traces it matters only as one begins).
        leader = proc.leader_state(pid, self._kept, with_tracer=False)
        exec_seen, threads = _exec_check(pid, self.image, leader.image, self.maps, threads)
        # After an exec the memory is the new program's, which `maps` does not describe.
        coroutines, truncated = None, False
        if not interrupted and not exec_seen:
            # Only memory is read from here on.
            threads, coroutines, truncated = after(
                self.process_view(), threads, self.options, keep, self.pagemap
            )
            if coroutines is not None:  # read for a while: the process may be gone now
                leader = proc.leader_state(pid, self._kept, with_tracer=False)
        return exec_seen, threads, coroutines, truncated, leader.leaving

    def vdso(self) -> Optional[bytes]:
        if self._series is None:
            return _read_vdso(self.memory, self.maps)
        return self._series.vdso(self.maps, lambda: _read_vdso(self.memory, self.maps))

    def process_view(self) -> ProcessView:
        now_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        return ProcessView(
            self.memory, self.maps, self.files, self.pid, tuple(self.process_tids), now_ns
        )

    def pagemap(self) -> Pagemap:
        return Pagemap(f"/proc/{self.memory.pid}/pagemap")


def _of_threads(pid: int, tids: Iterable[int]) -> Callable[[str], bool]:
    """Whether a /proc path is not that of a thread other than `tids` (a series' kept files
    of threads that have exited are let go once none is left to keep another)."""
    task = f"{proc.PROC}/{pid}/task/"
    alive = {f"{task}{tid}/" for tid in tids}

    def wanted(path: str) -> bool:
        if not path.startswith(task):
            return True
        return path[: path.index("/", len(task)) + 1] in alive

    return wanted


def _after_exec(thread: ThreadSnapshot, maps: Tuple[MemoryMap, ...]) -> ThreadSnapshot:
    """A thread whose pc is in none of the old program's code was captured in the new one:
    its registers and stack cannot be read with the maps read before (an error, not a
    stack). One whose pc is keeps its stack: it was captured before the exec."""
    if thread.status is not ThreadStatus.OK or thread.regs is None:
        return thread
    pc = thread.regs.pc
    if any(m.start <= pc < m.end and m.executable for m in maps):
        return thread
    return ThreadSnapshot(
        tid=thread.tid,
        name=thread.name,
        status=ThreadStatus.ATTACH_ERROR,
        pause_ns=thread.pause_ns,
        attempted=thread.attempted,
        syscall=thread.syscall,
        error="captured after the process called exec(): its registers belong to the new "
        "program, which the memory map read before does not describe",
        context=thread.context,
    )


def _process_exited(pid: int, threads: List[ThreadSnapshot], leader_leaving: bool) -> bool:
    """Whether the process was gone when capture ended (`leader_leaving`: its main thread
    was, as capture ended). When threads vanished during capture, a thread of a process
    being killed can still look alive for a moment (it has taken its SIGKILL and not yet
    marked itself exiting): look again shortly."""
    if leader_leaving and proc.live_thread(pid) is None:
        return True
    if any(t.status is ThreadStatus.THREAD_EXITED and t.attempted for t in threads):
        time.sleep(_EXIT_SETTLE_S)
        return proc.live_thread(pid) is None
    return False


def _exec_check(pid: int, image, image_now, maps, threads: List[ThreadSnapshot]):
    """(the program the process runs now when it called exec() during the capture, else
    '', the threads with those captured after it marked). `image`, `image_now`:
    `proc.Leader.image` as capture began and as it ended."""
    if image is None or image_now in (image, None):
        return "", threads
    return proc.read_exe(pid), [_after_exec(t, maps) for t in threads]


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
    options: CaptureOptions,
    syscall: Optional[SyscallState],
    kept: Optional[proc.KeptFiles] = None,
    state: Optional[str] = None,
) -> ThreadSnapshot:
    """`state`: the thread's state letter as its stat file said just before, if read."""
    # A name read means the task was there: /proc/PID/task/TID is only a thread of PID's.
    if name is None:
        return ThreadSnapshot(tid=tid, name="?", status=ThreadStatus.THREAD_EXITED)
    if tid == pid and (state or proc.thread_state(pid, tid, kept)) == "Z":
        # A main thread that called pthread_exit stays a zombie while the others run (any
        # other thread is released as it exits): there is nothing to stop, and seizing it
        # would fail with EPERM.
        return ThreadSnapshot(
            tid=tid,
            name=name,
            status=ThreadStatus.THREAD_EXITED,
            error="the main thread has exited (a zombie); the process lives on in its other "
            "threads",
        )
    needs_syscall = options.skip_blocking_syscalls or options.capture_mode is not CaptureMode.PTRACE
    if syscall is None and needs_syscall:
        if not proc.thread_exists(pid, tid):
            return ThreadSnapshot(tid=tid, name=name, status=ThreadStatus.THREAD_EXITED)
        # There but unreadable: the same ptrace access check failed. Stopping it will
        # fail too, with the full explanation; passive capture explains it here.
        if options.capture_mode is CaptureMode.PASSIVE:
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
    if options.capture_mode is CaptureMode.PASSIVE:
        return passive.capture(tid, name, syscall)
    if (
        options.capture_mode is CaptureMode.AUTO
        and syscall is not None
        and _stop_would_interrupt(pid, syscall)
    ):
        return passive.capture(tid, name, syscall)
    return tracer.capture(tid, name, syscall)


def _context(
    pid: int,
    tid: int,
    syscall: Optional[SyscallState],
    options: CaptureOptions,
    memory: RemoteMemory,
    recent_cpu_ms: Optional[int],
    kept: Optional[proc.KeptFiles] = None,
) -> Optional[ThreadContext]:
    stat = proc.read_stat(pid, tid, kept)
    if stat is None:
        return None
    state, ticks = stat
    futex = None
    name = (
        syscall_name(syscall.number, _HOST)
        if syscall is not None and not syscall.running and syscall.number is not None
        else None
    )
    wait_object = syscall.args[0] if name in WAIT_OBJECT_CALLS and syscall.args else None
    if name == "futex" and syscall.args:
        # The futex word and the three after it: for a glibc mutex, its owner's TID.
        words = memory.read(syscall.args[0], 16)
        if words and len(words) == 16:
            futex = (syscall.args[0], words)
    return ThreadContext(
        state=sys.intern(state),
        wchan=proc.read_wchan(pid, tid, kept),
        cpu_ms=ticks * 1000 // _CLOCK_TICKS,
        recent_cpu_ms=recent_cpu_ms,
        kernel_stack=proc.read_kernel_stack(pid, tid) if options.kernel_stacks else None,
        futex=futex,
        wait_object=wait_object,
    )


def _recent_cpu(pid: int, window_ms: int) -> Dict[int, int]:
    """CPU milliseconds each thread used over `window_ms`, measured before any thread is
    touched: what `top -H` would show."""
    before = {tid: proc.read_stat(pid, tid) for tid in proc.list_tids(pid)}
    time.sleep(window_ms / 1000)
    used = {}
    for tid, first in before.items():
        second = proc.read_stat(pid, tid)
        if first is not None and second is not None:
            used[tid] = max(0, second[1] - first[1]) * 1000 // _CLOCK_TICKS
    return used


def _stop_would_interrupt(pid: int, syscall: SyscallState) -> bool:
    if syscall.running or syscall.number is None or syscall.number < 0:
        return False
    first_arg = syscall.args[0] if syscall.args else -1
    return interrupted_by_stop(syscall.number, first_arg, lambda fd: proc.fd_is_socket(pid, fd))
