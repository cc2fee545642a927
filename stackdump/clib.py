"""The C libraries stackdump calls through ctypes, loaded without `ctypes.util.find_library`,
which runs `ldconfig -p` in a subprocess (~3 ms a call; 13 ms of a small dump)."""

from __future__ import annotations

import ctypes


def libc() -> ctypes.CDLL:
    """The C library this Python runs on: its symbols are already in the process."""
    return ctypes.CDLL(None, use_errno=True)


def library(soname: str, name: str) -> ctypes.CDLL:
    """A shared library by soname, else wherever ldconfig knows `name` to be; OSError if
    neither loads."""
    try:
        return ctypes.CDLL(soname)
    except OSError:
        from ctypes.util import find_library  # imports subprocess: only if the soname failed

        found = find_library(name)
        if not found:
            raise
        return ctypes.CDLL(found)
