"""Demangling: C++ (Itanium) through libstdc++'s own `__cxa_demangle`, loaded with ctypes,
Rust's legacy scheme (an Itanium-shaped `_ZN...17h<hash>E` with `$..$` escapes), and Rust's
v0 scheme (`_R...`, see rust_v0.py).

Using the C++ runtime's demangler gives exactly the names gdb and eu-stack print. When the
library is missing, names stay mangled: a mangled name is still a correct answer.
"""

from __future__ import annotations

import ctypes
import re
from typing import Dict, Optional

from stackdump import clib
from stackdump.symbols.rust_v0 import demangle_rust_v0


class Demangler:
    """Names demangled, each once. libstdc++ is loaded on the first C++ name, not when the
    demangler is made: a profile's samples make a symbolizer each, and most name nothing
    new (two ctypes loads were ~15 us of every sample)."""

    def __init__(self) -> None:
        self._fn = None
        self._free = None
        self._loaded = False
        self._cache: Dict[str, str] = {}

    def _load(self) -> None:
        self._loaded = True
        try:
            lib = clib.library("libstdc++.so.6", "stdc++")
            libc = clib.libc()
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
        if name.startswith("_R"):
            return demangle_rust_v0(name) or name
        if not name.startswith("_Z"):
            return name
        cached = self._cache.get(name)
        if cached is None:
            cached = demangle_rust_legacy(name) or self._cxa(name) or name
            self._cache[name] = cached
        return cached

    def _cxa(self, name: str) -> Optional[str]:
        if not self._loaded:
            self._load()
        if self._fn is None:
            return None
        # Versioned names (foo@@GLIBCXX_3.4) are not mangled names; demangle the base.
        base, at, version = name.partition("@")
        status = ctypes.c_int(0)
        ptr = self._fn(base.encode("utf-8", "surrogateescape"), None, None, ctypes.byref(status))
        if not ptr or status.value != 0:
            return None
        try:
            text = ctypes.string_at(ptr).decode("utf-8", "surrogateescape")
        finally:
            self._free(ptr)
        return text + at + version if at else text


_RUST_HASH = re.compile(r"17h[0-9a-f]{16}E")
_RUST_ESCAPES = {
    "SP": "@",
    "BP": "*",
    "RF": "&",
    "LT": "<",
    "GT": ">",
    "LP": "(",
    "RP": ")",
    "C": ",",
}


def demangle_rust_legacy(name: str) -> Optional[str]:
    """`_ZN4core3ptr13drop_in_place17h0123456789abcdefE` -> `core::ptr::drop_in_place`.

    Recognized only by its trailing 16-hex-digit hash path element, as rustc-demangle does.
    """
    hashes = list(_RUST_HASH.finditer(name))
    if not name.startswith("_ZN") or not hashes:
        return None
    body = name[: hashes[-1].end()]  # drops LLVM suffixes such as .llvm.123
    parts = []
    i = 3
    end = len(body) - 1  # the final 'E'
    while i < end:
        j = i
        while j < end and body[j].isdigit():
            j += 1
        if j == i:
            return None
        length = int(body[i:j])
        part = body[j : j + length]
        if len(part) != length:
            return None
        parts.append(part)
        i = j + length
    if not parts or not parts[-1].startswith("h"):
        return None
    return "::".join(_unescape_rust(p) for p in parts[:-1])


def _unescape_rust(part: str) -> str:
    if part.startswith("_$"):
        part = part[1:]
    out = []
    i = 0
    while i < len(part):
        if part.startswith("..", i):
            out.append("::")
            i += 2
        elif part[i] == "$":
            close = part.find("$", i + 1)
            code = part[i + 1 : close] if close > 0 else ""
            if code in _RUST_ESCAPES:
                out.append(_RUST_ESCAPES[code])
            elif code.startswith("u") and len(code) > 1:
                try:
                    out.append(chr(int(code[1:], 16)))
                except ValueError:
                    return part
            else:
                return part
            i = close + 1
        else:
            out.append(part[i])
            i += 1
    return "".join(out)
