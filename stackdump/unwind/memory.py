"""StackMemory: bounds-checked reads of a thread's copied stack, never of the live process.

Two limits matter and are kept apart: the stack *mapping* (where a frame may legally be) and
the *copied* bytes (what capture took). A read inside the mapping but past the copy means the
copy was too short (`stack_copy_limit`), not that the stack is corrupt.

The primary region is the one holding the stack pointer; the frame-pointer walk stays inside
it (Doris's rule). Extra regions (the thread's own stack, when the stack pointer was on a
signal alternate stack) serve CFI reads that cross a signal frame.
"""

from __future__ import annotations

import struct
from typing import Optional, Sequence

_U64 = struct.Struct("<Q")


class StackMemory:
    def __init__(
        self,
        base: int,
        data: bytes,
        map_start: int,
        map_end: int,
        extra: Sequence[StackMemory] = (),
    ) -> None:
        self.base = base
        self.data = data
        self.end = base + len(data)
        self.map_start = map_start
        self.map_end = map_end
        self.extra = tuple(extra)

    def in_mapping(self, address: int, size: int = 8) -> bool:
        return self.map_start <= address and address + size <= self.map_end

    def in_copy(self, address: int, size: int = 8) -> bool:
        return self.base <= address and address + size <= self.end

    def in_any_mapping(self, address: int, size: int = 8) -> bool:
        return self.in_mapping(address, size) or any(
            e.in_mapping(address, size) for e in self.extra
        )

    def read_word(self, address: int) -> Optional[int]:
        if self.base <= address and address + 8 <= self.end:
            return _U64.unpack_from(self.data, address - self.base)[0]
        for region in self.extra:
            if region.base <= address and address + 8 <= region.end:
                return _U64.unpack_from(region.data, address - region.base)[0]
        return None
