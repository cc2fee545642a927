"""What unwinding needs to know about a processor: its DWARF register numbers for pc, sp,
the frame pointer and the CIE's default return-address column, the callee-saved registers,
how ptrace names its registers, and how to recognise the call instruction before a return
address (and a PLT stub) in code bytes.

`X86_64` (`x86_64.py`, `x86_64_calls.py`) and `AARCH64` (`aarch64.py`, `aarch64_calls.py`:
sp = 31, fp = x29, the return address in x30, `bl`/`blr` before a return address), by ELF
e_machine in `for_elf_machine`. Everything above capture asks a `Registers` value (or an ELF
object's e_machine) for its `Arch` instead of assuming x86 numbers.
"""

from __future__ import annotations

import os
from dataclasses import field
from typing import Callable, Mapping, Optional, Tuple

from stackdump.arch import aarch64, aarch64_calls, x86_64, x86_64_calls
from stackdump.arch.calls import CallKind
from stackdump.records import frozen

EM_X86_64 = 62
EM_AARCH64 = 183


@frozen
class Arch:
    name: str
    word_size: int
    pc: int  # DWARF register numbers
    sp: int
    fp: int
    ra_column: int  # a CIE names its own; this is the psABI's
    callee_saved: Tuple[int, ...]  # a callee preserves these (psABI): kept across frames
    elf_machine: int  # e_machine
    register_names: Tuple[str, ...]  # each DWARF register's name, by number
    ptrace_names: Tuple[str, ...]  # python-ptrace's user_regs_struct field of each, by number
    # NT_PRSTATUS's pr_reg, in order: what a core file holds of each thread.
    prstatus_names: Tuple[str, ...]
    # Registers come by PTRACE_GETREGSET (NT_PRSTATUS), not PTRACE_GETREGS (which aarch64
    # lacks); the thread pointer's user_regs_struct field ('' when that struct has none).
    ptrace_regset: bool
    thread_pointer: str
    pyelftools_machine: str  # DwarfConfig's machine_arch
    # call_before(code, return_address): the call ending where `code` (the
    # `max_call_length` bytes before return_address) ends, as (kind, target), else None.
    call_before: Callable[[bytes, int], Optional[Tuple[CallKind, int]]] = field(compare=False)
    max_call_length: int
    is_plt_stub: Callable[[bytes], bool] = field(compare=False)  # code at a call's target
    # Bytes below the stack pointer that a function may use and no signal handler clobbers
    # (the psABI's red zone): a leaf's saved registers can lie there, and so can the slot
    # an epilogue just popped while its CFI still names it.
    red_zone: int
    # What a return address keeps of the word it was saved as: aarch64's pointer
    # authentication signs the top bits.
    address_mask: int = 0xFFFF_FFFF_FFFF_FFFF
    # sigreturn_registers(code at pc, sp, read_word): the interrupted registers when pc is a
    # signal trampoline without CFI; None where trampolines carry CFI (x86-64's libc).
    sigreturn_registers: Optional[Callable] = field(default=None, compare=False)
    syscall_names: Mapping[int, str] = field(default_factory=dict, compare=False)


X86_64 = Arch(
    name="x86_64",
    word_size=8,
    pc=x86_64.RIP,
    sp=x86_64.RSP,
    fp=x86_64.RBP,
    ra_column=x86_64.RA_COLUMN,
    callee_saved=x86_64.CALLEE_SAVED,
    elf_machine=EM_X86_64,
    register_names=x86_64.DWARF_REGISTER_NAMES,
    ptrace_names=x86_64.DWARF_REGISTER_NAMES,
    prstatus_names=x86_64.PRSTATUS_NAMES,
    ptrace_regset=False,
    thread_pointer="fs_base",
    pyelftools_machine="x64",
    call_before=x86_64_calls.call_before,
    max_call_length=x86_64_calls.MAX_CALL_LENGTH,
    is_plt_stub=x86_64_calls.is_plt_stub,
    red_zone=128,
    syscall_names=x86_64.SYSCALL_NAMES,
)

AARCH64 = Arch(
    name="aarch64",
    word_size=8,
    pc=aarch64.PC,
    sp=aarch64.SP,
    fp=aarch64.FP,
    ra_column=aarch64.RA_COLUMN,
    callee_saved=aarch64.CALLEE_SAVED,
    elf_machine=EM_AARCH64,
    register_names=aarch64.DWARF_REGISTER_NAMES,
    ptrace_names=aarch64.PTRACE_NAMES,
    prstatus_names=(*aarch64.DWARF_REGISTER_NAMES, "pstate"),
    ptrace_regset=True,
    thread_pointer="",  # TPIDR_EL0 is another regset: unread
    pyelftools_machine="AArch64",
    call_before=aarch64_calls.call_before,
    max_call_length=aarch64_calls.MAX_CALL_LENGTH,
    is_plt_stub=aarch64_calls.is_plt_stub,
    red_zone=0,  # Linux writes a signal frame right below sp
    address_mask=aarch64.ADDRESS_MASK,
    sigreturn_registers=aarch64_calls.sigreturn_registers,
    syscall_names=aarch64.SYSCALL_NAMES,
)

_BY_ELF_MACHINE = {arch.elf_machine: arch for arch in (X86_64, AARCH64)}


def for_elf_machine(machine: int) -> Optional[Arch]:
    """The Arch of an ELF file's e_machine, None for a processor stackdump does not know."""
    return _BY_ELF_MACHINE.get(machine)


def host() -> Arch:
    """The processor this stackdump runs on: a live target's (ptrace reads its registers)."""
    return AARCH64 if os.uname().machine == "aarch64" else X86_64
