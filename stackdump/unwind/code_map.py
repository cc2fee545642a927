"""Which addresses can hold a return address: the executable mappings of a snapshot.

A value read from a stack as a return address, or produced by a recovered frame pointer, is
trusted only if it points into code; anything else (0x16, a heap pointer, a stale word) ends
the walk with an error instead of printing a frame that never existed.
"""

from __future__ import annotations

import bisect
from typing import Sequence

from stackdump.types import MemoryMap


class CodeMap:
    """Sorted executable mappings (file-backed, the vDSO, JIT code), looked up by bisection."""

    def __init__(self, maps: Sequence[MemoryMap]) -> None:
        spans = sorted((m.start, m.end) for m in maps if m.executable)
        self._starts = [start for start, _ in spans]
        self._ends = [end for _, end in spans]

    def __contains__(self, address: int) -> bool:
        i = bisect.bisect_right(self._starts, address) - 1
        return i >= 0 and address < self._ends[i]
