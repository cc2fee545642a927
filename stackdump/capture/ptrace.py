"""The only module that stops a thread: seize, interrupt, copy registers and stack, detach.

One thread at a time (README "Never harming the target"). While a thread is stopped this
module does exactly three things: read its registers, copy its stack into a preallocated
buffer with one process_vm_readv, and detach. Turning the raw registers into a `Registers`
value and the buffer into `bytes` happens after the thread runs again.

python-ptrace's camelCase API and its errno-carrying `PtraceError` stay inside this module;
callers see `ThreadSnapshot` statuses and stackdump errors only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import operator
import os
import signal
import struct
import sys
import time
import types
from typing import Any, Optional, Set, Tuple

from stackdump import clib, permissions, proc
from stackdump.arch import host
from stackdump.capture.remote import StackCopier
from stackdump.errors import PermissionDenied
from stackdump.types import MemoryMap, Registers, SyscallState, ThreadSnapshot, ThreadStatus


def _give_python_ptrace_our_libc() -> None:
    """python-ptrace's `ptrace.ctypes_libc` finds the C library with
    `ctypes.util.find_library`, which runs `ldconfig -p` in a subprocess: ~4 ms of every run
    (`python3 -X importtime`). It only needs `libc` and `LIBC_FILENAME`; hand it the C
    library this Python already runs on, as stackdump.clib does for us."""
    if "ptrace.ctypes_libc" not in sys.modules:
        module = types.ModuleType("ptrace.ctypes_libc")
        module.libc = clib.libc()  # type: ignore[attr-defined]
        module.LIBC_FILENAME = "libc.so.6"  # type: ignore[attr-defined]
        sys.modules["ptrace.ctypes_libc"] = module


_give_python_ptrace_our_libc()

from ptrace.binding.func import ptrace as _raw_ptrace  # noqa: E402
from ptrace.binding.func import ptrace_registers_t  # noqa: E402
from ptrace.error import PtraceError  # noqa: E402

# python-ptrace 0.9.9 has no wrappers for these (linux/ptrace.h).
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
WALL = 0x40000000  # __WALL: wait for clone children, which every non-leader thread is

PTRACE_GETREGS = 12
PTRACE_GETREGSET, NT_PRSTATUS = 0x4204, 1
_HOST = host()  # a live target runs on this machine's processor
_SP_FIELD = _HOST.ptrace_names[_HOST.sp]


def _load_stop_window_ptrace():
    """ptrace(2) with fixed argument types, for the calls made while a thread is stopped.
    python-ptrace's wrapper (errno reset, result conversion, message formatting) costs ~1 us a
    call; in the stop window that was a quarter of the pause (16.1 -> 12.9 us per thread,
    median, measured on 50 blocked threads). Errors still surface as python-ptrace's
    PtraceError."""
    libc = clib.libc()
    fn = libc.ptrace
    fn.restype = ctypes.c_long
    fn.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    return fn


# Looked up once: a profile makes a tracer per sample (a lookup costs ~20 us).
_STOP_WINDOW_PTRACE = _load_stop_window_ptrace()


def _ignore_signal(signum: int, frame: object) -> None:
    """SIGALRM's handler: its only job is to make a blocked system call return EINTR."""


def _stop_window_error(request: int, tid: int) -> PtraceError:
    err = ctypes.get_errno()
    return PtraceError(f"ptrace({request}, {tid}): {os.strerror(err)}", errno=err, pid=tid)


# Signals whose default action stops stackdump, and which a stop window holds back.
_JOB_CONTROL = {signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
# Busy-poll waitpid this long, then sleep in sigtimedwait until the kernel's SIGCHLD says the
# tracee stopped: an idle thread stops within tens of microseconds, and a wake-up on the
# signal adds no oversleep to a slow thread's pause.
_SPIN_NS = 50_000
# Between tries to seize a thread another tracer holds (it stops a thread for microseconds).
_RETRY_S = 0.0002
_UNTRACED_RETRIES = 3
# How long capture waits at its end for seized threads that were exiting to be reapable (a
# thread of a killed 1,000-thread process can take longer than 50 ms to become a zombie).
_EXIT_REAP_S = 2.0


class StopWindowPriority:
    """SCHED_FIFO for stackdump's own thread from just before PTRACE_INTERRUPT to just after
    PTRACE_DETACH, and the policy it was started with at once after.

    On a busy machine a stackdump preempted while it holds a thread stopped stretches that
    thread's pause from microseconds to milliseconds (seen: 15 ms under redis-benchmark). A
    real-time thread is not preempted by ordinary ones, and it runs as soon as the stop it
    waits for arrives. The policy is the calling thread's own: nothing is left behind when
    stackdump exits or dies, and SCHED_RESET_ON_FORK keeps any child from inheriting it. It
    is held while the thread sleeps waiting for the stop, so it never starves the target.
    Without the privilege (no CAP_SYS_NICE, a cgroup with no real-time budget) it is skipped.
    The policy calls happen before the interrupt and after the detach, outside `pause_us`.
    """

    _FIFO = os.sched_param(1)
    _POLICY = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._held = False
        self._own: Optional[tuple] = None  # read at the first window: most samples have none

    def enter(self) -> None:
        if not self._enabled:
            return
        if self._own is None:
            # Left for the policy stackdump was started with (`nice`, `chrt --idle`, `chrt
            # --batch`: the user's choice for its work outside the stop windows), not for
            # SCHED_OTHER.
            try:
                self._own = (os.sched_getscheduler(0), os.sched_getparam(0))
            except OSError:
                self._own = (os.SCHED_OTHER, os.sched_param(0))
            # Started real-time already (`chrt --fifo 10`): FIFO 1 would lower it here.
            if self._own[0] & ~os.SCHED_RESET_ON_FORK in (os.SCHED_FIFO, os.SCHED_RR):
                self._enabled = False
                return
        try:
            os.sched_setscheduler(0, self._POLICY, self._FIFO)
            self._held = True
        except OSError:
            self._enabled = False

    @property
    def held(self) -> bool:
        return self._held

    def leave(self) -> None:
        if self._held:
            self._held = False
            try:  # noqa: SIM105 - contextlib.suppress costs three calls at every stop
                os.sched_setscheduler(0, *self._own)
            except OSError:
                pass


class _StopWindow:
    """One thread's stop, from PTRACE_INTERRUPT to PTRACE_DETACH, as a context manager that
    always detaches.

    Entering holds the real-time priority, interrupts the thread and waits for its stop;
    `status` is then None (stopped) or why not (exited, timed out: the thread is left
    seized with the interrupt pending, for `Tracer.reap`). Inside, only registers and memory
    are copied; `detach()` ends the window there. Leaving detaches a thread still stopped
    (an error inside the block), re-injecting the signal it stopped on, drops the priority
    and reaps. `pause_ns` covers interrupt to detach.
    """

    __slots__ = (
        "_tracer",
        "_tid",
        "_signal",
        "_stopped",
        "status",
        "error",
        "_start",
        "_end",
        "_mask",
    )

    def __init__(self, tracer: Tracer, tid: int) -> None:
        self._tracer = tracer
        self._tid = tid
        self._signal = 0
        self._stopped = False
        self.status: Optional[ThreadStatus] = None
        self.error = ""
        self._start = self._end = 0
        self._mask: Set[int] = set()

    def __enter__(self) -> _StopWindow:
        tracer, tid = self._tracer, self._tid
        # A job-control stop (Ctrl-Z) of stackdump now would hold this thread stopped as long
        # as stackdump is: blocked, it stays pending and takes effect when the window ends.
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, _JOB_CONTROL)
        tracer._priority.enter()
        try:
            self._start = time.perf_counter_ns()
            if tracer._ptrace(PTRACE_INTERRUPT, tid, None, None) == -1:
                e = _stop_window_error(PTRACE_INTERRUPT, tid)
                if e.errno != errno.ESRCH:
                    raise e
                # Seized, then gone: an exiting tracee stays a zombie until its tracer
                # reaps it, and its process cannot be reaped by its parent before that.
                tracer._exiting.add(tid)
                self.status = ThreadStatus.THREAD_EXITED
                return self
            outcome = tracer._wait_stop(tid, self._start + tracer._timeout_ns)
        except BaseException:
            self._leave()
            raise
        if outcome is None:
            tracer._pending.add(tid)
            self.status = ThreadStatus.TIMEOUT
            self.error = f"thread did not stop within {tracer._timeout_ns // 1_000_000} ms"
        elif outcome < 0:
            self.status = ThreadStatus.THREAD_EXITED
        else:
            self._stopped = True
            self._signal = outcome
        return self

    def detach(self) -> None:
        if self._tracer._ptrace(PTRACE_DETACH, self._tid, None, self._signal or None) == -1:
            raise _stop_window_error(PTRACE_DETACH, self._tid)
        self._end = time.perf_counter_ns()
        self._stopped = False

    @property
    def pause_ns(self) -> int:
        return self._end - self._start

    def __exit__(self, *exc) -> None:
        if self._stopped:
            self._stopped = False
            _detach_quietly(self._tid, self._signal)
        self._leave()

    def _leave(self) -> None:
        self._tracer._priority.leave()
        self._tracer.reap()
        signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)


class Held:
    """Threads a capture seized and could not release: those that timed out with the
    interrupt pending (detached as soon as they stop) and those that vanished while seized
    (a traced thread's zombie is its tracer's to collect). Kept from one capture to the next
    of a series (sampling), so that a thread that times out in one sample is released when
    it stops, not left stopped until stackdump exits; a lone `Tracer` keeps its own."""

    def __init__(self) -> None:
        self.pending: Set[int] = set()
        self.exiting: Set[int] = set()

    def reap(self) -> bool:
        """Detach the pending threads that have stopped since and reap the zombies;
        whether any thread is still held."""
        for waiting in (self.pending, self.exiting):
            for tid in list(waiting):
                try:
                    pid, status = os.waitpid(tid, os.WNOHANG | WALL)
                except ChildProcessError:
                    waiting.discard(tid)
                    continue
                if pid == 0:
                    continue
                waiting.discard(tid)
                if os.WIFSTOPPED(status):
                    _detach_quietly(tid, _signal_to_reinject(status))
        return bool(self.pending or self.exiting)


class Signals:
    """What a tracer needs of this process's signals from its first seize on: SIGCHLD
    blocked, so that a stop's stays pending for sigtimedwait instead of being discarded, and
    SIGALRM caught, so that it ends a PTRACE_SEIZE that waits too long (`_seize_once`).
    `restore()` puts back what was there. A lone `Tracer` sets them up and restores them
    itself; a series (sampling) keeps them set up across its captures: doing it for each
    capture that stopped a thread was ~35 us of it."""

    def __init__(self) -> None:
        self._before: Optional[Tuple[Set[int], Any]] = None

    def arm(self) -> None:
        if self._before is None:
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
            self._before = (mask, signal.signal(signal.SIGALRM, _ignore_signal))

    def restore(self) -> None:
        if self._before is not None:
            (mask, alarm), self._before = self._before, None
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, alarm)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class Tracer:
    """Captures threads of one process, one at a time. Use as a context manager.

    A thread that does not stop within the timeout stays seized with an interrupt pending:
    the kernel offers no way to cancel that without the thread stopping first. `reap()` (run
    after every capture and on exit) detaches such threads as soon as they stop, and if
    stackdump exits first the kernel detaches them and they run on (exit_ptrace).
    """

    def __init__(
        self,
        pid: int,
        copier: StackCopier,
        timeout_ms: int,
        realtime: bool = True,
        held: Optional[Held] = None,
        signals: Optional[Signals] = None,
        priority: Optional[StopWindowPriority] = None,
    ):
        self.pid = pid
        self._copier = copier
        self._memory = copier.memory
        self._timeout_ns = timeout_ms * 1_000_000
        self._home_buffer = copier.buffers.get("home", copier.stack_bytes)
        self._main_stack = copier.main_stack
        self._ptrace = _STOP_WINDOW_PTRACE
        self._regs = ptrace_registers_t()
        self._regs_address = ctypes.addressof(self._regs)
        self._iovec = _IoVec(self._regs_address, ctypes.sizeof(self._regs))
        self._iovec_address = ctypes.addressof(self._iovec)
        self._held = held if held is not None else Held()
        self._pending = self._held.pending
        self._stubborn_tracers: Set[int] = set()
        self._exiting = self._held.exiting  # seized threads that vanished: reap their zombies
        # A series passes the one it keeps (`live.Series.priority`).
        self._priority = priority if priority is not None else StopWindowPriority(realtime)
        self._signals = signals if signals is not None else Signals()
        self._own_signals = signals is None
        self.attempts = 0

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc) -> None:
        if self._own_signals:
            self._signals.restore()
        self.reap()
        deadline = time.monotonic() + _EXIT_REAP_S
        while self._held_dying() and time.monotonic() < deadline:
            time.sleep(0.001)
            self.reap()

    def _held_dying(self) -> bool:
        """Whether a thread we still hold is on its way out: a traced thread's zombie is its
        tracer's to collect, and until we do, its process cannot be reaped by its parent (a
        process killed mid-dump). A held thread that lives on (stuck in D state) is left to
        the kernel, which detaches it when stackdump exits."""
        if self._exiting:
            return True
        return any(proc.thread_leaving(self.pid, tid) for tid in self._pending)

    # -- public -----------------------------------------------------------------------------

    def _home_stack(
        self, tid: int, fs_base: int, stack_map: Optional[MemoryMap]
    ) -> Optional[MemoryMap]:
        """The thread's own stack mapping when the stack pointer is outside it (a signal
        handler on an alternate stack), else None. [stack] for the main thread; for others,
        the mapping holding the thread pointer, which glibc and musl place at the top of the
        thread's stack. A wrong guess costs one bounded copy. Runs in the stop window, so the
        common case (the thread pointer is in the stack just copied) costs one comparison."""
        if tid == self.pid:
            return self._main_stack if self._main_stack is not stack_map else None
        if stack_map is not None and stack_map.start <= fs_base < stack_map.end:
            return None
        home = self._copier.mapping(fs_base) if fs_base else None
        return home if home is not None and home.writable and home is not stack_map else None

    def capture(
        self, tid: int, name: str, syscall: Optional[SyscallState] = None
    ) -> ThreadSnapshot:
        # At the first seize, not on entering: a sample whose threads have not run since
        # the last (capture/unchanged.py) stops none.
        self._signals.arm()
        self.attempts += 1
        if tid in self._pending:
            self.reap()  # timed out in an earlier capture: released if it has stopped since
        if tid in self._pending:
            # Still ours, its interrupt still pending: wait for that stop again.
            self._pending.discard(tid)
        else:
            failed = self._seize(tid)
            if failed is not None:
                return self._seize_failed(tid, name, failed)
        try:
            with _StopWindow(self, tid) as window:
                if window.status is not None:
                    return self._snapshot(tid, name, window.status, syscall, error=window.error)
                stack_map, start, copied, home, home_start, home_copied = self._copy_stopped(tid)
                window.detach()
        except PtraceError as e:
            if e.errno == errno.ESRCH:
                # Seized, then gone before we detached (killed while stopped): its zombie
                # is ours to collect, or its process cannot be reaped by its parent.
                self._exiting.add(tid)
                self.reap()
                return self._snapshot(tid, name, ThreadStatus.THREAD_EXITED, syscall)
            return self._snapshot(tid, name, ThreadStatus.ATTACH_ERROR, syscall, error=_strerror(e))

        if copied == 0 and proc.is_exited(proc.thread_state(self.pid, tid)):
            # Stopped on its way out (its memory already released): nothing was copied
            # because there is nothing left to copy.
            return self._snapshot(tid, name, ThreadStatus.THREAD_EXITED, syscall)
        regs = _registers_from(self._regs)
        stack = self._copier.data(copied)
        extra = ()
        if home_copied > 0 and home is not None:
            extra = ((home_start, ctypes.string_at(self._home_buffer, home_copied), home),)
        return ThreadSnapshot(
            tid=tid,
            name=name,
            status=ThreadStatus.OK,
            regs=regs,
            stack_map=stack_map,
            stack_base=start,
            stack=stack,
            pause_ns=window.pause_ns,
            attempted=True,
            syscall=syscall,
            extra_stacks=extra,
            stack_top=self._own_top(tid),
        )

    def _own_top(self, tid: int) -> int:
        """Where the thread's own stack ends (`ThreadSnapshot.stack_top`)."""
        if tid == self.pid and self._main_stack is not None:
            return self._main_stack.end
        return getattr(self._regs, _HOST.thread_pointer) if _HOST.thread_pointer else 0

    def _copy_stopped(self, tid: int):
        """What is done while the thread is stopped: its registers into the preallocated
        struct, its stack (and, on an alternate signal stack, its own) into the copier's
        buffers. (stack mapping, address of its first byte copied, bytes copied, home mapping,
        its start, bytes copied.)"""
        if _HOST.ptrace_regset:
            # No PTRACE_GETREGS there: the NT_PRSTATUS regset, into the same struct.
            if self._ptrace(PTRACE_GETREGSET, tid, NT_PRSTATUS, self._iovec_address) == -1:
                raise _stop_window_error(PTRACE_GETREGSET, tid)
        elif self._ptrace(PTRACE_GETREGS, tid, None, self._regs_address) == -1:
            raise _stop_window_error(PTRACE_GETREGS, tid)
        sp = getattr(self._regs, _SP_FIELD)
        thread_pointer = getattr(self._regs, _HOST.thread_pointer) if _HOST.thread_pointer else 0
        stack_map, start, copied = self._copier.copy(tid, sp, thread_pointer)
        home = self._home_stack(tid, thread_pointer, stack_map) if thread_pointer else None
        home_start = home_copied = 0
        if home is not None:
            home_start = max(home.start, home.end - self._copier.stack_bytes)
            home_copied = self._memory.copy_into(
                tid, self._home_buffer, home_start, home.end - home_start
            )
        return stack_map, start, copied, home, home_start, home_copied

    def _seize(self, tid: int) -> Optional[PtraceError]:
        """PTRACE_SEIZE; None on success. A thread held by another tracer for a moment (a
        second stackdump, eu-stack) is tried again until the timeout; a tracer that held a
        thread that long is not waited for again."""
        deadline = time.perf_counter_ns() + self._timeout_ns
        untraced_refusals = 0
        while True:
            try:
                self._seize_once(tid, max(deadline - time.perf_counter_ns(), 1_000_000))
                return None
            except PtraceError as e:
                if e.errno == errno.EINTR:
                    # The seize waited the whole timeout: the process is in execve, which
                    # holds the lock PTRACE_SEIZE takes until its other threads are gone,
                    # and a thread we hold (a zombie to reap, a timed-out one to release)
                    # may be one it waits for. Release them and move on, instead of both
                    # waiting for ever.
                    self.reap()
                    return e
                if e.errno != errno.EPERM:
                    return e
                tracer = proc.tracer_of(self.pid, tid)
                if not tracer:
                    # Released between the refusal and our look, or a refusal of another
                    # kind, which a few more tries tell apart.
                    untraced_refusals += 1
                    if untraced_refusals > _UNTRACED_RETRIES:
                        return e
                    continue
                if tracer in self._stubborn_tracers:
                    return e
                if time.perf_counter_ns() >= deadline:
                    self._stubborn_tracers.add(tracer)
                    return e
                time.sleep(_RETRY_S)

    def _seize_once(self, tid: int, limit_ns: int) -> None:
        """PTRACE_SEIZE, interrupted by SIGALRM (EINTR) if it blocks beyond `limit_ns`."""
        signal.setitimer(signal.ITIMER_REAL, limit_ns / 1e9)
        try:
            _raw_ptrace(PTRACE_SEIZE, tid, 0, 0)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def reap(self) -> None:
        """Detach timed-out threads that have reached their stop since, and reap seized
        threads that exited (`Held.reap`)."""
        self._held.reap()

    # -- internals --------------------------------------------------------------------------

    def _snapshot(
        self,
        tid: int,
        name: str,
        status: ThreadStatus,
        syscall: Optional[SyscallState],
        error: str = "",
    ) -> ThreadSnapshot:
        return ThreadSnapshot(
            tid=tid, name=name, status=status, attempted=True, syscall=syscall, error=error
        )

    def _seize_failed(self, tid: int, name: str, e: PtraceError) -> ThreadSnapshot:
        if e.errno == errno.ESRCH:
            return self._snapshot(tid, name, ThreadStatus.THREAD_EXITED, None)
        if e.errno == errno.EINTR:
            if not proc.thread_exists(self.pid, tid):
                return self._snapshot(tid, name, ThreadStatus.THREAD_EXITED, None)
            return self._snapshot(
                tid,
                name,
                ThreadStatus.TIMEOUT,
                None,
                error=f"could not be attached within {self._timeout_ns // 1_000_000} ms "
                "(the process was in execve)",
            )
        if e.errno == errno.EPERM:
            tracer = proc.tracer_of(self.pid, tid)
            if tracer:
                return self._snapshot(
                    tid,
                    name,
                    ThreadStatus.ATTACH_ERROR,
                    None,
                    error=f"already traced by {proc.describe_process(tracer)}",
                )
            # An exiting thread refuses a seize with EPERM too (its exit_state is set): a
            # process killed between two samples is not a permission problem.
            if proc.thread_leaving(self.pid, tid):
                return self._snapshot(tid, name, ThreadStatus.THREAD_EXITED, None)
            if self.attempts == 1:
                raise PermissionDenied(
                    f"not permitted to trace process {self.pid} (ptrace: EPERM)",
                    help_text=permissions.help_text(self.pid),
                ) from e
        return self._snapshot(tid, name, ThreadStatus.ATTACH_ERROR, None, error=_strerror(e))

    def _wait_stop(self, tid: int, deadline_ns: int) -> Optional[int]:
        """Wait for the interrupt stop: the signal to re-inject (>= 0), -1 if the thread
        exited, None on timeout."""
        # Spinning at real-time priority would keep the thread from reaching its stop when
        # it shares our CPU: sleep at once instead, the stop's SIGCHLD wakes us first.
        spin_until = time.perf_counter_ns() + (0 if self._priority.held else _SPIN_NS)
        while True:
            try:
                pid, status = os.waitpid(tid, os.WNOHANG | WALL)
            except ChildProcessError:
                return -1
            if pid == tid:
                if os.WIFSTOPPED(status):
                    return _signal_to_reinject(status)
                return -1
            now = time.perf_counter_ns()
            if now >= deadline_ns:
                return None
            if now >= spin_until:
                # Any SIGCHLD (this tracee's or a stale one) just means: look again.
                signal.sigtimedwait([signal.SIGCHLD], (deadline_ns - now) / 1e9)


def _signal_to_reinject(status: int) -> int:
    """A signal-delivery-stop must hand its signal back at detach, or the program loses it.
    PTRACE_EVENT_STOP (our interrupt, or a group-stop) carries nothing to deliver."""
    if (status >> 16) == PTRACE_EVENT_STOP:
        return 0
    return os.WSTOPSIG(status)


def _detach_quietly(tid: int, sig: int) -> None:
    with contextlib.suppress(PtraceError):
        _raw_ptrace(PTRACE_DETACH, tid, 0, sig)


class _RegisterOrder:
    """A ptrace register struct's raw bytes -> `Registers` words (one per DWARF number, all
    known) in three C calls: unpack every 64-bit slot, pick the DWARF order, pack. Per
    field getattr and pack_into cost a sampled thread ~15 us (issue 31)."""

    def __init__(self, struct_type, names) -> None:
        fields = [getattr(struct_type, name) for name in names]
        if any(f.size != 8 or f.offset % 8 for f in fields):
            raise ValueError("a register field is not one aligned 64-bit word")
        self._size = ctypes.sizeof(struct_type)
        self._all = struct.Struct(f"<{self._size // 8}Q")
        self._pick = operator.itemgetter(*(f.offset // 8 for f in fields))
        self._words = struct.Struct(f"<{len(fields)}Q")
        self._mask = (1 << len(fields)) - 1

    def registers(self, address: int) -> Registers:
        """The registers of the struct at `address`."""
        raw = self._all.unpack(ctypes.string_at(address, self._size))
        return Registers(self._words.pack(*self._pick(raw)), self._mask, _HOST)


_REGISTER_ORDER = _RegisterOrder(ptrace_registers_t, _HOST.ptrace_names)


def _registers_from(regs_struct) -> Registers:
    return _REGISTER_ORDER.registers(ctypes.addressof(regs_struct))


class _IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("length", ctypes.c_size_t))


def _strerror(e: PtraceError) -> str:
    if e.errno:
        return f"{errno.errorcode.get(e.errno, e.errno)}: {os.strerror(e.errno)}"
    return str(e)
