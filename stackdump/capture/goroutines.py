"""Go goroutines, read from outside: every `runtime.g` in `runtime.allgs`, with its id, status
and wait reason, as a snapshot unwound from its saved `sched` context (pc, sp and the frame
pointer Go keeps on amd64) over its own stack.

Struct offsets come from the binary's DWARF (`runtime.g`, `runtime.gobuf`, `runtime.stack`,
which Go puts in one of the `runtime` package's compilation units); a binary without DWARF
(`-s -w`) is not read yet. Only memory is read, while every thread runs; a goroutine that ran
meanwhile (its saved context changed while its stack was read) is reported as such; every
count is bounded. A running goroutine is on its thread's stack, which that thread's section
shows; dead and idle ones are left out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from stackdump.elf.image import PARSE_ERRORS, ElfObject
from stackdump.types import MemoryMap, Registers, ThreadSnapshot, ThreadStatus

ALLGS, WAIT_REASONS = "runtime.allgs", "runtime.waitReasonStrings"
# runtime2.go: _Gidle .. _Gpreempted; _Gscan (0x1000) is ORed in while a GC scans it.
STATUS = {1: "runnable", 2: "running", 3: "syscall", 4: "waiting", 6: "dead", 8: "copystack",
          9: "preempted"}  # fmt: skip
_SCAN = 0x1000
_MAX_WAIT_REASONS = 64
_Q = struct.Struct("<Q")


@dataclass(frozen=True)
class GoLayout:
    g_size: int
    goid: int
    status: int
    wait_reason: int
    sched: int  # a runtime.gobuf
    sp: int  # in gobuf
    pc: int
    bp: int
    stack_hi: int  # g.stack.hi


def layout_from_dwarf(elf: ElfObject) -> Optional[GoLayout]:
    from stackdump.symbols.dwarf import DwarfIndex

    if not elf.has_section(".debug_info"):
        return None
    try:
        dwarf = DwarfIndex(elf)
        g = dwarf.find_struct("runtime.g", "runtime")
        gobuf = dwarf.find_struct("runtime.gobuf", "runtime")
        stack = dwarf.find_struct("runtime.stack", "runtime")
        if not g or not gobuf or not stack:
            return None
        size, m = g
        return GoLayout(
            size, m["goid"], m["atomicstatus"], m["waitreason"], m["sched"],
            gobuf[1]["sp"], gobuf[1]["pc"], gobuf[1]["bp"], m["stack"] + stack[1]["hi"],
        )  # fmt: skip
    except (KeyError, *PARSE_ERRORS):
        return None


def goroutines(
    memory,
    allgs: int,
    wait_reasons_at: Optional[int],
    layout: GoLayout,
    maps: Sequence[MemoryMap],
    stack_bytes: int,
    limit: int,
    keep=None,
) -> List[ThreadSnapshot]:
    """Every goroutine but the running, dead and idle ones, as snapshots, each passed to
    `keep` at once (the engine unwinds it and drops its stack copy: 100,000 goroutines'
    stacks are never held together)."""
    header = memory.read(allgs, 16)
    if len(header) != 16:
        return []
    array, count = struct.unpack("<QQ", header)
    count = min(count, limit)
    pointers = memory.read(array, 8 * count) if array and count else b""
    reasons = _wait_reasons(memory, wait_reasons_at) if wait_reasons_at else {}
    out = []
    for (g,) in struct.iter_unpack("<Q", pointers[: len(pointers) // 8 * 8]):
        snapshot = _goroutine(memory, g, layout, reasons, maps, stack_bytes)
        if snapshot is not None:
            out.append(keep(snapshot) if keep is not None else snapshot)
    return out


def _goroutine(memory, g: int, layout: GoLayout, reasons, maps, stack_bytes):
    data = memory.read(g, layout.g_size) if g else b""
    if len(data) < layout.g_size:
        return None
    status = struct.unpack_from("<I", data, layout.status)[0] & ~_SCAN
    if status not in STATUS or status in (2, 6):
        return None  # running: its thread's section; dead: nothing left
    goid = _Q.unpack_from(data, layout.goid)[0]
    keys = [("go_status", STATUS[status])]
    reason = reasons.get(data[layout.wait_reason]) if status == 4 else None
    if reason:
        keys.append(("wait_reason", reason))
    sched = layout.sched
    sp = _Q.unpack_from(data, sched + layout.sp)[0]
    pc = _Q.unpack_from(data, sched + layout.pc)[0]
    bp = _Q.unpack_from(data, sched + layout.bp)[0]
    hi = _Q.unpack_from(data, layout.stack_hi)[0]
    mapping = next((m for m in maps if m.start <= sp < m.end), None)
    base = dict(
        tid=g, name="goroutine", coroutine="goroutine", coroutine_id=goid,
        coroutine_keys=tuple(keys),
    )  # fmt: skip
    if not pc or not sp or mapping is None or not sp < hi <= mapping.end:
        return ThreadSnapshot(
            status=ThreadStatus.THREAD_EXITED, error="its saved context is not readable", **base
        )
    stack = memory.read(sp, min(hi - sp, stack_bytes))
    if (
        memory.read(g + sched, layout.bp + 8)[: layout.bp + 8]
        != data[sched : sched + layout.bp + 8]
    ):
        return ThreadSnapshot(
            status=ThreadStatus.THREAD_EXITED, error="it ran while its stack was read", **base
        )
    from stackdump.arch import X86_64, x86_64

    regs = Registers.of({x86_64.RIP: pc, x86_64.RSP: sp, x86_64.RBP: bp}, X86_64)
    return ThreadSnapshot(
        status=ThreadStatus.OK, regs=regs, stack_map=mapping, stack_base=sp, stack=stack, **base
    )


def _wait_reasons(memory, at: int) -> Dict[int, str]:
    """runtime.waitReasonStrings: an array of Go strings (pointer, length), by reason."""
    data = memory.read(at, 16 * _MAX_WAIT_REASONS)
    out = {}
    for i in range(len(data) // 16):
        pointer, length = struct.unpack_from("<QQ", data, 16 * i)
        if not pointer or not 0 < length <= 64:
            continue
        text = memory.read(pointer, length)
        if len(text) == length:
            out[i] = text.decode("utf-8", "replace")
    return out
