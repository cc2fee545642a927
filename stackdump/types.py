"""Frozen data that flows between the layers: capture -> unwind -> symbols -> report.

Addresses are plain ints everywhere; formatters print them as hex.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import struct
from dataclasses import field
from typing import Any, Callable, Dict, Mapping, Optional, Protocol, Tuple

from stackdump.arch import Arch
from stackdump.records import frozen, record

_WORD = struct.Struct("<Q")


def replaced(record_: Any, **changes: Any) -> Any:
    """`dataclasses.replace` for a slotted record, ~2.5x cheaper (each slot read and set by
    its own descriptor, no field introspection, no `__init__`): a settled thread is one per
    coroutine, 100,000 of them."""
    slots = _slot_access(type(record_))
    if not slots:
        return dataclasses.replace(record_, **changes)
    new = object.__new__(type(record_))
    for name, set_slot, get_slot in slots:
        set_slot(new, changes[name] if name in changes else get_slot(record_))
    return new


@functools.cache
def _slot_access(cls: type) -> Tuple[Tuple[str, Callable, Callable], ...]:
    """(name, setter, getter) of each slot of a slotted record class; () for one without."""
    return tuple(
        (name, cls.__dict__[name].__set__, cls.__dict__[name].__get__)
        for name in getattr(cls, "__slots__", ())
    )


class LocationMode(enum.Enum):
    """How much DWARF work symbolization does (folly / ClickHouse `LocationInfoMode`)."""

    DISABLED = "DISABLED"
    FAST = "FAST"
    FULL = "FULL"
    FULL_WITH_INLINE = "FULL_WITH_INLINE"


class ThreadStatus(enum.Enum):
    OK = "ok"
    SKIPPED_BLOCKING_SYSCALL = "skipped_blocking_syscall"
    THREAD_EXITED = "thread_exited"
    TIMEOUT = "timeout"
    ATTACH_ERROR = "attach_error"
    SKIPPED_RUNNING = "skipped_running"


class FpStatus(enum.Enum):
    """How the plain frame-pointer walk ended (Doris's checks)."""

    END_OF_CHAIN = "end_of_chain"
    NO_STACK_RANGE = "no_stack_range"
    INVALID_FRAME_POINTER = "invalid_frame_pointer"
    FRAME_LIMIT = "frame_limit"
    STACK_COPY_LIMIT = "stack_copy_limit"


class UnwindStatus(enum.Enum):
    """How the CFI (hybrid) walk ended."""

    END_OF_STACK = "end_of_stack"
    NO_CFI = "no_cfi"
    STEP_ERROR = "step_error"
    FRAME_LIMIT = "frame_limit"
    STACK_COPY_LIMIT = "stack_copy_limit"
    MISSING_REGISTER = "missing_register"  # passive capture: a register no copy could recover
    BAD_CFI = "bad_cfi"  # the CFI that describes a pc is malformed: the walk stops there


class CaptureMethod(enum.Enum):
    """Where a thread's printed frames came from."""

    FRAME_POINTER = "frame_pointer"  # the frame-pointer walk alone
    DWARF_CFI = "dwarf_cfi"  # CFI supplied frames the frame-pointer walk could not
    PASSIVE_SYSCALL = "passive_syscall"  # copied while blocked, never stopped
    SAVED_CONTEXT = "saved_context"  # a suspended coroutine: the registers its switch saved


class CaptureMode(enum.Enum):
    """How threads are captured (README "Never harming the target")."""

    AUTO = "auto"  # stop threads, except those blocked in calls a stop would interrupt
    PTRACE = "ptrace"  # stop every thread
    PASSIVE = "passive"  # stop none: blocked threads are copied in place, running ones skipped
    CORE = "core"  # nothing to stop: a core file (capture/core.py)


@frozen
class CaptureOptions:
    """How a live process is captured (stackdump.capture.live)."""

    pid: int
    thread_ids: Optional[Tuple[int, ...]] = None  # None: every thread
    timeout_ms: int = 100
    skip_blocking_syscalls: bool = False
    stack_bytes: int = 262144
    capture_mode: CaptureMode = CaptureMode.AUTO
    realtime: bool = True  # SCHED_FIFO during each stop window (capture.ptrace)
    kernel_stacks: bool = False  # also read /proc/PID/task/TID/stack (root)
    coroutines: bool = False  # also list the runtimes' suspended coroutines (runtimes/)
    cpu_window_ms: int = 0  # measure each thread's CPU over this window before capture


@frozen
class AnalysisOptions:
    """How snapshots are unwound and symbolized (engine.Analyzer)."""

    mode: LocationMode = LocationMode.FAST
    max_frames: int = 256
    debug_dirs: Tuple[str, ...] = ()
    cache_dir: Optional[str] = None  # None: no disk cache
    debuginfod: Optional[DebuginfodSettings] = None  # None: no downloads
    # Coroutines parked alike, and threads copied in place alike, are unwound once and the
    # rest checked against that walk (unwind/traces.py); False walks every one (for tests
    # that compare the two).
    remember_unwinds: bool = True


@frozen
class DebuginfodSettings:
    """Where and how debug files are downloaded (elf/debuginfod.py), from the environment
    libdebuginfod reads."""

    urls: Tuple[str, ...]
    cache_path: str
    timeout_s: float = 90.0
    max_size: int = 0  # bytes; 0: no limit


@record
class MemoryMap:
    """One line of /proc/<pid>/maps."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str

    @property
    def readable(self) -> bool:
        return self.perms[:1] == "r"

    @property
    def writable(self) -> bool:
        return self.perms[1:2] == "w"

    @property
    def executable(self) -> bool:
        return self.perms[2:3] == "x"

    @property
    def is_file(self) -> bool:
        return self.inode != 0 and self.path.startswith("/")

    @property
    def deleted(self) -> bool:
        return self.path.endswith(" (deleted)")

    @property
    def file_path(self) -> str:
        """The path without the kernel's " (deleted)" marker."""
        return self.path[: -len(" (deleted)")] if self.deleted else self.path

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end


@record
class SyscallState:
    """/proc/<pid>/task/<tid>/syscall: the call a thread is blocked in, or that it runs."""

    running: bool
    number: Optional[int]  # None when running, -1 when blocked outside a syscall
    args: Tuple[int, ...] = ()
    sp: int = 0
    pc: int = 0


@record
class Registers:
    """The register values a source knows, by DWARF register number, and the processor they
    belong to. A ptrace stop knows them all; a passive copy only pc and sp; a suspended
    coroutine the ones its switch saved. pc and sp are always known."""

    # Packed: one 64-bit word per DWARF register number, and a bit per known register. A
    # dump of 10,000 threads keeps 10,000 of these (a tuple of pairs cost 1.7 KB each).
    words: bytes
    known_mask: int
    arch: Arch  # every source knows its processor: no default that could be the wrong one

    @classmethod
    def of(cls, values: Mapping[int, int], arch: Arch) -> Registers:
        count = max(values, default=-1) + 1
        words = bytearray(8 * count)
        mask = 0
        for reg, value in values.items():
            struct.pack_into("<Q", words, 8 * reg, value & 0xFFFF_FFFF_FFFF_FFFF)
            mask |= 1 << reg
        return cls(bytes(words), mask, arch)

    @classmethod
    def packer(cls, regs: Tuple[int, ...], arch: Arch) -> Callable[..., Registers]:
        """Registers from the values of `regs`, in that order, packed by one struct made
        here: a coroutine's saved context is the same few registers 100,000 times."""
        order = sorted(range(len(regs)), key=lambda i: regs[i])
        layout, at = "<", 0
        for i in order:
            layout += f"{8 * (regs[i] - at)}xQ" if regs[i] > at else "Q"
            at = regs[i] + 1
        pack = struct.Struct(layout).pack
        mask = sum(1 << reg for reg in regs)
        word = 0xFFFF_FFFF_FFFF_FFFF

        def packed(*values: int) -> Registers:
            return cls(pack(*(values[i] & word for i in order)), mask, arch)

        return packed

    def as_dict(self) -> Dict[int, int]:
        values = {}
        mask, words = self.known_mask, self.words
        while mask:
            bit = mask & -mask
            reg = bit.bit_length() - 1
            values[reg] = _WORD.unpack_from(words, 8 * reg)[0]
            mask ^= bit
        return values

    def get(self, reg: int) -> Optional[int]:
        if not self.known_mask >> reg & 1:
            return None
        return _WORD.unpack_from(self.words, 8 * reg)[0]

    @property
    def pc(self) -> int:
        value = self.get(self.arch.pc)
        assert value is not None, "every source knows pc"
        return value

    @property
    def sp(self) -> int:
        value = self.get(self.arch.sp)
        assert value is not None, "every source knows sp"
        return value

    @property
    def fp(self) -> Optional[int]:
        return self.get(self.arch.fp)


@record
class ThreadContext:
    """What /proc says of a thread just before it is captured: what it was doing, not its
    stack."""

    state: str  # /proc/PID/task/TID/stat's state letter: R, S, D, T, t, Z, ...
    wchan: Optional[str]  # the kernel function it sleeps in, where the kernel shows one
    cpu_ms: int  # user + system time since it started
    recent_cpu_ms: Optional[int] = None  # CPU used in the window before capture, if measured
    kernel_stack: Optional[Tuple[str, ...]] = None  # innermost first, as the kernel names them
    # A futex wait: the futex's address and the 16 bytes there, read while the thread waited
    # (glibc's mutex: lock, count, owner TID, users).
    futex: Optional[Tuple[int, bytes]] = None
    # The first argument of the system call it is blocked in, where that names what it waits
    # on: the futex's address, or the descriptor it reads, writes or polls (`--watch`).
    wait_object: Optional[int] = None


@record
class ThreadSnapshot:
    """What capture copied out of one thread while it was stopped, plus its outcome."""

    tid: int
    name: str
    status: ThreadStatus
    regs: Optional[Registers] = None
    stack_map: Optional[MemoryMap] = None
    stack_base: int = 0  # target address of stack[0]
    stack: bytes = b""
    pause_ns: int = 0
    attempted: bool = False  # stackdump tried to stop this thread
    syscall: Optional[SyscallState] = None
    error: str = ""
    # (target address, bytes, mapping) of further stack regions: the thread's own stack when
    # it was stopped on a signal alternate stack.
    extra_stacks: Tuple[Tuple[int, bytes, MemoryMap], ...] = ()
    # Copied while blocked, never stopped: only pc and sp in `regs` are known.
    passive: bool = False
    # The frames, when the stack was unwound as soon as the thread ran again and its copy
    # released (`stack` and `extra_stacks` are then empty): see engine.Analyzer.settle.
    unwound: Optional[UnwindResult] = None
    context: Optional[ThreadContext] = None
    coroutine: str = ""  # "fiber" for a suspended coroutine (`tid` is then its handle)
    coroutine_id: Optional[int] = None  # the runtime's own id (a bthread_t), when read
    entry: Optional[int] = None  # the coroutine's entry function, when read
    running_coroutine: Optional[int] = None  # a worker thread: the bthread it was running
    # Where the thread's own stack ends, above its frames: its thread pointer (glibc and
    # musl put the thread's descriptor at the top of its stack), the [stack] mapping's end
    # for the main thread; 0 when not known (a thread copied in place).
    stack_top: int = 0
    # Its innermost pc is where a call returns (a saved context): named by the call, at
    # pc-1, as the runtime's own tracebacks name it, unless it is its function's entry (a
    # coroutine that never ran).
    pc_after_call: bool = False
    # Code addresses the analysis names for the runtime, by key: each such key's value in
    # `runtime_keys` becomes "FUNCTION at FILE:LINE" (where a coroutine was created).
    call_sites: Tuple[Tuple[str, int], ...] = ()
    # What a language runtime says of it, in order (`runtimes/`), and which of those keys
    # a group of threads or coroutines must share (not ids, not times).
    runtime_keys: Tuple[Tuple[str, str], ...] = ()
    group_keys: Tuple[str, ...] = ()
    # Its group lists the runtime's ids, as ranges (there may be 100,000), not handles.
    ids_as_ranges: bool = False


class FileSource(Protocol):
    """Where a snapshot's files are read from (elf.modules.LiveFiles, HostFiles): a path
    to read each mapped object from, and the file-system roots to look for debug files
    under, the target's first ('' is this machine's)."""

    roots: Tuple[str, ...]

    def path(self, module: Any) -> Optional[str]: ...

    def close(self) -> None: ...


@frozen
class CoreInfo:
    """What a core file says of the process's end: for the report's header."""

    path: str
    signal: int  # the signal that killed it (0 for a gcore of a live process)
    signal_code: int = 0
    fault_address: Optional[int] = None  # si_addr, for SIGSEGV, SIGBUS, SIGILL, SIGFPE
    sender: Optional[Tuple[int, int]] = None  # (pid, uid) of the process that sent it
    names_files: bool = True  # the core has an NT_FILE note (qemu-user's cores have none)
    sysroot: str = ""  # --sysroot, as given
    signal_thread: int = 0  # the thread that received it (the first thread in the core)
    problems: Tuple[str, ...] = ()  # what the file lacks (truncated, malformed notes)


@frozen
class ProcessSnapshot:
    pid: int
    exe: str
    maps: Tuple[MemoryMap, ...]
    threads: Tuple[ThreadSnapshot, ...]
    vdso: Optional[bytes]
    capture_ns: int
    interrupted: bool = False  # capture ended early on request: threads holds the captured
    thread_count: int = 0  # threads selected (all the process had, or --thread-id's)
    process_exited: bool = False  # the process was gone when capture ended
    cmdline: Optional[Tuple[str, ...]] = None  # the process's argv as it shows it now
    coroutines: Optional[Tuple[ThreadSnapshot, ...]] = None  # None: not looked for
    coroutines_truncated: bool = False  # the search stopped at its bounds
    # Where its files are read from; None: this machine's paths (elf.modules.HostFiles).
    files: Optional[FileSource] = field(default=None, compare=False, repr=False)
    options: Optional[CaptureOptions] = None  # how it was captured, for the report header
    core: Optional[CoreInfo] = None  # the snapshot is a core file's
    # The program the process exec()'d into during capture (its path), or "": the threads
    # captured after it are attach_error, the rest belong to `exe`.
    exec_seen: str = ""
    host: str = ""  # the node name of the machine a live capture ran on
    notes: Tuple[str, ...] = ()  # warnings of the capture, for the report's


def lookup_address(pc: int, activation: bool) -> int:
    """The address to look a frame up at, for CFI and for names alike: a return address
    (every frame but one where execution stands: the innermost, one a signal interrupted, a
    signal trampoline) at pc-1, so a call that ends a function stays in its caller."""
    return pc if activation or pc == 0 else pc - 1


@record
class Frame:
    """One physical frame found by unwinding.

    `activation` marks frames whose pc is where execution stands (the innermost frame and a
    frame interrupted by a signal) rather than a return address.
    """

    pc: int
    sp: int = 0
    cfa: int = 0
    method: str = "frame_pointer"
    activation: bool = False
    trampoline: bool = False  # a signal trampoline (__restore_rt): its pc is its own start

    @property
    def lookup_pc(self) -> int:
        return lookup_address(self.pc, self.activation or self.trampoline)


@record
class UnwindResult:
    frames: Tuple[Frame, ...]
    capture_method: CaptureMethod
    fp_status: Optional[FpStatus]  # None: no frame-pointer walk ran (passive capture)
    unwind_status: Optional[UnwindStatus] = None
    error: str = ""
    recovered_frame_pointers: int = 0  # frame records found on the stack (passive capture)


@record
class InlinedCall:
    """A function inlined at a physical frame's pc, and where in the source execution
    stands inside it."""

    function: Optional[str]
    file: Optional[str]
    line: Optional[int]


@record
class SymbolizedFrame:
    """One physical frame (one pc), with the functions inlined at it nested inside."""

    pc: int
    function: Optional[str]
    module: Optional[str]  # path as the target sees it; "[vdso]" for the vDSO
    module_offset: Optional[int]  # ELF virtual address of pc, what addr2line -e wants
    file: Optional[str] = None
    line: Optional[int] = None
    inlined: Tuple[InlinedCall, ...] = ()  # innermost first (FULL_WITH_INLINE)
    function_offset: Optional[int] = None  # pc minus the start of its ELF symbol


@record
class ThreadReport:
    tid: int
    name: str
    status: ThreadStatus
    frames: Tuple[SymbolizedFrame, ...] = ()  # physical frames, innermost first
    syscall_name: Optional[str] = None
    syscall_number: Optional[int] = None
    capture_method: Optional[CaptureMethod] = None
    fp_status: Optional[FpStatus] = None
    unwind_status: Optional[UnwindStatus] = None
    stack_bounds: Optional[Tuple[int, int]] = None
    pause_us: Optional[int] = None
    error: str = ""
    recovered_frame_pointers: int = 0
    context: Optional[ThreadContext] = None
    blocked_in: Optional[str] = None  # the syscall a blocked thread was in (any status)
    waits_for_mutex: Optional[int] = None  # address of the pthread mutex it waits for
    mutex_holder: Optional[int] = None  # TID the mutex names as its owner (0: none)
    coroutine: str = ""  # "fiber": a suspended coroutine, `tid` its saved stack pointer
    coroutine_id: Optional[int] = None  # the runtime's own id (a bthread_t), when read
    entry_function: Optional[str] = None  # its entry function, named
    running_coroutine: Optional[int] = None  # a worker thread: the bthread it was running
    signal: Optional[str] = None  # a core's thread that received the fatal signal: its name
    runtime_keys: Tuple[Tuple[str, str], ...] = ()  # a language runtime's own words
    group_keys: Tuple[str, ...] = ()  # which of them a group shares
    ids_as_ranges: bool = False  # a group lists coroutine_ids as ranges, not handles

    @property
    def physical_frames(self) -> int:
        return len(self.frames)


@record
class ModuleEntry:
    """A mapped object that frames point into (what JSON and pprof call a mapping)."""

    path: str  # as the target sees it; "[vdso]" for the vDSO
    start: int  # its lowest mapped address
    end: int  # its highest
    offset: int  # the file offset mapped at `start`
    build_id: Optional[str]
    # What was found to name its frames: "symtab" (a full symbol table, in the file or its
    # debug file), "dynsym" (exported functions only), "minidebuginfo", "none".
    symbols: str = "none"
    debug_file: Optional[str] = None  # the separate debug file used, if any
    dwarf: bool = False  # file:line information available (in the file or the debug file)
    frames: int = 0  # frames of the report in this object
    unknown_frames: int = 0  # of which no function name was found
    fix: Optional[str] = None  # how to get its symbols, when it lacks them
    file_found: bool = True  # the object's file was found (a core's may be elsewhere)


@frozen
class ReportHeader:
    pid: int
    exe: str
    thread_count: int
    timeout_ms: int
    mode: LocationMode
    skip_blocking_syscalls: bool
    unwinder: str
    capture: CaptureMode = CaptureMode.AUTO
    cmdline: Optional[Tuple[str, ...]] = None
    core: Optional[CoreInfo] = None
    host: str = ""  # the machine a live process was captured on (its node name); "" for a core


@frozen
class Summary:
    captured: int
    skipped: int
    timed_out: int
    remote_signal_attempts: int
    elapsed_ms: int
    max_pause_us: int
    exited: int
    errors: int
    cache_hits: int = 0  # entries served from the disk cache
    cus_decoded: int = 0  # DWARF line programs decoded in this dump
    passive: int = 0  # threads copied without being stopped
    unsymbolized: int = 0  # frames printed raw because symbolization was interrupted
    reported: int = 0  # thread sections in the report (fewer than thread_count if interrupted)
    process_exited: bool = False  # the process exited during the dump
    foreign: int = 0  # --thread-id values that were not threads of the process
    exec_seen: str = ""  # the process exec()'d this program during the dump


@frozen
class Report:
    header: ReportHeader
    threads: Tuple[ThreadReport, ...]
    summary: Summary
    modules: Tuple[ModuleEntry, ...] = ()  # every object a frame points into, by address
    interrupted: bool = False  # SIGINT/SIGTERM cut capture or symbolization short
    symbolization_interrupted: bool = False
    # Cycles of threads each waiting for a mutex the next holds, each from its lowest TID.
    deadlocks: Tuple[Tuple[int, ...], ...] = ()
    coroutines: Optional[Tuple[ThreadReport, ...]] = None  # None: --coroutines not asked
    coroutines_truncated: bool = False
    # For stderr, not the report: files found but refused, a cache not used (notes.Notes).
    warnings: Tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        s = self.summary
        # skipped_running under auto capture: it gave up on a thread it chose not to stop;
        # under --capture passive the thread was skipped as asked.
        gave_up = self.header.capture is CaptureMode.AUTO and any(
            t.status is ThreadStatus.SKIPPED_RUNNING for t in self.threads
        )
        return (
            s.timed_out > 0
            or s.errors > 0
            or s.process_exited
            or s.foreign > 0
            or gave_up
            or bool(s.exec_seen)
            or bool(self.header.core is not None and self.header.core.problems)
        )
