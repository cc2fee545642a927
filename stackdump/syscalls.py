"""System calls by name: each processor's numbers are its `Arch.syscall_names` (a live
target runs on this machine, so /proc shows this machine's numbers; a core says its own
processor), and the sets of calls stackdump treats specially.
"""

from __future__ import annotations

import signal
from typing import Callable, FrozenSet, Mapping, Optional, Tuple

from stackdump.arch import Arch, host

# A live thread's numbers: /proc shows them in this machine's processor's.
_LIVE_NAMES: Mapping[int, str] = host().syscall_names


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


def syscall_name(number: int, arch: Arch) -> Optional[str]:
    """The name of syscall `number` on `arch`: a live target's is this machine's
    (`stackdump.arch.host()`), a core's its own processor's."""
    return arch.syscall_names.get(number)


def is_interrupt_sensitive(number: int) -> bool:
    """In Doris's list, or `restart_syscall`: the kernel resumes a nanosleep,
    clock_nanosleep, poll or timed futex that any ptrace stop (ours, gdb's, eu-stack's)
    interrupted as restart_syscall, and /proc shows that number from then on."""
    name = _LIVE_NAMES.get(number)
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


# Blocking calls whose first argument names what the thread waits on: a futex's address, or
# a descriptor. `--watch` compares it from sample to sample ("the same call on the same
# object").
WAIT_OBJECT_CALLS: FrozenSet[str] = (
    _FD_CALLS
    | (EINTR_ON_STOP - {"semop", "semtimedop", "rt_sigtimedwait", "io_getevents", "io_pgetevents"})
    | {"futex", "preadv", "pwritev", "fsync", "fdatasync", "flock", "fcntl", "ioctl"}
)


def interrupted_by_stop(number: int, first_arg: int, is_socket: Callable[[int], bool]) -> bool:
    """Whether a ptrace stop would make this blocked call fail with EINTR.
    `is_socket(fd)` is asked only for the plain file calls."""
    name = _LIVE_NAMES.get(number)
    if name is None:
        return False
    if name in EINTR_ON_STOP:
        return True
    return name in _FD_CALLS and is_socket(first_arg)


def signal_name(number: int) -> str:
    """SIGSEGV for 11; the number itself for a signal Python does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
