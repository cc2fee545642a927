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
import ctypes.util
import os
from typing import Optional, Sequence, Tuple

from stackdump.types import MemoryMap


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _load_process_vm_readv():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(libc, "process_vm_readv", None)
    if fn is None:
        return None
    fn.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(_Iovec),
        ctypes.c_ulong,
        ctypes.POINTER(_Iovec),
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    fn.restype = ctypes.c_ssize_t
    return fn


class RemoteMemory:
    """Reads the memory of one process. `close()` when done."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._readv = _load_process_vm_readv()
        self._local = _Iovec(None, 0)
        self._remote = _Iovec(None, 0)
        self._mem_fd: Optional[int] = None

    def close(self) -> None:
        if self._mem_fd is not None:
            os.close(self._mem_fd)
            self._mem_fd = None

    def copy_into(self, tid: int, buf, address: int, size: int) -> int:
        """Copy up to `size` bytes at `address` into `buf`; the count copied (0 on failure).
        A short count means the range crossed into unmapped memory."""
        if size <= 0:
            return 0
        if self._readv is not None:
            self._local.iov_base = ctypes.cast(buf, ctypes.c_void_p)
            self._local.iov_len = size
            self._remote.iov_base = address
            self._remote.iov_len = size
            n = self._readv(tid, ctypes.byref(self._local), 1, ctypes.byref(self._remote), 1, 0)
            if n > 0:
                return n
        return self._pread_into(buf, address, size)

    def read(self, address: int, size: int) -> bytes:
        buf = ctypes.create_string_buffer(size)
        n = self.copy_into(self.pid, buf, address, size)
        return ctypes.string_at(buf, n) if n > 0 else b""

    def _pread_into(self, buf, address: int, size: int) -> int:
        try:
            if self._mem_fd is None:
                self._mem_fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY)
            data = os.pread(self._mem_fd, size, address)
        except (OSError, OverflowError):
            return 0
        ctypes.memmove(buf, data, len(data))
        return len(data)


class StackCopier:
    """Copies a thread's stack, from its stack pointer to the end of the mapping holding it
    (at most `stack_bytes`), into one reusable buffer. `data()` turns the copy into bytes;
    the next copy overwrites it."""

    def __init__(self, memory: RemoteMemory, maps: Sequence[MemoryMap], stack_bytes: int):
        self.memory = memory
        self.maps = tuple(sorted(maps, key=lambda m: m.start))
        self.stack_bytes = stack_bytes
        self._starts = [m.start for m in self.maps]
        self._buffer = ctypes.create_string_buffer(stack_bytes)

    def mapping(self, address: int) -> Optional[MemoryMap]:
        """The readable mapping holding address, if any."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and self.maps[i].contains(address) and self.maps[i].readable:
            return self.maps[i]
        return None

    def copy(self, tid: int, sp: int) -> Tuple[Optional[MemoryMap], int]:
        """(mapping holding sp, bytes copied into the buffer)."""
        stack_map = self.mapping(sp)
        if stack_map is None:
            return None, 0
        size = min(stack_map.end - sp, self.stack_bytes)
        return stack_map, self.memory.copy_into(tid, self._buffer, sp, size)

    def data(self, copied: int) -> bytes:
        return ctypes.string_at(self._buffer, copied) if copied > 0 else b""
