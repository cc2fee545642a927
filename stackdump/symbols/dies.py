"""Debugging information entries read straight from `.debug_info` (DWARF 2 to 5, section
7.5), for the two walks that cost the most on big binaries: the chain of scopes holding a pc
(inline frames) and each unit's top-entry ranges (the CU index of FULL mode).

pyelftools builds an object per entry and per attribute through its `construct` library, and
lists every child of an entry to find one: on a unit of 50,000 entries that is seconds. Here
an entry is decoded only as far as the walk needs (its tag, its ranges, its name and call
site), and a subtree that does not hold the pc is skipped by `DW_AT_sibling`, else by
decoding the sizes of its attributes and nothing else, as elfutils does.

What this reader does not handle raises `Unsupported`, and the caller falls back to
pyelftools: split units (`.dwo`, `.dwp`), dwz supplementary files (`DW_FORM_GNU_ref_alt`,
`DW_FORM_GNU_strp_alt` and DWARF 5's `_sup` forms), type units, `DW_FORM_indirect`.
Malformed bytes raise `DieError` (a ValueError): everything is bounded by the section.
"""

from __future__ import annotations

import bisect
import mmap
import re
import struct
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from stackdump.records import frozen

# Tags (DWARF 5 section 7.5.4) the walks look at.
TAG_SUBPROGRAM, TAG_INLINED, TAG_LEXICAL_BLOCK = 0x2E, 0x1D, 0x0B
_SCOPE_TAGS = frozenset((TAG_SUBPROGRAM, TAG_INLINED, TAG_LEXICAL_BLOCK))
_CONTAINER_TAGS = frozenset((0x39, 0x1E))  # namespace, module

# Attributes.
AT_SIBLING, AT_NAME, AT_LOW_PC, AT_HIGH_PC = 0x01, 0x03, 0x11, 0x12
AT_ABSTRACT_ORIGIN, AT_SPECIFICATION, AT_RANGES = 0x31, 0x47, 0x55
AT_CALL_FILE, AT_CALL_LINE, AT_LINKAGE_NAME, AT_MIPS_LINKAGE_NAME = 0x58, 0x59, 0x6E, 0x2007
AT_STR_OFFSETS_BASE, AT_ADDR_BASE, AT_RNGLISTS_BASE = 0x72, 0x73, 0x74
AT_DWO_NAME, AT_GNU_DWO_NAME = 0x76, 0x2130
_NAMES = (AT_LINKAGE_NAME, AT_MIPS_LINKAGE_NAME, AT_NAME)
_TOP = frozenset(
    (AT_LOW_PC, AT_HIGH_PC, AT_RANGES, AT_STR_OFFSETS_BASE, AT_ADDR_BASE, AT_RNGLISTS_BASE,
     AT_DWO_NAME, AT_GNU_DWO_NAME)
)  # fmt: skip
_SCOPE = frozenset((AT_SIBLING, AT_LOW_PC, AT_HIGH_PC, AT_RANGES))
_FUNCTION = frozenset(
    (AT_LINKAGE_NAME, AT_MIPS_LINKAGE_NAME, AT_NAME, AT_ABSTRACT_ORIGIN, AT_SPECIFICATION,
     AT_CALL_FILE, AT_CALL_LINE)
)  # fmt: skip

# Forms (section 7.5.6): how many bytes, or how to read them.
F_ADDR, F_DATA2, F_DATA4, F_DATA8, F_STRING = 0x01, 0x05, 0x06, 0x07, 0x08
F_DATA1, F_SDATA, F_STRP, F_UDATA, F_REF_ADDR = 0x0B, 0x0D, 0x0E, 0x0F, 0x10
F_REF1, F_REF2, F_REF4, F_REF8, F_REF_UDATA = 0x11, 0x12, 0x13, 0x14, 0x15
F_SEC_OFFSET, F_FLAG_PRESENT, F_STRX, F_ADDRX = 0x17, 0x19, 0x1A, 0x1B
F_LINE_STRP, F_IMPLICIT_CONST, F_RNGLISTX = 0x1F, 0x21, 0x23
F_STRX1, F_STRX2, F_STRX3, F_STRX4 = 0x25, 0x26, 0x27, 0x28
F_ADDRX1, F_ADDRX2, F_ADDRX3, F_ADDRX4 = 0x29, 0x2A, 0x2B, 0x2C
F_GNU_ADDR_INDEX, F_GNU_STR_INDEX = 0x1F01, 0x1F02
_FIXED = {0x0B: 1, 0x0C: 1, 0x11: 1, 0x25: 1, 0x29: 1, 0x05: 2, 0x12: 2, 0x26: 2, 0x2A: 2,
          0x27: 3, 0x2B: 3, 0x06: 4, 0x13: 4, 0x28: 4, 0x2C: 4, 0x07: 8, 0x14: 8, 0x20: 8,
          0x1E: 16, 0x19: 0, 0x21: 0}  # fmt: skip
_LEB = frozenset((0x0D, 0x0F, 0x15, 0x1A, 0x1B, 0x22, 0x23, F_GNU_ADDR_INDEX, F_GNU_STR_INDEX))
_BLOCK_LEN = {0x0A: 1, 0x03: 2, 0x04: 4}  # block1, block2, block4; block and exprloc: LEB
_OFFSET_SIZED = frozenset((F_STRP, F_SEC_OFFSET, F_LINE_STRP))
_UNSUPPORTED = frozenset((0x16, 0x1C, 0x1D, 0x24, 0x1F20, 0x1F21))  # indirect, _sup, GNU alt
_REF_LOCAL = frozenset((F_REF1, F_REF2, F_REF4, F_REF8, F_REF_UDATA))
_ADDRESS_INDEX = frozenset((F_ADDRX, F_ADDRX1, F_ADDRX2, F_ADDRX3, F_ADDRX4, F_GNU_ADDR_INDEX))
_STRING_INDEX = frozenset((F_STRX, F_STRX1, F_STRX2, F_STRX3, F_STRX4, F_GNU_STR_INDEX))
_CONSTANT = frozenset((F_DATA1, F_DATA2, F_DATA4, F_DATA8, F_SDATA, F_UDATA, F_IMPLICIT_CONST))
_MAX_DEPTH = 64
_MAX_HOPS = 8

Abbrev = Tuple[int, bool, Tuple[Tuple[int, int, int], ...]]  # tag, children, (at, form, const)
Attrs = Dict[int, Tuple[int, object]]  # attribute -> (form, raw value)


# The formats this reader uses, compiled once (each is read hundreds of thousands of times).
_STRUCTS = {f: struct.Struct(f) for f in ("<B", "<H", "<I", "<Q", "<HB", "<II", "<QQ")}


class DieError(ValueError):
    """The entries do not decode."""


class Unsupported(Exception):
    """What pyelftools must read instead (see the module docstring)."""


class Section:
    """One debug section's bytes: a map of the file (`SectionView`) or bytes, addressed from
    the section's start."""

    def __init__(self, buffer, base: int, size: int) -> None:
        self.buffer, self.base, self.size = buffer, base, size

    @classmethod
    def of(cls, descriptor) -> Optional[Section]:
        """From a pyelftools section descriptor (our `dwarf_sections` made its stream)."""
        if descriptor is None:
            return None
        stream, size = descriptor.stream, descriptor.size
        base = getattr(stream, "_base", None)
        if base is not None:
            return cls(stream, base, size)
        stream.seek(0)
        return cls(stream.read(size), 0, size)

    def prefetch(self, offsets: Iterable[int]) -> None:
        """Ask the kernel to read the pages holding these offsets now, all at once
        (madvise WILLNEED: the reads queue together instead of one page fault at a time when
        each is touched). Only for a map of the file; a hint, never an error."""
        advise = getattr(self.buffer, "madvise", None)
        if advise is None:
            return
        page = mmap.PAGESIZE
        for offset in offsets:
            if 0 <= offset < self.size:
                at = self.base + offset
                try:
                    advise(mmap.MADV_WILLNEED, at - at % page, page)
                except (OSError, ValueError):
                    return

    def unpack(self, fmt: str, offset: int) -> Tuple[int, ...]:
        layout = _STRUCTS.get(fmt) or struct.Struct(fmt)
        if offset < 0 or offset + layout.size > self.size:
            raise DieError(f"read past the end of the section at 0x{offset:x}")
        return layout.unpack_from(self.buffer, self.base + offset)

    def initial_length(self, offset: int) -> Tuple[int, int, int]:
        """A unit's or set's initial length (DWARF 5 section 7.4): (length, where what it
        counts starts, offset size: 4, or 8 after the 0xffffffff escape)."""
        (length,) = self.unpack("<I", offset)
        if length == 0xFFFF_FFFF:
            (length,) = self.unpack("<Q", offset + 4)
            return length, offset + 12, 8
        return length, offset + 4, 4

    def byte(self, offset: int) -> int:
        if not 0 <= offset < self.size:
            raise DieError(f"read past the end of the section at 0x{offset:x}")
        return self.buffer[self.base + offset]

    def uleb(self, offset: int) -> Tuple[int, int]:
        if offset < 0:
            raise DieError(f"bad LEB128 number at 0x{offset:x}")
        value, at = _uleb(self.buffer, self.base + offset, self.base + self.size)
        return value, at - self.base

    def sleb(self, offset: int) -> Tuple[int, int]:
        value, end = self.uleb(offset)
        bits = 7 * (end - offset)
        return (value - (1 << bits) if value >> (bits - 1) & 1 else value), end

    def cstring(self, offset: int) -> bytes:
        if not 0 <= offset < self.size:
            raise DieError(f"string offset 0x{offset:x} outside the section")
        start = self.base + offset
        end = self.buffer.find(b"\0", start, self.base + self.size)
        if end < 0:
            raise DieError(f"string at 0x{offset:x} is not terminated")
        return bytes(self.buffer[start:end])


@frozen
class Unit:
    offset: int
    end: int  # one past its last byte
    version: int
    offset_size: int
    address_size: int
    first_die: int
    abbrevs: Dict[int, Abbrev]
    top: Attrs
    str_offsets_base: int
    addr_base: int
    rnglists_base: int

    @property
    def split(self) -> bool:
        """A skeleton: its entries are in a .dwo file."""
        return AT_DWO_NAME in self.top or AT_GNU_DWO_NAME in self.top


@frozen
class Die:
    offset: int
    tag: int
    attrs: Attrs
    children: bool
    end: int  # where its attributes end: its first child, or its next sibling


class DieReader:
    """The entries of one `.debug_info`, with the sections its forms point into."""

    def __init__(self, sections: Dict[str, Optional[Section]]) -> None:
        info = sections.get("info")
        abbrev = sections.get("abbrev")
        if info is None or abbrev is None:
            raise Unsupported("no .debug_info or .debug_abbrev")
        self.info, self.abbrev = info, abbrev
        self._sections = sections
        self._abbrevs: Dict[int, Dict[int, Abbrev]] = {}
        self._units: Dict[int, Unit] = {}
        self._unit_starts: Optional[List[int]] = None
        # Children read so far, by (parent offset, attributes wanted): (entries, where the
        # next one starts, or -1 once the list is whole). Lookups of many pcs in one unit
        # read each list once, and a first lookup reads only up to the child it needs.
        self._children: Dict[Tuple[int, frozenset], Tuple[List[Die], List[int]]] = {}

    # -- units --------------------------------------------------------------------------------

    def unit(self, offset: int) -> Unit:
        unit = self._units.get(offset)
        if unit is None:
            unit = self._units[offset] = self._read_unit(offset)
        return unit

    def top_ranges(self, offset: int) -> List[Tuple[int, int]]:
        """The ranges of the unit at `offset` from its header and top entry alone: its
        abbreviation table is read only up to the top entry's code, and nothing is kept (a
        1 GB binary has hundreds of units, each table thousands of entries)."""
        unit = self._read_unit(offset, whole_table=False)
        return self.ranges(unit, unit.top)

    def unit_offsets(self, known: Iterable[int] = ()) -> Iterator[int]:
        """Every unit's offset, from its header's length alone; the headers at `known`
        offsets (those `.debug_aranges` names) are read from the disk together first."""
        self.info.prefetch(known)
        offset = 0
        while offset + 4 <= self.info.size:
            length, at, _ = self.info.initial_length(offset)
            if length == 0:
                return
            yield offset
            offset = at + length

    def unit_holding(self, offset: int) -> Unit:
        """The unit whose entries hold a `.debug_info` offset (a DW_FORM_ref_addr)."""
        if self._unit_starts is None:
            self._unit_starts = list(self.unit_offsets())
        i = bisect.bisect_right(self._unit_starts, offset) - 1
        if i < 0:
            raise DieError(f"reference 0x{offset:x} before the first unit")
        unit = self.unit(self._unit_starts[i])
        if not unit.first_die <= offset < unit.end:
            raise DieError(f"reference 0x{offset:x} into no unit's entries")
        return unit

    def _read_unit(self, offset: int, whole_table: bool = True) -> Unit:
        info = self.info
        length, at, offset_size = info.initial_length(offset)
        end = at + length
        if end > info.size:
            raise DieError(f"unit at 0x{offset:x} runs past the section")
        (version,) = info.unpack("<H", at)
        at += 2
        word = "<I" if offset_size == 4 else "<Q"
        if version >= 5:
            unit_type, address_size = info.byte(at), info.byte(at + 1)
            (abbrev_offset,) = info.unpack(word, at + 2)
            at += 2 + offset_size
            if unit_type in (0x04, 0x05):  # DW_UT_skeleton, DW_UT_split_compile: a dwo_id
                at += 8
            elif unit_type not in (0x01, 0x03):  # not DW_UT_compile, DW_UT_partial: types
                raise Unsupported(f"unit type 0x{unit_type:x}")
        elif 2 <= version <= 4:
            (abbrev_offset,) = info.unpack(word, at)
            address_size = info.byte(at + offset_size)
            at += offset_size + 1
        else:
            raise DieError(f"unit version {version}")
        if address_size not in (4, 8):
            raise DieError(f"address size {address_size}")
        if whole_table:
            abbrevs = self._abbrev_table(abbrev_offset)
        else:
            abbrevs = self._abbrevs.get(abbrev_offset) or self._abbrev_table(
                abbrev_offset, until=info.uleb(at)[0]
            )
        bare = Unit(offset, end, version, offset_size, address_size, at, abbrevs, {}, 0, 0, 0)
        top = self.read(bare, at, _TOP)
        return Unit(
            offset, end, version, offset_size, address_size, at, abbrevs, top.attrs,
            _int(top.attrs.get(AT_STR_OFFSETS_BASE)),
            _int(top.attrs.get(AT_ADDR_BASE)),
            _int(top.attrs.get(AT_RNGLISTS_BASE)),
        )  # fmt: skip

    def _abbrev_table(self, offset: int, until: int = 0) -> Dict[int, Abbrev]:
        """The abbreviation table at `offset`, kept; with `until`, only its entries up to
        that code, not kept."""
        table = self._abbrevs.get(offset)
        if table is not None:
            return table
        section, table = self.abbrev, {}
        if not 0 <= offset < section.size:
            raise DieError(f"abbreviation table offset 0x{offset:x} outside the section")
        # The bytes directly, not Section's checked reads: a 1 GB binary's 631 tables are
        # ~2 million numbers (GCC puts a unit's own entry's abbreviation near the end).
        buf, base, end = section.buffer, section.base, section.base + section.size
        at = base + offset
        if until:
            at = _entry_of(buf, at, end, until)  # skipped to it in C, by a regular expression
        while until not in table:
            code, at = _uleb(buf, at, end)
            if code == 0:
                break
            tag, at = _uleb(buf, at, end)
            if at >= end:
                raise DieError("abbreviation table runs past the section")
            children = buf[at] != 0
            at += 1
            specs = []
            while True:
                name, at = _uleb(buf, at, end)
                form, at = _uleb(buf, at, end)
                if name == 0 and form == 0:
                    break
                const = 0
                if form == F_IMPLICIT_CONST:
                    const, after = section.sleb(at - base)
                    at = base + after
                specs.append((name, form, const))
            table[code] = (tag, children, tuple(specs))
        if not until:
            self._abbrevs[offset] = table
        return table

    # -- entries ------------------------------------------------------------------------------

    def read(self, unit: Unit, offset: int, wanted: frozenset) -> Die:
        """The entry at `offset` with the `wanted` attributes (raw values); tag 0 for the
        null entry that ends a list of siblings."""
        info = self.info
        code, at = info.uleb(offset)
        if code == 0:
            return Die(offset, 0, {}, False, at)
        abbrev = unit.abbrevs.get(code)
        if abbrev is None:
            raise DieError(f"abbreviation {code} unknown at 0x{offset:x}")
        tag, children, specs = abbrev
        attrs: Attrs = {}
        for name, form, const in specs:
            if name in wanted:
                value, at = self._value(unit, form, at, const)
                attrs[name] = (form, value)
            else:
                at = self._skip(unit, form, at)
        if at > unit.end:
            raise DieError(f"entry at 0x{offset:x} runs past its unit")
        return Die(offset, tag, attrs, children, at)

    def children(self, unit: Unit, parent: Die, wanted: frozenset) -> Iterator[Die]:
        """The parent's children, each read with `wanted` (and its sibling link)."""
        if not parent.children:
            return
        want = wanted | {AT_SIBLING}
        known, resume = self._children.setdefault((parent.offset, want), ([], [parent.end]))
        yield from list(known)
        for _ in range(1 << 22):
            at = resume[0]
            if at < 0:
                return
            if at >= unit.end:
                resume[0] = -1
                return
            die = self.read(unit, at, want)
            if die.tag == 0:
                resume[0] = -1
                return
            known.append(die)
            resume[0] = self.next_sibling(unit, die)
            yield die
        raise DieError("too many siblings")

    def next_sibling(self, unit: Unit, die: Die) -> int:
        if not die.children:
            return die.end
        sibling = die.attrs.get(AT_SIBLING)
        if sibling is not None and sibling[0] in _REF_LOCAL:
            target = unit.offset + _int(sibling)
            if die.end <= target <= unit.end:
                return target
        return self._skip_children(unit, die.end)

    def _skip_children(self, unit: Unit, at: int) -> int:
        """Past the children starting at `at` and the null entry that ends them."""
        depth, info, abbrevs = 1, self.info, unit.abbrevs
        while depth:
            if at >= unit.end:
                raise DieError("children run past their unit")
            code, at = info.uleb(at)
            if code == 0:
                depth -= 1
                continue
            abbrev = abbrevs.get(code)
            if abbrev is None:
                raise DieError(f"abbreviation {code} unknown at 0x{at:x}")
            for _, form, _ in abbrev[2]:
                at = self._skip(unit, form, at)
            if abbrev[1]:
                depth += 1
                if depth > _MAX_DEPTH * 4:
                    raise DieError("entries nested too deep")
        return at

    def _skip(self, unit: Unit, form: int, at: int) -> int:
        size = _FIXED.get(form)
        if size is not None:
            return at + size
        if form in _LEB:
            return self.info.uleb(at)[1]
        if form == F_ADDR:
            return at + unit.address_size
        if form in _OFFSET_SIZED:
            return at + unit.offset_size
        if form == F_REF_ADDR:
            return at + (unit.address_size if unit.version == 2 else unit.offset_size)
        if form == F_STRING:
            end = self.info.buffer.find(b"\0", self.info.base + at, self.info.base + self.info.size)
            if end < 0:
                raise DieError(f"string at 0x{at:x} is not terminated")
            return end - self.info.base + 1
        length = _BLOCK_LEN.get(form)
        if length is not None:
            (size,) = self.info.unpack({1: "<B", 2: "<H", 4: "<I"}[length], at)
            return at + length + size
        if form in (0x09, 0x18):  # block, exprloc
            size, at = self.info.uleb(at)
            return at + size
        if form in (0x1D, 0x1F20, 0x1F21):  # strp_sup, GNU_ref_alt, GNU_strp_alt
            return at + unit.offset_size
        if form in (0x1C, 0x24):  # ref_sup4, ref_sup8
            return at + (4 if form == 0x1C else 8)
        raise Unsupported(f"form 0x{form:x}")

    def _value(self, unit: Unit, form: int, at: int, const: int) -> Tuple[object, int]:
        info = self.info
        if form == F_IMPLICIT_CONST:
            return const, at
        if form == F_FLAG_PRESENT:
            return 1, at
        if form in (F_UDATA, F_REF_UDATA, F_STRX, F_ADDRX, F_RNGLISTX, 0x22) or form in (
            F_GNU_ADDR_INDEX,
            F_GNU_STR_INDEX,
        ):
            return info.uleb(at)
        if form == F_SDATA:
            return info.sleb(at)
        if form == F_STRING:
            text = info.cstring(at)
            return text, at + len(text) + 1
        if form == F_ADDR:
            size = unit.address_size
            return info.unpack("<Q" if size == 8 else "<I", at)[0], at + size
        if form in _UNSUPPORTED:
            raise Unsupported(f"form 0x{form:x}")
        size = _FIXED.get(form)
        if size is None:
            if form in _OFFSET_SIZED:
                size = unit.offset_size
            elif form == F_REF_ADDR:
                size = unit.address_size if unit.version == 2 else unit.offset_size
            else:
                return None, self._skip(unit, form, at)
        if size == 3:
            low, high = info.unpack("<HB", at)
            return low | high << 16, at + 3
        fmt = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}.get(size)
        if fmt is None:
            return None, at + size
        return info.unpack(fmt, at)[0], at + size

    # -- what the walks ask -------------------------------------------------------------------

    def top(self, unit: Unit) -> Die:
        return self.read(unit, unit.first_die, _TOP)

    def ranges(self, unit: Unit, attrs: Attrs) -> List[Tuple[int, int]]:
        """An entry's address ranges: low_pc and high_pc, or DW_AT_ranges."""
        low = attrs.get(AT_LOW_PC)
        high = attrs.get(AT_HIGH_PC)
        if low is not None and high is not None:
            start = self.address(unit, low)
            if high[0] in _CONSTANT:
                return [(start, start + _int(high))]
            return [(start, self.address(unit, high))]
        where = attrs.get(AT_RANGES)
        if where is None:
            return []
        base_attr = unit.top.get(AT_LOW_PC)
        base = self.address(unit, base_attr) if base_attr is not None else 0
        if unit.version >= 5:
            return self._rnglist(unit, where, base)
        return self._ranges_v4(unit, _int(where), base)

    def address(self, unit: Unit, attr: Tuple[int, object]) -> int:
        form, value = attr
        if form in _ADDRESS_INDEX:
            section = self._section("addr")
            size = unit.address_size
            fmt = "<Q" if size == 8 else "<I"
            (found,) = section.unpack(fmt, unit.addr_base + _int(attr) * size)
            return found
        return value if isinstance(value, int) else 0

    def text(self, unit: Unit, attr: Tuple[int, object]) -> Optional[bytes]:
        form, value = attr
        if form == F_STRING:
            return value if isinstance(value, bytes) else None
        if form == F_STRP:
            return self._section("str").cstring(_int(attr))
        if form == F_LINE_STRP:
            return self._section("line_str").cstring(_int(attr))
        if form in _STRING_INDEX:
            offsets = self._section("str_offsets")
            fmt = "<I" if unit.offset_size == 4 else "<Q"
            base = unit.str_offsets_base or (8 if unit.offset_size == 4 else 16)
            (offset,) = offsets.unpack(fmt, base + _int(attr) * unit.offset_size)
            return self._section("str").cstring(offset)
        return None

    def referenced(self, unit: Unit, attr: Tuple[int, object], wanted: frozenset):
        """(unit, entry) a reference attribute points at."""
        form = attr[0]
        if form in _REF_LOCAL:
            target = unit.offset + _int(attr)
            if not unit.first_die <= target < unit.end:
                raise DieError(f"reference 0x{target:x} outside its unit")
            return unit, self.read(unit, target, wanted)
        if form == F_REF_ADDR:
            target_unit = self.unit_holding(_int(attr))
            return target_unit, self.read(target_unit, _int(attr), wanted)
        raise Unsupported(f"reference form 0x{form:x}")

    def _section(self, name: str) -> Section:
        section = self._sections.get(name)
        if section is None:
            raise DieError(f"no .debug_{name} for a form that needs it")
        return section

    def _ranges_v4(self, unit: Unit, offset: int, base: int) -> List[Tuple[int, int]]:
        section = self._section("ranges")
        size = unit.address_size
        fmt, top = ("<QQ", (1 << 64) - 1) if size == 8 else ("<II", (1 << 32) - 1)
        out = []
        for _ in range(1 << 20):
            begin, end = section.unpack(fmt, offset)
            offset += 2 * size
            if begin == 0 and end == 0:
                return out
            if begin == top:
                base = end
            else:
                out.append((base + begin, base + end))
        raise DieError("range list too long")

    def _rnglist(self, unit: Unit, attr: Tuple[int, object], base: int) -> List[Tuple[int, int]]:
        section = self._section("rnglists")
        offset = _int(attr)
        if attr[0] == F_RNGLISTX:
            fmt = "<I" if unit.offset_size == 4 else "<Q"
            (relative,) = section.unpack(fmt, unit.rnglists_base + offset * unit.offset_size)
            offset = unit.rnglists_base + relative
        word = "<Q" if unit.address_size == 8 else "<I"
        indexed = lambda i: self.address(unit, (F_ADDRX, i))  # noqa: E731
        out = []
        for _ in range(1 << 20):
            kind = section.byte(offset)
            offset += 1
            if kind == 0:  # end_of_list
                return out
            if kind == 1:  # base_addressx
                index, offset = section.uleb(offset)
                base = indexed(index)
            elif kind in (2, 3):  # startx_endx, startx_length
                first, offset = section.uleb(offset)
                second, offset = section.uleb(offset)
                start = indexed(first)
                out.append((start, indexed(second) if kind == 2 else start + second))
            elif kind == 4:  # offset_pair
                first, offset = section.uleb(offset)
                second, offset = section.uleb(offset)
                out.append((base + first, base + second))
            elif kind == 5:  # base_address
                (base,) = section.unpack(word, offset)
                offset += unit.address_size
            elif kind == 6:  # start_end
                start, end = section.unpack(word + word[1], offset)
                offset += 2 * unit.address_size
                out.append((start, end))
            elif kind == 7:  # start_length
                (start,) = section.unpack(word, offset)
                length, offset = section.uleb(offset + unit.address_size)
                out.append((start, start + length))
            else:
                raise DieError(f"range list entry kind {kind}")
        raise DieError("range list too long")


# One abbreviation entry (DWARF 5 section 7.5.3): its code (captured), tag and children
# flag, then (attribute, form) pairs, an implicit_const form (0x21) followed by its value,
# up to a pair of zeros. A LEB128 number is bytes with the high bit set and one without.
# Every choice is made by the next byte alone (a form is 0x21, another one-byte form, or a
# longer number), so a match never backtracks: its time is linear in what it reads, whatever
# a hostile file holds.
_LEB128 = rb"[\x80-\xff]*[\x00-\x7f]"
_FORM = rb"(?:\x21" + _LEB128 + rb"|[\x00-\x20\x22-\x7f]|[\x80-\xff]+[\x00-\x7f])"
_ENTRY = re.compile(
    rb"(" + _LEB128 + rb")" + _LEB128 + rb"[\x00-\xff](?:" + _LEB128 + _FORM + rb")*?\x00\x00"
)


def _entry_of(buf, at: int, end: int, code: int) -> int:
    """Where the entry for `code` starts in the table at `at` (or its end, if it has none):
    the entries before it skipped without decoding them in Python."""
    for _ in range(1 << 20):
        found = _ENTRY.match(buf, at, end)
        if found is None or buf[at] == 0:
            return at  # the end of the table, or damage: the careful reader says which
        if _uleb(buf, at, end)[0] == code:
            return at
        at = found.end()
    return at


def _uleb(buf, at: int, end: int) -> Tuple[int, int]:
    """(ULEB128 number at buffer position `at`, the position after it)."""
    if at < end:
        byte = buf[at]
        if byte < 0x80:
            return byte, at + 1
    value = shift = 0
    while at < end:
        byte = buf[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at
        if shift > 70:
            break
    raise DieError("bad LEB128 number (it runs past the section or is too long)")


def _int(attr: Optional[Tuple[int, object]]) -> int:
    if attr is None:
        return 0
    value = attr[1]
    return value if isinstance(value, int) else 0


def aranges(section: Section) -> List[Tuple[int, int, int]]:
    """(start, end, unit offset) of every range in `.debug_aranges` (section 6.1.2): a set
    per unit, each a header and (address, length) pairs up to a pair of zeros."""
    out = []
    offset = 0
    while offset + 4 <= section.size:
        length, at, offset_size = section.initial_length(offset)
        end = at + length
        if length == 0 or end > section.size:
            raise DieError(f"address range set at 0x{offset:x} has length 0x{length:x}")
        (unit,) = section.unpack("<I" if offset_size == 4 else "<Q", at + 2)
        address_size = section.byte(at + 2 + offset_size)
        segment_size = section.byte(at + 3 + offset_size)
        if address_size not in (4, 8) or segment_size:
            raise Unsupported(f"address size {address_size}, segment size {segment_size}")
        pair = 2 * address_size
        at += 4 + offset_size
        at += -(at - offset) % pair  # the pairs start at a multiple of their size
        fmt = "<QQ" if address_size == 8 else "<II"
        while at + pair <= end:
            start, size = section.unpack(fmt, at)
            at += pair
            if start == 0 and size == 0:
                break
            out.append((start, start + size, unit))
        offset = end
    return out


# -- the walks ---------------------------------------------------------------------------------


def scopes_at(reader: DieReader, unit: Unit, vaddr: int) -> List[Die]:
    """The nested scope entries (outermost first) whose ranges hold vaddr: subprograms (found
    inside namespaces and modules too), inlined subroutines and lexical blocks."""
    if unit.split:
        raise Unsupported("a skeleton unit: its entries are in a .dwo file")
    chain: List[Die] = []
    parent = reader.read(unit, unit.first_die, _SCOPE)
    wanted = _SCOPE | _FUNCTION
    for _ in range(_MAX_DEPTH):
        found = None
        for child in reader.children(unit, parent, wanted):
            if child.tag in _CONTAINER_TAGS:
                found = _in_container(reader, unit, child, vaddr, wanted, 0)
            elif child.tag in _SCOPE_TAGS and _holds(reader, unit, child, vaddr):
                found = child
            if found is not None:
                break
        if found is None:
            break
        chain.append(found)
        parent = found
    return chain


def _in_container(reader, unit, die: Die, vaddr: int, wanted, depth: int) -> Optional[Die]:
    if depth > _MAX_DEPTH:
        return None
    for child in reader.children(unit, die, wanted):
        if child.tag in _CONTAINER_TAGS:
            inner = _in_container(reader, unit, child, vaddr, wanted, depth + 1)
            if inner is not None:
                return inner
        elif child.tag == TAG_SUBPROGRAM and _holds(reader, unit, child, vaddr):
            return child
    return None


def _holds(reader: DieReader, unit: Unit, die: Die, vaddr: int) -> bool:
    return any(low <= vaddr < high for low, high in reader.ranges(unit, die.attrs))


def name_of(reader: DieReader, unit: Unit, die: Die, decode: Callable[[bytes], str]):
    """Linkage name (to be demangled) else name, through abstract_origin/specification."""
    for _ in range(_MAX_HOPS):
        attrs = die.attrs
        for key in _NAMES:
            if key in attrs:
                text = reader.text(unit, attrs[key])
                return decode(text) if text is not None else None
        ref = attrs.get(AT_ABSTRACT_ORIGIN) or attrs.get(AT_SPECIFICATION)
        if ref is None:
            return None
        unit, die = reader.referenced(unit, ref, _FUNCTION)
    return None


def call_site(die: Die) -> Tuple[Optional[int], Optional[int]]:
    """(DW_AT_call_file, DW_AT_call_line) of an inlined subroutine, as numbers."""
    file = die.attrs.get(AT_CALL_FILE)
    line = die.attrs.get(AT_CALL_LINE)
    return (_int(file) if file else None), (_int(line) if line else None)
