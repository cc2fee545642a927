"""Copying bytes out of a live process without stopping it: process_vm_readv, else
/proc/<pid>/mem.

Used by ptrace capture (while the thread is stopped), by passive capture (while the thread is
provably blocked) and for memory that never changes (the vDSO). Stacks are copied into one
preallocated buffer (`StackCopier`), shared by both kinds of capture, so nothing is allocated
in a stop window.
"""

from __future__ import annotations

import bisect
import ctypes
import operator
import os
from typing import Dict, List, Optional, Sequence, Tuple

from stackdump import clib
from stackdump.types import MemoryMap


def _load_process_vm_readv():
    """process_vm_readv(2) with fixed argument types taking iovec addresses as integers: the
    ctypes conversions of a Structure argument (cast, byref, field checks) cost as much as the
    system call itself (3.4 -> 6.3 us for a 3 KiB copy), and a stack is copied while the
    thread is stopped."""
    libc = clib.libc()
    fn = getattr(libc, "process_vm_readv", None)
    if fn is None:
        return None
    fn.argtypes = (
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.c_ulong,
    )
    fn.restype = ctypes.c_ssize_t
    return fn


# Looked up once: a profile makes a reader per sample, and looking it up again cost ~30 us.
_PROCESS_VM_READV = _load_process_vm_readv()
_IOV_MAX = 1024
_BATCH_BYTES = 4 << 20


class RemoteMemory:
    """Reads the memory of one process. `close()` when done."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._readv = _PROCESS_VM_READV
        # Two iovecs back to back, {local base, local len, remote base, remote len}, filled in
        # place for each copy so a copy allocates nothing.
        self._iovecs = (ctypes.c_size_t * 4)()
        self._local_iov = ctypes.addressof(self._iovecs)
        self._remote_iov = self._local_iov + 2 * ctypes.sizeof(ctypes.c_size_t)
        self._mem_fd: Optional[int] = None

    def close(self) -> None:
        if self._mem_fd is not None:
            os.close(self._mem_fd)
            self._mem_fd = None

    def copy_into(self, tid: int, buf, address: int, size: int) -> int:
        """Copy up to `size` bytes at `address` into the ctypes buffer `buf`; the count copied
        (0 on failure). A short count means the range crossed into unmapped memory."""
        return self.copy_to(tid, ctypes.addressof(buf), address, size)

    def copy_to(self, tid: int, local_address: int, address: int, size: int) -> int:
        """`copy_into` for a buffer given by its address (at least `size` bytes long)."""
        if size <= 0:
            return 0
        if self._readv is not None:
            iov = self._iovecs
            iov[0] = local_address
            iov[1] = size
            iov[2] = address
            iov[3] = size
            n = self._readv(tid, self._local_iov, 1, self._remote_iov, 1, 0)
            if n > 0:
                return n
        return self._pread_into(local_address, address, size)

    def read(self, address: int, size: int) -> bytes:
        buf = ctypes.create_string_buffer(size)
        n = self.copy_into(self.pid, buf, address, size)
        return ctypes.string_at(buf, n) if n > 0 else b""

    def read_many(self, addresses: Sequence[int], size: int) -> List[bytes]:
        """`size` bytes at each address (b"" where not all could be read), as `read_ranges`
        reads them: 100,000 coroutine descriptors are ~100 system calls, not 100,000."""
        return [
            d if len(d) == size else b""
            for d in self.read_ranges([(address, size) for address in addresses])
        ]

    def read_ranges(self, ranges: Sequence[Tuple[int, int]]) -> List[bytes]:
        """What `read` returns for each (address, size), in as few system calls as the
        kernel allows: one process_vm_readv per 1,024 ranges (IOV_MAX) or 4 MiB. The kernel
        stops at the first range it cannot read whole; that one is read alone (`read` keeps
        the part that is there), and the ones after it as before."""
        out: List[bytes] = []
        at = 0
        while at < len(ranges):
            batch = _batch(ranges, at)
            copied = self._readv_batch(batch) if self._readv is not None else b""
            offset, start = 0, at
            for _address, size in batch:
                if offset + size > len(copied):
                    break
                out.append(copied[offset : offset + size])
                offset += size
            at = len(out)
            if at < start + len(batch):
                address, size = ranges[at]
                out.append(self.read(address, size) if address and size > 0 else b"")
                at += 1
        return out

    def _readv_batch(self, ranges: Sequence[Tuple[int, int]]) -> bytes:
        count = len(ranges)
        total = sum(size for _address, size in ranges)
        if not total:
            return b""
        buf = ctypes.create_string_buffer(total)
        local = (ctypes.c_size_t * 2)(ctypes.addressof(buf), total)
        remote = (ctypes.c_size_t * (2 * count))()
        remote[0::2] = [address for address, _size in ranges]
        remote[1::2] = [size for _address, size in ranges]
        n = self._readv(self.pid, ctypes.addressof(local), 1, ctypes.addressof(remote), count, 0)
        return ctypes.string_at(buf, n) if n > 0 else b""

    def _pread_into(self, local_address: int, address: int, size: int) -> int:
        try:
            if self._mem_fd is None:
                self._mem_fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY)
            data = os.pread(self._mem_fd, size, address)
        except (OSError, OverflowError):
            return 0
        ctypes.memmove(local_address, data, len(data))
        return len(data)


def _batch(ranges: Sequence[Tuple[int, int]], at: int) -> Sequence[Tuple[int, int]]:
    """The ranges from `at` one system call copies: at most IOV_MAX of them, and no more
    than _BATCH_BYTES together unless the first alone is more (the buffer is made per call)."""
    end, total = at, 0
    while end < len(ranges) and end - at < _IOV_MAX:
        total += max(ranges[end][1], 0)
        if total > _BATCH_BYTES and end > at:
            break
        end += 1
    return ranges[at:end]


class Buffers:
    """Copy buffers by role, kept as long as their owner: a profile reuses one set across
    its samples (making and zero-filling a stack-sized buffer costs ~0.1 ms a capture)."""

    def __init__(self) -> None:
        self._made: Dict[str, ctypes.Array] = {}

    def get(self, role: str, size: int) -> ctypes.Array:
        buffer = self._made.get(role)
        if buffer is None or len(buffer) < size:
            buffer = self._made[role] = ctypes.create_string_buffer(size)
        return buffer


_START = operator.attrgetter("start")


class StackCopier:
    """Copies a thread's stack, from `below` bytes under its stack pointer (the red zone) to
    the end of the mapping holding it (at most `stack_bytes` above the stack pointer), into
    one reusable buffer. `data()` turns the copy into bytes; the next copy overwrites it."""

    def __init__(
        self,
        memory: RemoteMemory,
        maps: Sequence[MemoryMap],
        stack_bytes: int,
        below: int,
        buffers: Optional[Buffers] = None,
    ):
        self.memory = memory
        self.stack_bytes = stack_bytes
        self.below = below
        self.update_maps(maps)
        self.buffers = buffers if buffers is not None else Buffers()
        self._buffer = self.buffers.get("stack", stack_bytes + below)
        self._buffer_address = ctypes.addressof(self._buffer)

    def update_maps(self, maps: Sequence[MemoryMap]) -> None:
        """A newer read of the maps (never called while a thread is stopped)."""
        self.source = maps  # as given: a series reuses this copier while its maps are these
        self.maps = tuple(sorted(maps, key=_START))
        self._starts = [m.start for m in self.maps]
        # The main thread's stack: its top is where that thread's stack ends.
        self.main_stack = next((m for m in self.maps if m.path == "[stack]"), None)

    def mapping(self, address: int) -> Optional[MemoryMap]:
        """The readable mapping holding address, if any."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and self.maps[i].contains(address) and self.maps[i].readable:
            return self.maps[i]
        return None

    def copy(
        self, tid: int, sp: int, thread_pointer: int = 0
    ) -> Tuple[Optional[MemoryMap], int, int]:
        """(mapping holding sp, address of the first byte copied, bytes copied into the
        buffer). A stack mapped after the maps were read (a thread started meanwhile) is
        copied from sp up to `stack_bytes` or its end, whichever comes first, and its
        mapping (None here) is looked up afterwards.

        A thread pointer above sp in the same mapping marks where the thread's stack ends:
        glibc and musl put the thread's descriptor there (x86-64: `struct pthread` from the
        thread pointer up, 2.3 KB in glibc 2.36), which no unwind reads. Leaving it out
        halves what a blocked thread's copy holds."""
        stack_map = self.mapping(sp)
        if stack_map is None:
            return None, sp, self.memory.copy_to(tid, self._buffer_address, sp, self.stack_bytes)
        start = max(stack_map.start, sp - self.below)
        end = thread_pointer if sp < thread_pointer < stack_map.end else stack_map.end
        size = min(end - sp, self.stack_bytes) + (sp - start)
        return stack_map, start, self.memory.copy_to(tid, self._buffer_address, start, size)

    def data(self, copied: int) -> bytes:
        return ctypes.string_at(self._buffer, copied) if copied > 0 else b""
