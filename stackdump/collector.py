"""When Python's cyclic garbage collector may run: not while a capture holds threads (a pass
inside a stop window would stretch that thread's pause), nor through a single dump that the
process ends after (it would only rescan what the dump is building). One place, so both say
"paused" the same way and leave it as they found it."""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


class paused:  # noqa: N801 - used as a function: `with paused():`
    """No cyclic collection inside; enabled again after only if it was before (a pause
    inside a pause leaves it to the outer one). Reference counting frees as usual. A class,
    not a generator: a profile enters one for each sample."""

    __slots__ = ("_enabled",)

    def __enter__(self) -> None:
        self._enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc) -> None:
        if self._enabled:
            gc.enable()


@contextlib.contextmanager
def importing() -> Iterator[None]:
    """Start-up's imports: no cyclic collection while modules load (each pass rescans what
    the imports have built, none of which is garbage: ~2 ms of a dump's start-up), then what
    they built is left out of every later pass (`gc.freeze`), so a long profile's collections
    scan only what its samples make."""
    with paused():
        yield
    gc.freeze()
