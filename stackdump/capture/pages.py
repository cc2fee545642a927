"""Which pages of a live process exist (`Pagemap`, from /proc/PID/pagemap) and which
mapping holds an address (`MapIndex`): what the coroutine search asks before it reads memory,
so that it never faults in a page the process does not have. A core's answer is
`core.CorePages`."""

from __future__ import annotations

import bisect
import os
import struct
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from stackdump.types import MemoryMap

_PAGE_SIZE = 4096


class MapIndex:
    """The mapping holding an address, by bisection: a process with 10,000 bthreads has
    20,000 mappings, and a linear search per coroutine would dominate."""

    def __init__(self, maps: Sequence[MemoryMap]) -> None:
        self._maps = sorted(maps, key=lambda m: m.start)
        self._starts = [m.start for m in self._maps]

    def find(self, address: int) -> Optional[MemoryMap]:
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and self._maps[i].contains(address):
            return self._maps[i]
        return None


class Pagemap:
    """Which pages of a range the process has (present or swapped), from /proc/PID/pagemap;
    every page when it cannot be read."""

    def __init__(self, path: Optional[str]) -> None:
        self._fd: Optional[int] = None
        if path is not None:
            try:
                self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._fd = None

    def present(self, start: int, end: int) -> Iterable[Tuple[int, int]]:
        if self._fd is None:
            return [(start, end)]
        first, count = start // _PAGE_SIZE, (end - start) // _PAGE_SIZE
        try:
            raw = os.pread(self._fd, count * 8, first * 8)
        except OSError:
            return [(start, end)]
        if len(raw) != count * 8:
            return [(start, end)]
        runs: List[Tuple[int, int]] = []
        entries = struct.unpack(f"<{count}Q", raw)
        run = None
        for i, entry in enumerate(entries):
            if entry >> 62:  # present (63) or swapped (62)
                if run is None:
                    run = i
            elif run is not None:
                runs.append((start + run * _PAGE_SIZE, start + i * _PAGE_SIZE))
                run = None
        if run is not None:
            runs.append((start + run * _PAGE_SIZE, end))
        return runs

    def resident_end(self, index: MapIndex):
        """address -> the end of the run of pages the process has that holds it (the end
        of its mapping when that cannot be told)."""
        cache: Dict[int, List[Tuple[int, int]]] = {}

        def end_of(address: int) -> int:
            mapping = index.find(address)
            if mapping is None:
                return address
            runs = cache.get(mapping.start)
            if runs is None:
                runs = cache[mapping.start] = list(self.present(mapping.start, mapping.end))
            for start, end in runs:
                if start <= address < end:
                    return end
            return address

        return end_of

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
