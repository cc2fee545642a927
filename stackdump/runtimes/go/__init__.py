"""Go as a runtime plug-in: a Go program is found by its executable's `.gopclntab`; its threads
get the goroutine each serves (`goroutines.py`); its goroutines are listed with
`--coroutines`; its code is unwound and named by the runtime's own tables (`pclntab.py`),
also in a binary built without symbols, DWARF or CFI; and its stacks end where Go's own
tracebacks end them.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from stackdump.arch import AARCH64, X86_64, Arch, aarch64, for_elf_machine, x86_64
from stackdump.elf.store import LoadedObject
from stackdump.runtimes.base import MAX_COROUTINES, Coroutines, Found, ProcessView, Runtime
from stackdump.runtimes.go.names import SYMBOLS
from stackdump.runtimes.go.pclntab import GoTable, go_table
from stackdump.types import (
    CaptureOptions,
    Frame,
    InlinedCall,
    LocationMode,
    SymbolizedFrame,
    ThreadSnapshot,
)
from stackdump.unwind.cfi import OFFSET, UNDEFINED, CfiRow

if TYPE_CHECKING:
    from stackdump.runtimes.go.goroutines import GoRuntime

# Where the runtime's tracebacks stop: a thread's first frame (mstart, rt0_go), a goroutine's
# first (goexit), and the switches to the g0 stack (mcall, morestack, systemstack, and
# asmcgocall, where a cgo call's C code runs): runtime/traceback.go, topofstack.
_STACK_TOPS = frozenset(
    ("runtime.mstart", "runtime.rt0_go", "runtime.goexit", "runtime.mcall", "runtime.morestack",
     "runtime.systemstack", "runtime.asmcgocall")
)  # fmt: skip


# Go's wait reasons for a goroutine parked to take a lock (runtime/runtime2.go).
_LOCK_WAITS = frozenset(
    {"semacquire", "sync.Mutex.Lock", "sync.RWMutex.Lock", "sync.RWMutex.RLock"}
)


class Go(Runtime):
    name = "go"
    coroutines = "Go's goroutines"

    def find(self, process: ProcessView) -> Optional[Found]:
        exe = process.executable()
        if exe is None:
            return None
        for elf, found in process.objects_defining((exe,), set(SYMBOLS), set(), ".gopclntab"):
            bias = found.pop("")
            runtime = _goroutines().find_runtime(
                process.memory, elf, bias, found, process.pid, process.tids
            )
            return _GoProcess(process, runtime) if runtime is not None else None
        return None

    def own_code(self, loaded: LoadedObject) -> Optional[GoCode]:
        # Asked for every distinct pc symbolized: made once per object.
        return loaded.derived("go_code", lambda: _go_code(loaded.elf))

    def waits_for_lock(self, runtime_keys: Sequence[Tuple[str, str]]) -> bool:
        reason = next((v for k, v in runtime_keys if k == "wait_reason"), "")
        return reason in _LOCK_WAITS

    def stack_end(self, functions: Sequence[Optional[str]], coroutine: str) -> Optional[int]:
        return next((i for i, f in enumerate(functions) if f in _STACK_TOPS), None)


def _goroutines():
    """goroutines.py, loaded once a Go process is found: it costs every other dump's
    start-up ~3 ms (issue 31)."""
    return importlib.import_module("stackdump.runtimes.go.goroutines")


def _go_code(elf) -> Optional[GoCode]:
    """A Go binary's own tables (None for any other object, or a processor Go's frame
    layout is not known for)."""
    table = go_table(elf) if elf is not None else None
    arch = for_elf_machine(elf.machine) if table is not None else None
    return GoCode(table, arch) if arch is not None else None


class _GoProcess(Found):
    def __init__(self, process: ProcessView, runtime: GoRuntime) -> None:
        self._process = process
        self._runtime = runtime
        self._goroutines = _goroutines()

    def annotate(self, threads: List[ThreadSnapshot]) -> List[ThreadSnapshot]:
        """Each Go thread with the goroutine it serves and the stack it was on."""
        goroutines = self._goroutines
        keys = goroutines.thread_keys(self._process.memory, self._runtime, threads)
        return [
            dataclasses.replace(
                t, runtime_keys=t.runtime_keys + keys[t.tid], group_keys=goroutines.GROUP_KEYS
            )
            if t.tid in keys
            else t
            for t in threads
        ]

    def coroutines(
        self, threads: Sequence[ThreadSnapshot], options: CaptureOptions, keep, pages
    ) -> Coroutines:
        process = self._process
        listed = self._goroutines.goroutines(
            process.memory,
            self._runtime,
            process.maps,
            options.stack_bytes,
            MAX_COROUTINES,
            keep,
            process.now_ns,
        )
        return Coroutines(tuple(listed))


class GoCode:
    """One Go binary's code, by its own tables: CFI rows from frame sizes, function starts,
    and frame names and lines."""

    def __init__(self, table: GoTable, arch: Arch) -> None:
        self._table = table
        self._arch = arch

    def function_start(self, vaddr: int) -> Optional[int]:
        found = self._table.lookup(vaddr)
        return found[1] if found is not None else None

    def cfi_row(self, vaddr: int) -> Optional[CfiRow]:
        """Go code's row from its frame size, as Go's `.debug_frame` says (what that section
        is written from, so no FDE index is built for a Go binary, or needed when it is
        built -s -w). amd64: the return address sits `size` above sp (no rule for rbp).
        arm64: the prologue stores the link register at the new sp and the caller's frame
        pointer just below it, so with a frame the return address is at sp and x29 at sp-8;
        without one, it is still in x30.

        A function Go's own tracebacks end a stack at (`runtime.goexit`, the bottom of every
        goroutine's stack; `runtime.mstart`...) gets a row whose return address is
        undefined: the walk ends there, and reads nothing beyond it (what lies there is
        not this stack's, and made 3% of 100,000 parked goroutines look unlike the rest)."""
        size = self._table.frame_size(vaddr)
        if size is None:
            return None
        found = self._table.lookup(vaddr)
        top = found is not None and found[0] in _STACK_TOPS
        if self._arch is X86_64:
            rule = (UNDEFINED, None) if top else (OFFSET, -8)
            return CfiRow(("reg", (x86_64.RSP, size + 8)), ((x86_64.RIP, rule),), x86_64.RIP, False)
        if self._arch is AARCH64:
            if top:
                rules = ((aarch64.LR, (UNDEFINED, None)),)
                return CfiRow(("reg", (aarch64.SP, size)), rules, aarch64.LR, False)
            if size == 0:
                return CfiRow(("reg", (aarch64.SP, 0)), (), aarch64.LR, False)
            rules = ((aarch64.FP, (OFFSET, -size - 8)), (aarch64.LR, (OFFSET, -size)))
            return CfiRow(("reg", (aarch64.SP, size)), rules, aarch64.LR, False)
        return None

    def call_site(self, vaddr: int) -> Optional[Tuple[str, Optional[str], Optional[int]]]:
        """As Go's `created by` line names the call returning to vaddr: the physical
        function, and the file:line of the call (the innermost inlined position there)."""
        found = self._table.lookup(vaddr)
        if found is None:
            return None
        name, entry = found[0], found[1]
        at = self._table.lookup(vaddr - 1) if vaddr > entry else found
        return (name, at[2], at[3]) if at is not None else (name, None, None)

    def frame(
        self, physical: SymbolizedFrame, frame: Frame, vaddr: int, mode: LocationMode
    ) -> Optional[SymbolizedFrame]:
        """A Go function, by the runtime's own tables: one name in every mode (the symbol
        table's `runtime.epollwait.abi0` and DWARF's `runtime.epollwait` are one function),
        file:line in every mode that prints locations, also for a binary built -s -w; with
        Go's inline tree, the physical frame's line is its own (the outermost call site)
        and FULL_WITH_INLINE adds the functions inlined there. None for a pc in no Go
        function (C code a cgo binary links in)."""
        found = self._table.lookup(vaddr)
        if found is None:
            return None
        name, entry, file, line = found
        physical = dataclasses.replace(
            physical, function=name, function_offset=vaddr + (frame.pc - frame.lookup_pc) - entry
        )
        if mode is LocationMode.DISABLED:
            return physical
        chain: List[Tuple[str, Optional[str], Optional[int]]] = self._table.inline_chain(vaddr)
        if chain:
            file, line = chain[-1][1], chain[-1][2]
            if mode is LocationMode.FULL_WITH_INLINE:
                physical = dataclasses.replace(
                    physical, inlined=tuple(InlinedCall(*call) for call in chain[:-1])
                )
        if file is None or line is None:
            return physical
        return dataclasses.replace(physical, file=file, line=line)
