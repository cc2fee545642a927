"""What unwinding needs to know about a processor: its DWARF register numbers for pc, sp
and the frame pointer, the callee-saved registers, and how ptrace names its registers.
(Still x86-64-only outside this package: the call-site decoder, `x86_64_calls.py`, used by
unwind/recover.py, and the CIE's default return-address column in unwind/cfi.py.)

`X86_64` is the only one today (`x86_64.py`); an `aarch64.py` beside it (pc, sp = 31,
fp = x29, lr = x30) is where a second one goes. Everything above capture asks a
`Registers` value for its `Arch` instead of assuming x86 numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from stackdump.arch import x86_64


@dataclass(frozen=True)
class Arch:
    name: str
    word_size: int
    pc: int  # DWARF register numbers
    sp: int
    fp: int
    callee_saved: Tuple[int, ...]  # a callee preserves these (psABI): kept across frames
    ptrace_names: Tuple[str, ...]  # user_regs_struct field of each DWARF register, by number


X86_64 = Arch(
    name="x86_64",
    word_size=8,
    pc=x86_64.RIP,
    sp=x86_64.RSP,
    fp=x86_64.RBP,
    callee_saved=x86_64.CALLEE_SAVED,
    ptrace_names=x86_64.DWARF_REGISTER_NAMES,
)
