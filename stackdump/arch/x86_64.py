"""x86_64 register numbers: DWARF numbering and the ptrace register names behind them
(the `Arch` built from them is `stackdump.arch.X86_64`).

DWARF numbering follows the System V x86-64 psABI, figure 3.36; regnum 16 is the return
address column, which holds rip.
"""

from __future__ import annotations

from typing import Tuple

# psABI order: index = DWARF register number.
DWARF_REGISTER_NAMES: Tuple[str, ...] = (
    "rax",
    "rdx",
    "rcx",
    "rbx",
    "rsi",
    "rdi",
    "rbp",
    "rsp",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "rip",
)
RBX, RBP, RSP = 3, 6, 7
R12, R13, R14, R15 = range(12, 16)
RIP = 16
RA_COLUMN = RIP
NUM_DWARF_REGS = len(DWARF_REGISTER_NAMES)

# Registers a callee must preserve (psABI 3.2.1): CFI rules for the others are not needed to
# find callers, and their values in outer frames are unknowable anyway.
CALLEE_SAVED = (RBX, RBP, R12, R13, R14, R15)
