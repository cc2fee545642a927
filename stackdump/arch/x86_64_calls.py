"""x86-64 call-site checks on raw code bytes: is there a call instruction just before a
return address, and where does it go.

Just enough instruction decoding to validate a return address (`call rel32`, and the
`call r/m64` forms, opcode FF /2) and to recognise a PLT stub, which no call target check
can see through.
"""

from __future__ import annotations

import struct
from typing import Optional, Tuple

from stackdump.arch.calls import CallKind

# The longest call instruction call_before recognises (FF /2 with SIB and disp32).
MAX_CALL_LENGTH = 7


def _modrm_length(modrm: int, sib: Optional[int]) -> int:
    """Length of ModRM plus SIB and displacement for a 64-bit memory or register operand."""
    mod, rm = modrm >> 6, modrm & 7
    if mod == 3:
        return 1
    length = 1
    if rm == 4:
        if sib is None:
            return -1
        length += 1
        if mod == 0 and (sib & 7) == 5:
            length += 4
    elif mod == 0 and rm == 5:
        length += 4  # rip-relative
    if mod == 1:
        length += 1
    elif mod == 2:
        length += 4
    return length


def call_before(code: bytes, return_address: int) -> Optional[Tuple[CallKind, int]]:
    """The call that ends where `code` ends (code = the bytes just before return_address):
    (DIRECT, target: E8 rel32) or (INDIRECT, 0: FF /2), or None when no call instruction
    ends there."""
    n = len(code)
    if n >= 5 and code[n - 5] == 0xE8:
        rel = struct.unpack_from("<i", code, n - 5 + 1)[0]
        return CallKind.DIRECT, (return_address + rel) & 0xFFFFFFFFFFFFFFFF
    for length in range(2, 8):
        at = n - length
        if at < 0:
            break
        if code[at] != 0xFF:
            continue
        modrm = code[at + 1]
        if (modrm >> 3) & 7 != 2:
            continue
        sib = code[at + 2] if at + 2 < n else None
        if 1 + _modrm_length(modrm, sib) == length:
            return CallKind.INDIRECT, 0
    return None


_ENDBR64 = b"\xf3\x0f\x1e\xfa"


def is_plt_stub(code: bytes) -> bool:
    """`jmp *rel(%rip)`, optionally after endbr64 and a bnd prefix: a PLT or PLT.sec entry,
    whose real destination is only known at run time."""
    if code.startswith(_ENDBR64):
        code = code[4:]
    if code.startswith(b"\xf2"):
        code = code[1:]
    return code.startswith(b"\xff\x25")
