"""CIEs and FDEs of `.eh_frame` and `.debug_frame`, parsed from their bytes (DWARF 5 section
6.4.1, the LSB's `.eh_frame` encodings): one entry at a given section offset, or all of them
for an index. Entries are read from a stream a bounded piece at a time, so a damaged length
costs what the section holds, never more. Raises `CfiFormatError` (a ValueError) for what
does not decode.

Our own, not pyelftools': pyelftools' parser drags its whole `construct` library into every
dump's start-up (~20 ms) and was reached through a private method.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Dict, Iterator, List, Optional, Tuple, Union

from stackdump.records import frozen

# Instruction operands: u = ULEB128, s = SLEB128, b = block (ULEB128 length, bytes),
# 1/2/4 = fixed unsigned, a = an address in the FDE's pointer encoding.
_OPERANDS = {
    0x00: "", 0x01: "a", 0x02: "1", 0x03: "2", 0x04: "4", 0x05: "uu", 0x06: "u", 0x07: "u",
    0x08: "u", 0x09: "uu", 0x0A: "", 0x0B: "", 0x0C: "uu", 0x0D: "u", 0x0E: "u", 0x0F: "b",
    0x10: "ub", 0x11: "us", 0x12: "us", 0x13: "s", 0x14: "uu", 0x15: "us", 0x16: "ub",
    0x2D: "", 0x2E: "u", 0x2F: "uu",
}  # fmt: skip
_MAX_ENTRY = 1 << 20  # no FDE of a real program comes near; a larger length is damage
_FIXED = {0x02: "<H", 0x03: "<I", 0x04: "<Q", 0x0A: "<h", 0x0B: "<i", 0x0C: "<q"}
DW_EH_PE_OMIT = 0xFF

Instruction = Tuple[int, Tuple[object, ...]]


class CfiFormatError(ValueError):
    """A CIE or FDE that does not decode."""


@frozen
class Cie:
    offset: int
    version: int
    augmentation: bytes
    code_alignment_factor: int
    data_alignment_factor: int
    return_address_register: int
    fde_encoding: int
    instructions: Tuple[Instruction, ...]


@frozen
class Fde:
    offset: int
    cie: Cie
    initial_location: int
    address_range: int
    instructions: Tuple[Instruction, ...]

    def covers(self, vaddr: int) -> bool:
        return self.initial_location <= vaddr < self.initial_location + self.address_range


class _Reader:
    """Cursor over one entry's bytes; `base` is the address of byte 0 (for pc-relative
    pointers)."""

    def __init__(self, data: bytes, pos: int, base: int) -> None:
        self.data, self.pos, self.base = data, pos, base

    def need(self, n: int) -> int:
        at = self.pos
        if at + n > len(self.data):
            raise CfiFormatError("runs past the end of its entry")
        self.pos = at + n
        return at

    def fixed(self, fmt: str) -> int:
        return struct.unpack_from(fmt, self.data, self.need(struct.calcsize(fmt)))[0]

    def uleb(self) -> int:
        return self._leb(signed=False)

    def sleb(self) -> int:
        return self._leb(signed=True)

    def _leb(self, signed: bool) -> int:
        value = shift = 0
        while True:
            byte = self.data[self.need(1)]
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value - (1 << shift) if signed and byte & 0x40 else value
            if shift > 70:
                raise CfiFormatError("a LEB128 number too long")

    def block(self) -> bytes:
        size = self.uleb()
        at = self.need(size)
        return self.data[at : at + size]

    def pointer(self, encoding: int, relative: bool = True) -> int:
        """A pointer in a DW_EH_PE encoding; `relative` False for a range (a length)."""
        if encoding == DW_EH_PE_OMIT:
            return 0
        field_address = self.base + self.pos
        kind = encoding & 0x0F
        if kind == 0x00 or kind == 0x04:
            value = self.fixed("<Q")
        elif kind == 0x01:
            value = self.uleb()
        elif kind == 0x09:
            value = self.sleb()
        elif kind in _FIXED:
            value = self.fixed(_FIXED[kind])
        else:
            raise CfiFormatError(f"pointer encoding 0x{encoding:02x} unknown")
        application = encoding & 0x70
        if relative and application == 0x10:  # pcrel
            value += field_address
        elif relative and application not in (0x00, 0x10):
            raise CfiFormatError(f"pointer encoding 0x{encoding:02x} not supported")
        return value & 0xFFFF_FFFF_FFFF_FFFF


class CfiEntries:
    """The entries of one CFI section, read from `stream` (`size` bytes, at ELF virtual
    address `vaddr`); `eh`: `.eh_frame` rules, else `.debug_frame`'s."""

    def __init__(self, stream: BinaryIO, size: int, vaddr: int, eh: bool) -> None:
        self._stream, self._size, self._vaddr, self._eh = stream, size, vaddr, eh
        self._cies: Dict[int, Cie] = {}

    def at(self, offset: int) -> Union[Cie, Fde, None]:
        """The entry at `offset`; None for a terminator (length 0)."""
        data, pos, id_offset, cie_id = self._raw(offset)
        if data == b"":
            return None
        reader = _Reader(data, pos, self._vaddr + offset)
        if cie_id == 0 if self._eh else cie_id in (0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF):
            return self._cie(offset, reader)
        cie_offset = id_offset - cie_id if self._eh else cie_id
        return self._fde(offset, reader, self.cie_at(cie_offset))

    def cie_at(self, offset: int) -> Cie:
        cie = self._cies.get(offset)
        if cie is None:
            if not 0 <= offset < self._size:
                raise CfiFormatError(f"CIE pointer 0x{offset:x} outside the section")
            entry = self.at(offset)
            if not isinstance(entry, Cie):
                raise CfiFormatError(f"no CIE at 0x{offset:x}")
            cie = self._cies[offset] = entry
        return cie

    def fdes(self) -> Iterator[Fde]:
        """Every FDE, in section order; stops at the first entry that does not decode."""
        offset = 0
        while offset + 4 <= self._size:
            data, _, _, _ = self._raw(offset)
            if data == b"":
                offset += 4
                continue
            entry = self.at(offset)
            if isinstance(entry, Fde):
                yield entry
            offset += len(data)

    def _raw(self, offset: int) -> Tuple[bytes, int, int, int]:
        """(the entry's bytes from its length field on, position after the CIE id field,
        the section offset of that field, the CIE id or pointer); b"" for a terminator."""
        if not 0 <= offset <= self._size - 4:
            raise CfiFormatError(f"entry offset 0x{offset:x} outside the section")
        head = self._read(offset, 16)
        (length,) = struct.unpack_from("<I", head)
        if length == 0:
            return b"", 4, offset + 4, 0
        width, start = 4, 4
        if length == 0xFFFF_FFFF:
            if len(head) < 12:
                raise CfiFormatError("truncated 64-bit length")
            (length,) = struct.unpack_from("<Q", head, 4)
            width, start = 8, 12
        if length > _MAX_ENTRY or offset + start + length > self._size:
            raise CfiFormatError(f"entry at 0x{offset:x} has length 0x{length:x}")
        data = self._read(offset, start + length)
        if len(data) < start + width:
            raise CfiFormatError(f"entry at 0x{offset:x} is truncated")
        cie_id = struct.unpack_from("<I" if width == 4 else "<Q", data, start)[0]
        return data, start + width, offset + start, cie_id

    def _read(self, offset: int, size: int) -> bytes:
        self._stream.seek(offset)
        return self._stream.read(min(size, self._size - offset))

    def _cie(self, offset: int, r: _Reader) -> Cie:
        version = r.data[r.need(1)]
        if version not in (1, 3, 4):
            raise CfiFormatError(f"CIE version {version} unknown")
        end = r.data.index(b"\0", r.pos) if b"\0" in r.data[r.pos :] else -1
        if end < 0:
            raise CfiFormatError("CIE augmentation string not terminated")
        augmentation = r.data[r.pos : end]
        r.pos = end + 1
        if version == 4:
            r.need(2)  # address_size, segment_selector_size
        code_alignment, data_alignment = r.uleb(), r.sleb()
        ra = r.data[r.need(1)] if version == 1 else r.uleb()
        fde_encoding = 0x00 if self._eh else DW_EH_PE_OMIT
        if augmentation.startswith(b"z"):
            size = r.uleb()
            after = r.pos + size
            for letter in augmentation[1:]:
                if letter == ord("R"):
                    fde_encoding = r.data[r.need(1)]
                elif letter == ord("P"):
                    r.pointer(r.data[r.need(1)], relative=False)
                elif letter == ord("L"):
                    r.need(1)
                elif letter not in b"SBG":
                    break  # unknown: the length says where the instructions start
            r.pos = after
        elif augmentation not in (b"",):
            raise CfiFormatError(f"CIE augmentation {augmentation!r} not supported")
        if not self._eh:
            fde_encoding = DW_EH_PE_OMIT  # .debug_frame: plain 8-byte addresses
        return Cie(
            offset,
            version,
            bytes(augmentation),
            code_alignment,
            data_alignment,
            ra,
            fde_encoding,
            _instructions(r, fde_encoding),
        )

    def _fde(self, offset: int, r: _Reader, cie: Cie) -> Fde:
        if cie.fde_encoding == DW_EH_PE_OMIT:
            start, size = r.fixed("<Q"), r.fixed("<Q")
        else:
            start = r.pointer(cie.fde_encoding)
            size = r.pointer(cie.fde_encoding & 0x0F, relative=False)
        if cie.augmentation.startswith(b"z"):
            skip = r.uleb()
            r.need(skip)
        return Fde(offset, cie, start, size, _instructions(r, cie.fde_encoding))


def _instructions(r: _Reader, encoding: int) -> Tuple[Instruction, ...]:
    """The call frame instructions to the end of the entry: (opcode, operands), with the
    high-two-bit forms split as DWARF numbers them (advance_loc, offset, restore)."""
    out: List[Instruction] = []
    data = r.data
    while r.pos < len(data):
        op = data[r.need(1)]
        high = op & 0xC0
        if high == 0x40:
            out.append((0x40, (op & 0x3F,)))
        elif high == 0x80:
            out.append((0x80, (op & 0x3F, r.uleb())))
        elif high == 0xC0:
            out.append((0xC0, (op & 0x3F,)))
        else:
            kinds = _OPERANDS.get(op)
            if kinds is None:
                raise CfiFormatError(f"unsupported CFA instruction 0x{op:02x}")
            out.append((op, tuple(_operand(r, k, encoding) for k in kinds)))
    return tuple(out)


def _operand(r: _Reader, kind: str, encoding: int) -> object:
    if kind == "u":
        return r.uleb()
    if kind == "s":
        return r.sleb()
    if kind == "b":
        return r.block()
    if kind == "a":
        return r.fixed("<Q") if encoding == DW_EH_PE_OMIT else r.pointer(encoding)
    return r.fixed({"1": "<B", "2": "<H", "4": "<I"}[kind])


def covering(entries: Optional[CfiEntries], offset: int, vaddr: int) -> Optional[Fde]:
    """The FDE at `offset` when it covers `vaddr`."""
    if entries is None:
        return None
    entry = entries.at(offset)
    return entry if isinstance(entry, Fde) and entry.covers(vaddr) else None
