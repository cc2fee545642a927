"""What SIGINT and SIGTERM do, phase by phase (docs/FORMAT.md "Exit status").

Imported before anything heavy, so that a Ctrl-C while Python is still importing the CLI is
handled the same way as one later. Two kinds of phase:

- *immediate* (start-up, argument checks, opening the output, writing the report): the signal
  raises `Interrupted` at once, even out of a blocked open() or write(); the entry point then
  cleans up, says so on stderr and ends by that same signal, as a shell expects;
- *deferred* (capture, unwinding and symbolization): the first signal of the phase is only
  recorded; the engine asks `requested()` between threads and frames, so no thread is ever
  left stopped and what was done is reported. A second signal in the same phase raises
  `Interrupted` like an immediate one. Inside a deferred phase, work that may take seconds
  and is safe to abandon (reading one thread's symbols) runs `cancellable()`: there the first
  signal raises `Cancelled` at once, for the engine to catch and fall back from.

Only modules of the standard library may be imported here.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Callable, Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Cancellable:
    """`Interrupts.cancellable()`'s context: while inside, the first signal raises."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Interrupts) -> None:
        self._owner = owner

    def __enter__(self) -> None:
        self._owner._cancellable = True

    def __exit__(self, *exc) -> None:
        self._owner._cancellable = False


class Interrupted(BaseException):
    """Raised out of whatever was running when SIGINT/SIGTERM arrived.

    A BaseException, so no `except Exception` on the way can swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class Cancelled(Interrupted):
    """The first signal of a deferred phase, raised inside `Interrupts.cancellable()`."""


class Interrupts:
    """The handler for SIGINT/SIGTERM and the phase it is in. One per process, made by the
    entry point; the engine sees it only as a `requested()` callable."""

    def __init__(self) -> None:
        self.count = 0
        self.last: Optional[int] = None
        self._deferred = False
        self._cancellable = False
        self._window = _Cancellable(self)
        self._held = False
        self._phase_start = 0

    def install(self) -> None:
        for sig in SIGNALS:
            signal.signal(sig, self._handle)

    def ignore(self) -> None:
        """From now on SIGINT/SIGTERM do nothing: stackdump is on its way out."""
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1
        self.last = signum
        if self._held:
            return
        if self._deferred and self.count == self._phase_start + 1:
            if self._cancellable:
                raise Cancelled(signum)
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[Interrupts]:
        """A phase that winds down on its own when asked (see the module docstring)."""
        self._deferred = True
        self._phase_start = self.count
        try:
            yield self
        finally:
            self._deferred = False

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Work no signal may cut into, because the exception would land where it is lost:
        importing a module. The import machinery runs code (a module lock's weakref callback)
        where an exception is only printed as "Exception ignored" and dropped, and a module
        left half-imported. A signal is recorded and acted on when the block ends: raised as
        in an immediate phase, or, the first one of a deferred phase, left for `requested()`."""
        before = self.count
        self._held = True
        try:
            yield
        finally:
            self._held = False
        if self.count > before and not (self._deferred and self.count == self._phase_start + 1):
            raise Interrupted(self.last or signal.SIGINT)

    def cancellable(self) -> _Cancellable:
        """Work inside a deferred phase that the phase's first signal cuts short by raising
        `Cancelled` (see the module docstring); the caller catches it and falls back. A
        second signal raises `Interrupted`, which the caller lets through. (One object,
        not a generator per call: analysis enters it once per thread, 100,000 times for
        as many coroutines.)"""
        return self._window

    def requested(self) -> bool:
        """A signal arrived during the current deferred phase."""
        return self.count > self._phase_start

    def raise_if_requested(self) -> None:
        """Raise `Interrupted` for a signal recorded in this phase: for work that can end
        only between its steps (writing the report a chunk at a time)."""
        if self.requested():
            raise Interrupted(self.last or signal.SIGINT)

    def since_now(self) -> Callable[[], bool]:
        """Whether a signal arrives from now on: a part of a phase that must not be cut
        short by a signal that came before it (capture stopped by one still symbolizes)."""
        mark = self.count
        return lambda: self.count > mark

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.last).name if self.last else ""


def die_by(signum: int) -> None:
    """End the process by `signum` itself (its default action), so a calling shell sees
    "killed by SIGINT" (status 130) and stops its own loop, as it would for any command."""
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # not reached: the default action of SIGINT/SIGTERM ends us
