"""What unwinding needs to know about a processor: its DWARF register numbers for pc, sp,
the frame pointer and the CIE's default return-address column, the callee-saved registers,
how ptrace names its registers, and how to recognise the call instruction before a return
address (and a PLT stub) in code bytes.

`X86_64` is the only one today (`x86_64.py`, `x86_64_calls.py`); an `aarch64.py` beside it
(pc, sp = 31, fp = x29, lr = x30, `bl`/`blr` before a return address) is where a second one
goes, registered in `for_elf_machine`. Everything above capture asks a `Registers` value (or
an ELF object's e_machine) for its `Arch` instead of assuming x86 numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

from stackdump.arch import x86_64, x86_64_calls
from stackdump.arch.calls import CallKind

EM_X86_64 = 62
EM_AARCH64 = 183


@dataclass(frozen=True)
class Arch:
    name: str
    word_size: int
    pc: int  # DWARF register numbers
    sp: int
    fp: int
    ra_column: int  # a CIE names its own; this is the psABI's
    callee_saved: Tuple[int, ...]  # a callee preserves these (psABI): kept across frames
    ptrace_names: Tuple[str, ...]  # user_regs_struct field of each DWARF register, by number
    # call_before(code, return_address): the call ending where `code` (the
    # `max_call_length` bytes before return_address) ends, as (kind, target), else None.
    call_before: Callable[[bytes, int], Optional[Tuple[CallKind, int]]] = field(compare=False)
    max_call_length: int
    is_plt_stub: Callable[[bytes], bool] = field(compare=False)  # code at a call's target


X86_64 = Arch(
    name="x86_64",
    word_size=8,
    pc=x86_64.RIP,
    sp=x86_64.RSP,
    fp=x86_64.RBP,
    ra_column=x86_64.RA_COLUMN,
    callee_saved=x86_64.CALLEE_SAVED,
    ptrace_names=x86_64.DWARF_REGISTER_NAMES,
    call_before=x86_64_calls.call_before,
    max_call_length=x86_64_calls.MAX_CALL_LENGTH,
    is_plt_stub=x86_64_calls.is_plt_stub,
)

_BY_ELF_MACHINE = {EM_X86_64: X86_64}


def for_elf_machine(machine: int) -> Optional[Arch]:
    """The Arch of an ELF file's e_machine, None for a processor stackdump does not know."""
    return _BY_ELF_MACHINE.get(machine)
