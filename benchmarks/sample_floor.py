#!/usr/bin/env python3
"""The work of benchmarks/sample_floor.c done by Python through ctypes: each sample lists
/proc/PID/task, preads every thread's schedstat from a descriptor kept open, and captures the
threads whose line moved (seize, interrupt, wait, registers, 64 KiB from sp, detach); no
unwinding, no report. What the interpreter alone adds to the C floor (issue 31).

    python3 benchmarks/sample_floor.py PID SAMPLES INTERVAL_MS

SIGINT ends it early; it prints "samples=N captured=N" on stderr. x86-64 only (the stack
pointer's place in `user_regs_struct`).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Dict

SEIZE, INTERRUPT, GETREGS, DETACH, WALL = 0x4206, 0x4207, 12, 17, 0x40000000
RSP = 19  # user_regs_struct: r15 ... rip, cs, eflags, rsp
BYTES = 64 * 1024


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class Sampler:
    def __init__(self, pid: int) -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.ptrace = libc.ptrace
        self.ptrace.restype = ctypes.c_long
        self.ptrace.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
        self.readv = libc.process_vm_readv
        self.readv.restype = ctypes.c_ssize_t
        self.regs = (ctypes.c_ulong * 27)()
        self.buffer = ctypes.create_string_buffer(BYTES)
        self.local, self.remote = IoVec(ctypes.addressof(self.buffer), BYTES), IoVec(0, BYTES)
        self.pid, self.task = pid, f"/proc/{pid}/task"
        self.fds: Dict[int, int] = {}
        self.last: Dict[int, bytes] = {}

    def sample(self) -> int:
        """One sample: how many threads it captured."""
        captured = 0
        for name in os.listdir(self.task):
            tid = int(name)
            fd = self.fds.get(tid)
            if fd is None:
                fd = self.fds[tid] = os.open(f"{self.task}/{tid}/schedstat", os.O_RDONLY)
            if os.pread(fd, 128, 0) == self.last.get(tid):
                continue
            captured += self.capture(tid)
            self.last[tid] = os.pread(fd, 128, 0)  # the stop itself ran the thread
        return captured

    def capture(self, tid: int) -> int:
        ptrace = self.ptrace
        if ptrace(SEIZE, tid, None, None) != 0:
            return 0
        ptrace(INTERRUPT, tid, None, None)
        os.waitpid(tid, WALL)
        ptrace(GETREGS, tid, None, self.regs)
        self.remote.base = self.regs[RSP]
        self.readv(self.pid, ctypes.byref(self.local), 1, ctypes.byref(self.remote), 1, 0)
        ptrace(DETACH, tid, None, None)
        return 1


def main() -> None:
    pid, samples, interval_s = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000
    sampler = Sampler(pid)
    captured = taken = 0
    wake = time.monotonic()
    try:
        while taken < samples:
            captured += sampler.sample()
            taken += 1
            wake += interval_s
            time.sleep(max(0.0, wake - time.monotonic()))
    except KeyboardInterrupt:
        pass
    print(f"samples={taken} captured={captured}", file=sys.stderr)


if __name__ == "__main__":
    main()
