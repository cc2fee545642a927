"""Recovering the frame pointer a passive capture does not have.

A passive capture knows pc and sp only. Frames whose CFA is rbp-based (code built with frame
pointers) need rbp, which is still the caller's frame-record address when the innermost
frames (libc's syscall wrappers) do not touch it. That record lies on the copied stack at or
above the frame's sp: 16-byte aligned (the psABI keeps rsp 16-aligned at calls, so `push
%rbp` lands on a multiple of 16), holding the next record's address (0 or higher up) and a
return address that follows a call instruction.

Stale records from earlier calls linger in uninitialised locals, so a candidate must also:
  - not contradict the call site: a direct call before its return address must target the
    frame's own function (or a PLT stub, which cannot be checked);
  - let the rest of the stack unwind cleanly to its end (checked by the caller's callback);
and among the survivors the choice is: the lowest one whose call is confirmed; else the
highest of those sharing the lowest one's link (a stale record left by an earlier call from
the same caller shares that caller's link and lies below the live one). A confirmed record
whose stack does not unwind cleanly (its chain leaves code, say) is taken as the live one
with a corrupt stack above it: no unverified candidate is accepted in its place, since one
higher up would skip frames. No survivor: the unwinder stops with `missing_register` rather
than guess.
"""

from __future__ import annotations

import enum
from typing import Callable, List, Optional, Protocol, Tuple

from stackdump.arch import Arch
from stackdump.arch.calls import CallKind
from stackdump.unwind.memory import StackMemory

# How far above sp a frame record is looked for: frames with bigger locals than this are
# left unrecovered rather than scanned at length.
SCAN_BYTES = 64 * 1024


class CodeSource(Protocol):
    def function_start(self, pc: int) -> Optional[int]: ...

    def code(self, address: int, size: int) -> bytes: ...


class Verdict(enum.Enum):
    CONFIRMED = 1  # a direct call to the frame's function
    UNVERIFIED = 2  # an indirect call, or a call through a PLT stub
    CONTRADICTED = 3  # a direct call to some other function


def call_verdict(
    code: CodeSource, return_address: int, callee_start: Optional[int], arch: Arch
) -> Optional[Verdict]:
    """How the call before return_address relates to the frame's function; None: no call."""
    size = arch.max_call_length
    if return_address < size + 1:
        return None
    found = arch.call_before(code.code(return_address - size, size), return_address)
    if found is None:
        return None
    kind, target = found
    if kind is CallKind.INDIRECT or callee_start is None:
        return Verdict.UNVERIFIED
    if target == callee_start:
        return Verdict.CONFIRMED
    if arch.is_plt_stub(code.code(target, 8)):
        return Verdict.UNVERIFIED
    return Verdict.CONTRADICTED


def find_frame_record(
    sp: int,
    pc: int,
    memory: StackMemory,
    code: CodeSource,
    continues: Callable[[int], bool],
    arch: Arch,
) -> Optional[int]:
    """The rbp value of the frame at (pc, sp), or None when no candidate survives.
    `pc` is the lookup pc (already pc-1 for return addresses); `continues(rbp)` says whether
    the stack unwinds cleanly to its end with that value."""
    callee_start = code.function_start(pc)
    survivors: List[Tuple[int, int]] = []  # (record, link) of unverified candidates
    confirmed_failed = False
    address = (sp + 15) & ~15
    end = min(memory.end, sp + SCAN_BYTES) - 16
    while address <= end:
        link = memory.read_word(address)
        ret = memory.read_word(address + 8)
        address += 16
        if link is None or ret is None:
            continue
        record = address - 16
        if link != 0 and (link <= record or link % 16 or not memory.in_any_mapping(link, 16)):
            continue
        verdict = call_verdict(code, ret, callee_start, arch)
        if verdict is None or verdict is Verdict.CONTRADICTED:
            continue
        if not continues(record):
            confirmed_failed = confirmed_failed or verdict is Verdict.CONFIRMED
            continue
        if verdict is Verdict.CONFIRMED:
            return record
        survivors.append((record, link))
    if not survivors or confirmed_failed:
        return None
    lowest_link = survivors[0][1]
    return max(record for record, link in survivors if link == lowest_link)
