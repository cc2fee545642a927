"""What unwinding needs to know about a processor: its DWARF register numbers for pc, sp
and the frame pointer, the return-address column, the callee-saved registers, how ptrace
names its registers, and how to recognise a call instruction before a return address.

`X86_64` is the only one today (`x86_64.py`); an `aarch64.py` beside it (pc, sp = 31,
fp = x29, lr = x30) is where a second one goes. Everything above capture asks a
`Registers` value for its `Arch` instead of assuming x86 numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

# call_before(code, return_address) -> (kind, target) or None; see x86_64.call_before.
CallDecoder = Callable[[bytes, int], Optional[Tuple[object, int]]]


@dataclass(frozen=True)
class Arch:
    name: str
    word_size: int
    pc: int  # DWARF register numbers
    sp: int
    fp: int
    ra_column: int  # where a CIE says the return address lives, by default
    callee_saved: Tuple[int, ...]  # a callee preserves these (psABI): kept across frames
    ptrace_names: Tuple[str, ...]  # user_regs_struct field of each DWARF register, by number
    call_before: CallDecoder


def _x86_64() -> Arch:
    from stackdump.arch import x86_64
    from stackdump.arch.x86_64_calls import call_before

    return Arch(
        name="x86_64",
        word_size=8,
        pc=x86_64.RIP,
        sp=x86_64.RSP,
        fp=x86_64.RBP,
        ra_column=x86_64.RA_COLUMN,
        callee_saved=x86_64.CALLEE_SAVED,
        ptrace_names=x86_64.DWARF_REGISTER_NAMES,
        call_before=call_before,
    )


X86_64 = _x86_64()
