"""Warnings gathered while a dump runs, each said once: a file stackdump found but would not
open (not a regular file), a cache it would not use. The CLI prints them on stderr; they
never change the report, which says per frame what it could not name."""

from __future__ import annotations

from typing import Dict, Tuple


class Notes:
    """Messages in the order first added, without repeats."""

    def __init__(self) -> None:
        self._messages: Dict[str, bool] = {}  # message -> already handed out

    def add(self, message: str) -> None:
        if message:
            self._messages.setdefault(message, False)

    def take(self) -> Tuple[str, ...]:
        """The messages not handed out before."""
        new = tuple(m for m, taken in self._messages.items() if not taken)
        for message in new:
            self._messages[message] = True
        return new
