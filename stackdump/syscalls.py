"""x86_64 system-call numbers, and the sets of calls stackdump treats specially.

Numbers from the kernel's arch/x86/entry/syscalls/syscall_64.tbl.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Optional

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
    220: "semtimedop",
    230: "clock_nanosleep",
    232: "epoll_wait",
    247: "waitid",
    270: "pselect6",
    271: "ppoll",
    281: "epoll_pwait",
    288: "accept4",
    299: "recvmmsg",
    307: "sendmmsg",
    441: "epoll_pwait2",
}

# Doris's list: calls a diagnostic stop may interrupt. `--skip-blocking-syscalls` leaves a
# thread blocked in one of these alone.
INTERRUPT_SENSITIVE: FrozenSet[str] = frozenset(
    {
        "read",
        "pread64",
        "recvfrom",
        "recvmsg",
        "accept",
        "accept4",
        "poll",
        "ppoll",
        "select",
        "pselect6",
        "epoll_wait",
        "epoll_pwait",
        "epoll_pwait2",
        "futex",
        "nanosleep",
        "clock_nanosleep",
    }
)


def syscall_name(number: int) -> Optional[str]:
    return SYSCALL_NAMES.get(number)


def is_interrupt_sensitive(number: int) -> bool:
    name = SYSCALL_NAMES.get(number)
    return name is not None and name in INTERRUPT_SENSITIVE
