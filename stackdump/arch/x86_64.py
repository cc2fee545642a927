"""x86_64 register numbers: DWARF numbering and the ptrace register names behind them
(the `Arch` built from them is `stackdump.arch.X86_64`).

DWARF numbering follows the System V x86-64 psABI, figure 3.36; regnum 16 is the return
address column, which holds rip.
"""

from __future__ import annotations

from typing import Dict, Tuple

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
# NT_PRSTATUS's pr_reg (struct user_regs_struct), in order.
PRSTATUS_NAMES: Tuple[str, ...] = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
    "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds",
    "es", "fs", "gs",
)  # fmt: skip

# Registers a callee must preserve (psABI 3.2.1): CFI rules for the others are not needed to
# find callers, and their values in outer frames are unknowable anyway.
CALLEE_SAVED = (RBX, RBP, R12, R13, R14, R15)

# System-call numbers, from the kernel's arch/x86/entry/syscalls/syscall_64.tbl.
SYSCALL_NAMES: Dict[int, str] = {
    0: "read",
    1: "write",
    7: "poll",
    17: "pread64",
    18: "pwrite64",
    19: "readv",
    20: "writev",
    23: "select",
    34: "pause",
    35: "nanosleep",
    43: "accept",
    44: "sendto",
    45: "recvfrom",
    46: "sendmsg",
    47: "recvmsg",
    61: "wait4",
    64: "semget",
    65: "semop",
    72: "fcntl",
    128: "rt_sigtimedwait",
    130: "rt_sigsuspend",
    202: "futex",
    219: "restart_syscall",
    220: "semtimedop",
    230: "clock_nanosleep",
    232: "epoll_wait",
    247: "waitid",
    270: "pselect6",
    271: "ppoll",
    281: "epoll_pwait",
    288: "accept4",
    42: "connect",
    208: "io_getevents",
    299: "recvmmsg",
    307: "sendmmsg",
    333: "io_pgetevents",
    426: "io_uring_enter",
    441: "epoll_pwait2",
}
