"""Whether an earlier read of a process's maps still says the truth about the addresses a
sample used, asked of the kernel a mapping at a time (PROCMAP_QUERY, Linux 6.11) instead of
reading the whole file again (issue 31).

A sample reads /proc/PID/maps to know which module holds each pc (the unwind's CFI, the
names) and where each thread's stack is (the copy's bounds). Read whole, it is the costliest
/proc read of a sample: ~75 us for redis's 100 lines, twice that on a CPU just woken from
the sleep between samples, and ~0.5 ms for a process of 1,000 threads. What a report
depends on changes far less often: code is mapped by dlopen and JITs, stacks with threads.

So a series (capture/live.py `Series.maps`) captures with its last read while the process
has the same threads, then asks the kernel about exactly what that capture used: for each
thread captured afresh, the mapping that holds each pc of its unwound frames and the
mapping of its stack. Each must be the same mapping as in the read (start, end,
permissions, file offset, device, inode), and a pc the read placed in no mapping must be in
none now. One ioctl per distinct mapping: a few a sample. If any differs the capture is
taken again with the maps read afresh, so a report never names a pc from a stale layout.
A kernel without the ioctl has the maps read at every sample.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import struct
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from stackdump.types import MemoryMap, ThreadSnapshot

# struct procmap_query (include/uapi/linux/fs.h): size, query_flags, query_addr, vma_start,
# vma_end, vma_flags, vma_page_size, vma_offset, inode (u64 each); dev_major, dev_minor,
# vma_name_size, build_id_size (u32); vma_name_addr, build_id_addr (u64).
_QUERY = struct.Struct("<9Q4I2Q")
_IOC_READ_WRITE = 3
PROCMAP_QUERY = (_IOC_READ_WRITE << 30) | (_QUERY.size << 16) | (ord("f") << 8) | 17
VMA_READABLE, VMA_WRITABLE, VMA_EXECUTABLE, VMA_SHARED = 0x1, 0x2, 0x4, 0x8
# Beyond the last user address: the x86-64 [vsyscall] page is listed in the maps file but
# is no mapping of the process (the kernel's gate area), and PROCMAP_QUERY never finds it.
_USER_END = 1 << 56

# (start, end, permission flags, file offset, inode, device "major:minor" as the maps file
# writes it): what the kernel says of one mapping, and what a maps line says of it.
Vma = Tuple[int, int, int, int, int, str]


class Unsupported(Exception):
    """This kernel has no PROCMAP_QUERY."""


def _flags(perms: str) -> int:
    return (
        (VMA_READABLE if perms[0:1] == "r" else 0)
        | (VMA_WRITABLE if perms[1:2] == "w" else 0)
        | (VMA_EXECUTABLE if perms[2:3] == "x" else 0)
        | (VMA_SHARED if perms[3:4] == "s" else 0)
    )


def as_vma(m: MemoryMap) -> Vma:
    return (m.start, m.end, _flags(m.perms), m.offset, m.inode, m.dev)


def parse(buffer: bytes) -> Vma:
    """A filled struct procmap_query's mapping."""
    fields = _QUERY.unpack(buffer)
    start, end, flags, offset, inode, major, minor = (*fields[3:6], *fields[7:11])
    return (start, end, flags & 0xF, offset, inode, f"{major:02x}:{minor:02x}")


class MapsQuery:
    """PROCMAP_QUERY on an open /proc/PID/maps (or /proc/PID/task/TID/maps) descriptor,
    which stays the caller's."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray(_QUERY.size)

    def find(self, address: int) -> Optional[Vma]:
        """The mapping that holds `address`; None when none does. Raises Unsupported on a
        kernel without the ioctl, OSError when the process is gone."""
        buffer = self._buffer
        _QUERY.pack_into(buffer, 0, _QUERY.size, 0, address, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        try:
            fcntl.ioctl(self._fd, PROCMAP_QUERY, buffer)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            if e.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                raise Unsupported(str(e)) from e
            raise
        return parse(bytes(buffer))


class Layout:
    """One read of the maps, for finding which of its mappings holds an address."""

    def __init__(self, maps: Sequence[MemoryMap]) -> None:
        self.maps = tuple(sorted((m for m in maps if m.start < _USER_END), key=_start))
        self._starts = [m.start for m in self.maps]
        self._vmas: Dict[int, Vma] = {}

    def holder(self, address: int) -> Optional[MemoryMap]:
        i = self.index(address)
        return self.maps[i] if i >= 0 else None

    def index(self, address: int) -> int:
        """The place in `maps` of the mapping holding `address`, -1 when none does."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and address < self.maps[i].end:
            return i
        return -1

    def vma(self, i: int) -> Vma:
        """`maps[i]` as the kernel's answer for it would read, made once."""
        vma = self._vmas.get(i)
        if vma is None:
            vma = self._vmas[i] = as_vma(self.maps[i])
        return vma


def _start(m: MemoryMap) -> int:
    return m.start


def used(threads: Iterable[ThreadSnapshot]) -> Tuple[List[int], List[int]]:
    """The addresses the threads' reports depend on the maps for: each frame's lookup
    address (the call site, for a return address) and each stack's start. (code, stacks)"""
    code: List[int] = []
    stacks: List[int] = []
    for thread in threads:
        if thread.unwound is not None:
            code.extend(frame.lookup_pc for frame in thread.unwound.frames)
        elif thread.regs is not None:
            code.append(thread.regs.pc)
        if thread.stack_map is not None:
            stacks.append(thread.stack_map.start)
    return code, stacks


def still_true(query: MapsQuery, layout: Layout, threads: Iterable[ThreadSnapshot]) -> bool:
    """Whether the kernel still maps every address the threads used as `layout` says:
    the same mapping around each, or none where it had none."""
    code, stacks = used(threads)
    asked: Set[int] = set()  # mappings by their index, addresses in none as -1 - address
    for address in (*code, *stacks):
        i = layout.index(address)
        key = i if i >= 0 else -1 - address
        if key in asked:
            continue
        asked.add(key)
        if i < 0:
            if query.find(address) is not None:
                return False
        elif query.find(layout.maps[i].start) != layout.vma(i):
            return False
    return True
