"""aarch64 register numbers: DWARF numbering (AADWARF64: x0-x30 are 0-30, sp is 31, the pc
32) and the names Linux gives them in `user_pt_regs` (the `Arch` built from them is
`stackdump.arch.AARCH64`).

x29 is the frame pointer and x30 the link register: the return address is in x30 until a
function saves it, in a frame record (x29, x30) that x29 points at, the same two-word shape
as x86-64's. With pointer authentication, a saved x30 carries a signature in its top bits
(`DW_CFA_AARCH64_negate_ra_state` says where); user addresses fit in 48 bits, so masking to
48 bits strips it.
"""

from __future__ import annotations

from typing import Dict, Tuple

DWARF_REGISTER_NAMES: Tuple[str, ...] = (*(f"x{i}" for i in range(31)), "sp", "pc")
# python-ptrace's user_pt_regs: r0..r30, sp, pc (DWARF 0-30, 31, 32).
PTRACE_NAMES: Tuple[str, ...] = (*(f"r{i}" for i in range(31)), "sp", "pc")
FP, LR, SP, PC = 29, 30, 31, 32
RA_COLUMN = LR
# Callee-saved (AAPCS64 6.1.1): x19-x28 and the frame pointer; x30 too, for unwinding: a
# function that has not saved it yet still holds its caller's return address there.
CALLEE_SAVED = (*range(19, 29), FP, LR)
ADDRESS_MASK = (1 << 48) - 1

# System-call numbers, from the kernel's generic include/uapi/asm-generic/unistd.h (aarch64
# has no poll, select, epoll_wait, pause: their libc wrappers call ppoll, pselect6,
# epoll_pwait).
SYSCALL_NAMES: Dict[int, str] = {
    0: "io_setup",
    4: "io_getevents",
    22: "epoll_pwait",
    25: "fcntl",
    63: "read",
    64: "write",
    65: "readv",
    66: "writev",
    67: "pread64",
    68: "pwrite64",
    72: "pselect6",
    73: "ppoll",
    98: "futex",
    101: "nanosleep",
    115: "clock_nanosleep",
    128: "restart_syscall",
    133: "rt_sigsuspend",
    137: "rt_sigtimedwait",
    190: "semget",
    192: "semtimedop",
    193: "semop",
    202: "accept",
    203: "connect",
    206: "sendto",
    207: "recvfrom",
    211: "sendmsg",
    212: "recvmsg",
    242: "accept4",
    243: "recvmmsg",
    260: "wait4",
    269: "sendmmsg",
    292: "io_pgetevents",
    426: "io_uring_enter",
    441: "epoll_pwait2",
    95: "waitid",
}
