"""C++ (Itanium) demangling through libstdc++'s own `__cxa_demangle`, loaded with ctypes.

Using the C++ runtime's demangler gives exactly the names gdb and eu-stack print. When the
library is missing, names stay mangled: a mangled name is still a correct answer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Dict, Optional


class Demangler:
    def __init__(self) -> None:
        self._fn = None
        self._free = None
        self._cache: Dict[str, str] = {}
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            return
        fn = getattr(lib, "__cxa_demangle")  # getattr: a dunder name would be mangled
        fn.argtypes = [
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int),
        ]
        fn.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        self._fn = fn
        self._free = libc.free

    def demangle(self, name: str) -> str:
        if not name.startswith("_Z"):
            return name
        cached = self._cache.get(name)
        if cached is None:
            cached = self._cxa(name) or name
            self._cache[name] = cached
        return cached

    def _cxa(self, name: str) -> Optional[str]:
        if self._fn is None:
            return None
        # Versioned names (foo@@GLIBCXX_3.4) are not mangled names; demangle the base.
        base, at, version = name.partition("@")
        status = ctypes.c_int(0)
        ptr = self._fn(base.encode(), None, None, ctypes.byref(status))
        if not ptr or status.value != 0:
            return None
        try:
            text = ctypes.string_at(ptr).decode("utf-8", "replace")
        finally:
            self._free(ptr)
        return text + at + version if at else text
