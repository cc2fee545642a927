"""What stackdump says on stderr besides the report: errors, warnings and notes, one line
each (coloured by rich only on a terminal), and the progress bar a long dump draws there.
Messages carry values already escaped (stackdump.escape).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Sequence


def say(prefix: str, message: str, help_text: str = "", style: str = "bold red") -> None:
    stream = sys.stderr
    if stream is None:
        return
    try:
        if stream.isatty():
            # rich (~40 ms to import) only for a terminal
            from rich.console import Console
            from rich.markup import escape as markup_escape

            # Values in messages are already escaped (stackdump.escape); only rich's own
            # markup must not be read into them.
            console = Console(stderr=True, highlight=False)
            console.print(f"[{style}]stackdump: {prefix}:[/] {markup_escape(message)}")
            if help_text:
                console.print(help_text, style="yellow", markup=False)
        else:
            stream.write(f"stackdump: {prefix}: {message}\n")
            if help_text:
                stream.write(help_text + "\n")
        stream.flush()
    except OSError:
        pass  # stderr itself is gone: the exit status still tells


def error(message: str, help_text: str = "") -> None:
    say("error", message, help_text)


def warn(messages: Sequence[str]) -> None:
    for message in messages:
        say("warning", message, style="bold yellow")


class TerminalProgress:
    """A progress bar on stderr, only when it is a terminal and the dump has already taken
    half a second (a short dump, or an early error, never flashes one). Drawn from the
    engine's callbacks, which come between threads: no drawing thread runs while a thread
    of the target is stopped."""

    DELAY_S = 0.5
    PERIOD_S = 0.1
    LABELS = {
        "capture": "capturing threads",
        "symbolization": "symbolizing",
        "sampling": "sampling",
    }

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._start = time.monotonic()
        self._last = 0.0
        self._bar = None
        self._task = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._start < self.DELAY_S or (now - self._last < self.PERIOD_S and done < total):
            return
        self._last = now
        if self._bar is None:
            # rich (~40 ms to import) only for a dump long enough to show a bar
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(stderr=True),
                transient=True,
                auto_refresh=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=None)
        label = self.LABELS.get(phase, phase)
        self._bar.update(self._task, description=label, completed=done, total=total)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            with contextlib.suppress(OSError):
                bar.stop()


def isatty(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False
