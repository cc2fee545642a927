"""System-call numbers of this machine's processor (x86_64 or aarch64: /proc shows the
target's numbers, and a live target runs on this machine), and the sets of calls stackdump
treats specially.

Numbers from the kernel's arch/x86/entry/syscalls/syscall_64.tbl and, for aarch64, the
generic table include/uapi/asm-generic/unistd.h (aarch64 has no poll, select, epoll_wait,
pause: their libc wrappers call ppoll, pselect6, epoll_pwait).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, FrozenSet, Optional, Tuple

X86_64_SYSCALL_NAMES: Dict[int, str] = {
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

AARCH64_SYSCALL_NAMES: Dict[int, str] = {
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

SYSCALL_NAMES: Dict[int, str] = (
    AARCH64_SYSCALL_NAMES if os.uname().machine == "aarch64" else X86_64_SYSCALL_NAMES
)

# Doris's list: calls a diagnostic stop may interrupt. `--skip-blocking-syscalls` leaves a
# thread blocked in one of these alone.
INTERRUPT_SENSITIVE_NAMES: Tuple[str, ...] = (
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
)
INTERRUPT_SENSITIVE: FrozenSet[str] = frozenset(INTERRUPT_SENSITIVE_NAMES)


def syscall_name(number: int) -> Optional[str]:
    return SYSCALL_NAMES.get(number)


def is_interrupt_sensitive(number: int) -> bool:
    """In Doris's list, or `restart_syscall`: the kernel resumes a nanosleep,
    clock_nanosleep, poll or timed futex that any ptrace stop (ours, gdb's, eu-stack's)
    interrupted as restart_syscall, and /proc shows that number from then on."""
    name = SYSCALL_NAMES.get(number)
    return name is not None and (name in INTERRUPT_SENSITIVE or name == "restart_syscall")


# Calls that fail with EINTR, not restart, when a ptrace stop (even PTRACE_INTERRUPT with no
# signal) interrupts them: signal(7), "Interruption of system calls and library functions by
# stop signals", checked against the kernel (ep_poll, do_semtimedop, do_sigtimedwait,
# sock_intr_errno with a timeout set, read_events in aio). `--capture auto` never stops a
# thread blocked in one of them. Socket calls return EINTR only when the socket has a
# timeout, which cannot be seen from outside, so all of them count, as do the plain file
# calls (read, write, ...) when their descriptor is a socket.
EINTR_ON_STOP: FrozenSet[str] = frozenset(
    {
        "epoll_wait",
        "epoll_pwait",
        "epoll_pwait2",
        "semop",
        "semtimedop",
        "rt_sigtimedwait",
        "accept",
        "accept4",
        "connect",
        "recvfrom",
        "recvmsg",
        "recvmmsg",
        "sendto",
        "sendmsg",
        "sendmmsg",
        "io_getevents",
        "io_pgetevents",
        "io_uring_enter",
    }
)
_FD_CALLS: FrozenSet[str] = frozenset({"read", "write", "readv", "writev", "pread64", "pwrite64"})


def interrupted_by_stop(number: int, first_arg: int, is_socket: Callable[[int], bool]) -> bool:
    """Whether a ptrace stop would make this blocked call fail with EINTR.
    `is_socket(fd)` is asked only for the plain file calls."""
    name = SYSCALL_NAMES.get(number)
    if name is None:
        return False
    if name in EINTR_ON_STOP:
        return True
    return name in _FD_CALLS and is_socket(first_arg)


def signal_name(number: int) -> str:
    """SIGSEGV for 11; the number itself for a signal Python does not name."""
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
