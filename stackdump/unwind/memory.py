"""StackMemory: bounds-checked reads of a thread's copied stack, never of the live process.

Two limits matter and are kept apart: the stack *mapping* (where a frame may legally be) and
the *copied* bytes (what capture took). A read inside the mapping but past the copy means the
copy was too short (`stack_copy_limit`), not that the stack is corrupt.
"""

from __future__ import annotations

import struct
from typing import Optional

_U64 = struct.Struct("<Q")


class StackMemory:
    def __init__(self, base: int, data: bytes, map_start: int, map_end: int) -> None:
        self.base = base
        self.data = data
        self.end = base + len(data)
        self.map_start = map_start
        self.map_end = map_end

    def in_mapping(self, address: int, size: int = 8) -> bool:
        return self.map_start <= address and address + size <= self.map_end

    def in_copy(self, address: int, size: int = 8) -> bool:
        return self.base <= address and address + size <= self.end

    def read_word(self, address: int) -> Optional[int]:
        if not self.in_copy(address):
            return None
        return _U64.unpack_from(self.data, address - self.base)[0]
