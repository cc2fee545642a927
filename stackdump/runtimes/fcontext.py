"""Suspended boost.context fibers (boost.fiber, and any runtime switching with boost.context's
`jump_fcontext`/`ontop_fcontext`), found from outside with no runtime-specific knowledge.

A context switch calls one of those functions, which pushes the callee-saved registers below
the return address on the suspending stack and keeps the stack pointer as the handle. So a
suspended fiber's stack holds, at its top, a block whose last word is a return address just
after a call to a switch function. Discovery:
1. the switch functions, by name, in the mapped objects' symbol tables, and where each saves
   which register: read from the function's own code (`lea -N(%rsp),%rsp`, then
   `mov %reg, off(%rsp)`), not from one boost version's layout;
2. the return addresses of every call to them (direct, or through a PLT stub whose GOT slot
   holds a switch function), from the process's code as mapped;
3. those return addresses as 8-byte words in the process's writable anonymous memory (heap,
   mmapped stacks, threads' stacks), each hit a saved context; and the words that return into
   a start function (`make_fcontext`'s `finish`), each the top of a context's stack;
4. of the contexts saved on one stack, the live one: the first met going down from the
   stack's top, unless a thread's stack pointer is met first (`live_contexts`); those below
   are what switches resumed since left behind. A context on a thread's own stack is that
   thread's main context, saved while it runs a fiber.

Only memory is read, while every thread runs: nothing is stopped. Every walk is bounded
(`scan_bytes`, `limit`); a context whose memory changed meanwhile unwinds to an error for
that fiber alone.
"""

from __future__ import annotations

import bisect
import re
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from stackdump.arch import X86_64, x86_64
from stackdump.capture.pages import MapIndex, Pagemap
from stackdump.capture.remote import RemoteMemory
from stackdump.capture.view import MappedObject
from stackdump.elf.image import ElfObject, parse_errors
from stackdump.records import frozen
from stackdump.runtimes.fibers import START_NAMES
from stackdump.types import MemoryMap, Registers, ThreadSnapshot, ThreadStatus

SWITCH_NAMES = ("jump_fcontext", "ontop_fcontext", "bthread_jump_fcontext")
_CALL = re.compile(rb"\xe8", re.DOTALL)
_QWORD = struct.Struct("<Q")
# mov r64, disp8(%rsp): REX.W (R for r8-r15), 89, ModRM mod=01 rm=100, SIB 0x24, disp8.
_MOV_TO_RSP = re.compile(rb"([\x48\x4c])\x89([\x44\x4c\x54\x5c\x64\x6c\x74\x7c])\x24(.)", re.DOTALL)
# ModRM reg field -> DWARF number, without and with REX.R.
_REG = {
    False: {0: 0, 1: 2, 2: 1, 3: x86_64.RBX, 4: x86_64.RSP, 5: x86_64.RBP, 6: 4, 7: 5},
    True: {4: x86_64.R12, 5: x86_64.R13, 6: x86_64.R14, 7: x86_64.R15, 0: 8, 1: 9, 2: 10, 3: 11},
}


@frozen
class SwitchFunction:
    address: int  # absolute
    frame: int  # bytes pushed below the return address
    slots: Tuple[Tuple[int, int], ...]  # (DWARF register, offset from the saved sp)
    name: str = ""

    @property
    def kind(self) -> str:
        """What its contexts are called in the report: brpc's copy switches bthreads."""
        return "bthread" if self.name.startswith("bthread_") else "fiber"


_PUSH = {0x55: x86_64.RBP, 0x53: x86_64.RBX}
# stmxcsr (%rsp), fnstcw 0x4(%rsp), cmp $0,%rcx: between the saves, saving nothing we need.
_SKIPPED = {b"\x0f\xae\x1c\x24", b"\xd9\x7c\x24\x04", b"\x48\x83\xf9\x00"}
_PUSH_REX = {0x54: x86_64.R12, 0x55: x86_64.R13, 0x56: x86_64.R14, 0x57: x86_64.R15}


def layout(code: bytes, address: int, name: str = "") -> Optional[SwitchFunction]:
    """The save layout from a switch function's first instructions, as it runs them:
    `push %reg` (boost.context before 1.61, brpc's bthread_jump_fcontext), `lea -N(%rsp),%rsp`
    and `mov %reg, off(%rsp)` (boost.context since), up to the first other instruction. None
    for code of another shape (a boost built differently): those fibers are not looked for."""
    pushed: List[Tuple[int, int]] = []  # (register, depth below the return address)
    depth = 0
    movs: Dict[int, int] = {}
    at = 0
    while at < min(len(code), 96):
        op = code[at]
        if op in _PUSH:
            depth += 8
            pushed.append((_PUSH[op], depth))
            at += 1
        elif op == 0x41 and at + 1 < len(code) and code[at + 1] in _PUSH_REX:
            depth += 8
            pushed.append((_PUSH_REX[code[at + 1]], depth))
            at += 2
        elif code[at : at + 4] == b"\x48\x8d\x64\x24" and at + 5 <= len(code):
            change = struct.unpack_from("<b", code, at + 4)[0]
            if change > 0:
                break
            depth -= change
            at += 5
        elif code[at : at + 2] == b"\x49\x89" and at == 0:
            at += 3  # ontop_fcontext's `mov %rdx,%r8` before it saves anything
        elif code[at : at + 4] in _SKIPPED:
            at += 4  # saving the FPU control words; brpc's test of whether to save them
        elif op == 0x74 and at + 2 <= len(code):
            at += 2  # je over them
        else:
            m = _MOV_TO_RSP.match(code, at)
            if m is None:
                break
            reg = _REG[m.group(1) == b"\x4c"][(m.group(2)[0] >> 3) & 7]
            movs.setdefault(reg, depth - m.group(3)[0])  # as depth below the return address
            at += 5
    if depth <= 0 or depth % 8:
        return None
    slots: Dict[int, int] = {reg: depth - below for reg, below in pushed}
    for reg, below in movs.items():
        slots.setdefault(reg, depth - below)
    if not set(x86_64.CALLEE_SAVED) <= set(slots):
        return None
    return SwitchFunction(address, depth, tuple(sorted(slots.items())), name)


def switch_functions(
    memory: RemoteMemory, objects: Iterable[MappedObject]
) -> Tuple[List[SwitchFunction], List[Tuple[int, int]]]:
    """The switch functions of the mapped objects, with their layouts read from the code as
    mapped, and where the functions that make contexts are (start, end)."""
    found, starts = [], []
    for mapped in objects:
        bias, symbols = _symbol_addresses(mapped, (*SWITCH_NAMES, *START_NAMES))
        for vaddr, size, name in symbols:
            if name in START_NAMES:
                starts.append((bias + vaddr, bias + vaddr + max(size, 1)))
                continue
            code = memory.read(bias + vaddr, 96)
            fn = layout(code, bias + vaddr, name) if code else None
            if fn is not None:
                found.append(fn)
    return found, starts


def _symbol_addresses(
    mapped: MappedObject, names: Sequence[str]
) -> Tuple[int, List[Tuple[int, int, str]]]:
    """(the object's load bias, the ELF address, size and name of each of `names` it
    defines)."""
    try:
        elf = ElfObject.open(mapped.path)
    except (OSError, *parse_errors()):
        return 0, []
    try:
        # Most objects name no switch function: their string tables say so without a
        # symbol table being built.
        strings = (elf.section_bytes(".dynstr") or b"") + (elf.section_bytes(".strtab") or b"")
        if not any(name.encode() in strings for name in names):
            return 0, []
        bias = mapped.bias(elf)
        if bias is None:
            return 0, []
        table = elf.symbols((".symtab", ".dynsym"))
        found = {(start, name) for name, start in table.named(set(names)) if start}
        return bias, sorted((start, _size(table, start), name) for start, name in found)
    except parse_errors():
        return 0, []
    finally:
        elf.close()


def _size(table, start: int) -> int:
    found = table.find(start)
    return found[2] if found is not None and found[1] == start else 0


def return_addresses(
    memory: RemoteMemory, maps: Sequence[MemoryMap], targets: Set[int], limit: int
) -> Dict[int, int]:
    """return address -> the target called, for every `call` (E8 rel32) to one of `targets`
    or to a PLT stub whose GOT slot holds one, in the executable mappings of files (at most
    `limit` bytes of code)."""
    found: Dict[int, int] = {}
    budget = limit
    stubs: Dict[int, Optional[int]] = {}
    for m in maps:
        if not (m.executable and m.is_file) or budget <= 0:
            continue
        size = min(m.end - m.start, budget)
        budget -= size
        code = memory.read(m.start, size)
        for hit in _CALL.finditer(code):
            p = hit.start()
            if p + 5 > len(code):
                break
            target = (m.start + p + 5 + struct.unpack_from("<i", code, p + 1)[0]) & (2**64 - 1)
            if target in targets:
                found[m.start + p + 5] = target
                continue
            if not m.contains(target):
                continue
            if target not in stubs:
                stubs[target] = _stub_to(memory, code, target - m.start, target, targets)
            if stubs[target] is not None:
                found[m.start + p + 5] = stubs[target]
    return found


def _stub_to(memory: RemoteMemory, code: bytes, offset: int, address: int, targets):
    """The target a PLT stub at `offset` (`jmp *disp(%rip)`, maybe after endbr64 and a bnd
    prefix) jumps to, when its GOT slot, as the process has it now, holds one of `targets`."""
    stub = code[offset : offset + 16]
    skip = 4 if stub.startswith(b"\xf3\x0f\x1e\xfa") else 0
    if stub[skip : skip + 1] == b"\xf2":
        skip += 1
    if stub[skip : skip + 2] != b"\xff\x25" or len(stub) < skip + 6:
        return None
    got = address + skip + 6 + struct.unpack_from("<i", stub, skip + 2)[0]
    slot = memory.read(got, 8)
    value = _QWORD.unpack(slot)[0] if len(slot) == 8 else None
    return value if value in targets else None


@frozen
class SavedContext:
    sp: int  # the saved stack pointer: the fiber's handle
    switch: SwitchFunction


_CHUNK = 8 << 20


@dataclass
class Found:
    """What the memory scan found: saved contexts (by their saved sp), and the tops of the
    stacks a start function made (where a word returns into one, each stack's first)."""

    contexts: List[SavedContext]
    tops: List[int]
    truncated: bool = False


def find_saved_contexts(
    memory: RemoteMemory,
    maps: Sequence[MemoryMap],
    returns: Dict[int, SwitchFunction],
    starts: Sequence[Tuple[int, int]],
    scan_bytes: int,
    limit: int,
    pages: Optional[Pagemap] = None,
) -> Found:
    """Every word in the process's writable anonymous memory that returns into a switch
    function (a saved context, maybe stale: `live_contexts` tells) or into a start function
    (the top of a context's stack), bounded by `scan_bytes` and `limit`. Only pages the
    process has (`pages`, from /proc/PID/pagemap) are read, a chunk at a time: 10,000 fiber
    stacks of 128 KiB are 1.3 GB mapped and 80 MB resident, and reading a page the process
    never touched would map one into it."""
    found = Found([], [])
    budget = scan_bytes
    # Return addresses into one object share their top 5 bytes: one search per object, then
    # a set lookup for each aligned word found.
    groups: Dict[bytes, None] = {}
    for ra in (*returns, *(start for start, _ in starts), *(end - 1 for _, end in starts)):
        groups.setdefault(_QWORD.pack(ra)[3:], None)
    ranges = sorted(starts)
    pages = pages or Pagemap(None)
    for m in maps:
        if not (m.readable and m.writable) or m.is_file or m.path.startswith("[v"):
            continue
        for run_start, run_end in pages.present(m.start, m.end):
            at = run_start
            while at < run_end:
                if budget <= 0 or len(found.contexts) >= limit:
                    found.truncated = True
                    return found
                size = min(run_end - at, _CHUNK, budget)
                budget -= size
                _search(memory.read(at, size), at, groups, returns, ranges, found)
                at += size
    found.contexts.sort(key=lambda c: c.sp)
    found.truncated = len(found.contexts) > limit
    del found.contexts[limit:]
    return found


def _search(data, base, groups, returns, ranges, found: Found) -> None:
    for tail in groups:
        at = data.find(tail)
        while at >= 0:
            word = at - 3
            if word >= 0 and word % 8 == 0:
                value = _QWORD.unpack_from(data, word)[0]
                fn = returns.get(value)
                if fn is not None:
                    found.contexts.append(SavedContext(base + word - fn.frame, fn))
                elif _in_ranges(ranges, value):
                    found.tops.append(base + word)
            at = data.find(tail, at + 1)


def _in_ranges(ranges: List[Tuple[int, int]], value: int) -> bool:
    i = bisect.bisect_right(ranges, (value, float("inf"))) - 1
    return i >= 0 and ranges[i][0] <= value < ranges[i][1]


def live_contexts(
    found: Found, maps: MapIndex, positions: Dict[int, int], own_tops: Dict[int, int]
) -> List[Tuple[SavedContext, Optional[int]]]:
    """The saved contexts that are what their stack runs now, each with the thread whose
    own stack holds it (a thread's main context, saved while it runs a fiber) or None.

    A stack is used from its top down: its live part is above the point where its context
    stopped (a saved sp) or runs (a thread's sp), and below that point lie the records of
    switches resumed since, stale. So, walking each mapping from its top down, a stack's
    top (a start function's word, or a thread's own stack top: `own_tops`, tid by address)
    begins a stack; in it, the first position met (a thread's sp: `positions`; or a saved
    context) is live, and every saved context below it is stale."""
    # A thread's own top is the address just below its stack's end (still inside it).
    own = {top - 1: tid for top, tid in own_tops.items()}
    events: Dict[int, List[tuple]] = {}
    for address in found.tops:
        events.setdefault(address, []).append((0, None))
    for address, tid in own.items():
        events.setdefault(address, []).append((0, tid))
    for address, tid in positions.items():
        events.setdefault(address, []).append((1, tid))
    for context in found.contexts:
        events.setdefault(context.sp, []).append((2, context))
    tops = sorted({*found.tops, *own})
    sp_of = {tid: sp for sp, tid in positions.items()}
    out: List[Tuple[SavedContext, Optional[int]]] = []
    mapping, owner, taken = None, None, False
    for address in sorted(events, reverse=True):
        here = maps.find(address)
        if here is None or here is not mapping:
            mapping, owner, taken = here, None, False
        for kind, what in sorted(events[address], key=lambda e: e[0]):
            if kind == 0:  # a stack's top: a new stack begins below
                owner = what
                # A thread running on its own stack: every record on it is stale, those in
                # its live frames above its sp too.
                taken = what is not None and _runs_below(sp_of.get(what), address, tops, maps)
            elif kind == 1:  # a thread runs here
                taken = True
            elif not taken:
                out.append((what, owner))
                taken = True
    out.sort(key=lambda c: c[0].sp)
    return out


def _runs_below(sp: Optional[int], top: int, tops: List[int], maps: MapIndex) -> bool:
    """Whether a thread's sp lies in the stack that begins at `top` (below it, in the same
    mapping, no other stack's top between)."""
    if sp is None or not sp < top or maps.find(sp) is not maps.find(top):
        return False
    above = bisect.bisect_right(tops, sp)
    return above < len(tops) and tops[above] == top


def context_snapshot(
    context: SavedContext,
    memory: RemoteMemory,
    maps: MapIndex,
    stack_bytes: int,
    resident_end=None,
) -> ThreadSnapshot:
    """The fiber as a snapshot the unwinder takes: its saved registers (pc is the return
    address, sp the stack as the switch found it) and its stack from there up."""
    fn = context.switch
    block = memory.read(context.sp, fn.frame + 8)
    if len(block) < fn.frame + 8:
        return ThreadSnapshot(
            tid=context.sp, name=fn.kind, status=ThreadStatus.THREAD_EXITED,
            error="its saved context can no longer be read",
        )  # fmt: skip
    values = {reg: _QWORD.unpack_from(block, off)[0] for reg, off in fn.slots}
    values[x86_64.RIP] = _QWORD.unpack_from(block, fn.frame)[0]
    values[x86_64.RSP] = context.sp + fn.frame + 8
    mapping = maps.find(context.sp)
    top = mapping.end if mapping is not None else context.sp + stack_bytes
    if resident_end is not None:
        # Stop where the process's pages stop: fiber stacks often lie side by side in one
        # mapping, and reading a page the process never touched would map one into it.
        top = min(top, resident_end(context.sp))
    base = values[x86_64.RSP]
    stack = memory.read(base, min(top - base, stack_bytes))
    if memory.read(context.sp, fn.frame + 8) != block:
        # Resumed (and maybe suspended again) while we read it: the stack copied is not the
        # one those registers describe. Reported as such, never unwound into garbage.
        return ThreadSnapshot(
            tid=context.sp,
            name=fn.kind,
            status=ThreadStatus.THREAD_EXITED,
            error="it was resumed while its stack was read",
        )
    return ThreadSnapshot(
        tid=context.sp,
        name=fn.kind,
        status=ThreadStatus.OK,
        regs=Registers.of(values, X86_64),  # boost.context's x86-64 save layout
        stack_map=mapping,
        stack_base=base,
        stack=stack,
    )
