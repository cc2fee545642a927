"""aarch64 checks on raw code bytes: is the instruction before a return address a call
(`bl`, `blr`, and the pointer-authenticating `blraa`/`blrab`/`blraaz`/`blrabz`), and where
does it go; is code a PLT stub (`adrp x16`; `ldr x17`; `add x16`; `br x17`); and is it the
kernel's signal-return trampoline (`mov x8, #139`; `svc #0`), whose frame is the
`rt_sigframe` the kernel pushed, read by `sigreturn_registers`. Every instruction is 4
bytes, little-endian."""

from __future__ import annotations

import struct
from typing import Optional, Tuple

from stackdump.arch.calls import CallKind

MAX_CALL_LENGTH = 4
_MASK = 0xFFFF_FFFF_FFFF_FFFF


def call_before(code: bytes, return_address: int) -> Optional[Tuple[CallKind, int]]:
    if len(code) < 4:
        return None
    (word,) = struct.unpack_from("<I", code, len(code) - 4)
    if word & 0xFC000000 == 0x94000000:  # bl imm26
        offset = word & 0x03FFFFFF
        if offset & 0x02000000:
            offset -= 1 << 26
        return CallKind.DIRECT, (return_address - 4 + 4 * offset) & _MASK
    if word & 0xFFFFFC1F == 0xD63F0000:  # blr xn
        return CallKind.INDIRECT, 0
    if word & 0xFFFFF800 == 0xD73F0800:  # blraa, blrab xn, xm
        return CallKind.INDIRECT, 0
    if word & 0xFFFFF81F == 0xD63F081F:  # blraaz, blrabz xn
        return CallKind.INDIRECT, 0
    return None


def is_plt_stub(code: bytes) -> bool:
    if len(code) < 4:
        return False
    (first,) = struct.unpack_from("<I", code)
    if first == 0xD503233F and len(code) >= 8:  # paciasp before it (a BTI/PAC PLT)
        (first,) = struct.unpack_from("<I", code, 4)
    if first == 0xD503245F and len(code) >= 8:  # bti c
        (first,) = struct.unpack_from("<I", code, 4)
    return first & 0x9F00001F == 0x90000010  # adrp x16, page


_SIGRETURN = struct.pack("<II", 0xD2801168, 0xD4000001)  # mov x8, #139 (rt_sigreturn); svc #0
# rt_sigframe: siginfo (128 bytes), then the ucontext, whose uc_mcontext (a sigcontext) is 176
# bytes in: fault_address, then regs[31], sp, pc (arch/arm64/include/uapi/asm/sigcontext.h).
_SIGCONTEXT = 128 + 176


def sigreturn_registers(code: bytes, sp: int, read_word) -> Optional[dict]:
    """At a signal-return trampoline (`code` the bytes at pc, the frame at `sp`): the
    registers of the interrupted code, by DWARF number, from the sigcontext; else None.
    What a vDSO's CFI says on a real machine, for trampolines without CFI (qemu-user's)."""
    if code[:8] != _SIGRETURN:
        return None
    base = sp + _SIGCONTEXT
    values = {}
    for i in range(31):
        value = read_word(base + 8 + 8 * i)
        if value is None:
            return None
        values[i] = value
    sp_value, pc_value = read_word(base + 8 + 248), read_word(base + 8 + 256)
    if sp_value is None or pc_value is None:
        return None
    values[31], values[32] = sp_value, pc_value
    return values
