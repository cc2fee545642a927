"""What SIGINT and SIGTERM do, phase by phase (docs/FORMAT.md "Exit status").

Imported before anything heavy, so that a Ctrl-C while Python is still importing the CLI is
handled the same way as one later. Two kinds of phase:

- *immediate* (start-up, argument checks, opening the output, writing the report): the signal
  raises `Interrupted` at once, even out of a blocked open() or write(); the entry point then
  cleans up, says so on stderr and ends by that same signal, as a shell expects;
- *deferred* (capture, unwinding and symbolization): the first signal of the phase is only
  recorded; the engine asks `requested()` between threads and frames, so no thread is ever
  left stopped and what was done is reported. A second signal in the same phase raises
  `Interrupted` like an immediate one.

Only modules of the standard library may be imported here.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Raised out of whatever was running when SIGINT/SIGTERM arrived.

    A BaseException, so no `except Exception` on the way can swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class Interrupts:
    """The handler for SIGINT/SIGTERM and the phase it is in. One per process, made by the
    entry point; the engine sees it only as a `requested()` callable."""

    def __init__(self) -> None:
        self.count = 0
        self.last: Optional[int] = None
        self._deferred = False
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
        if self._deferred and self.count == self._phase_start + 1:
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

    def requested(self) -> bool:
        """A signal arrived during the current deferred phase."""
        return self.count > self._phase_start

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
