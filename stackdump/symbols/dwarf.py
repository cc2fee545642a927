"""DWARF source locations for one object: CU by address, line rows, inline chains.

- FAST: `.debug_aranges` maps an address to its CU (DWARF 5 section 6.1.2).
- FULL: when aranges has no answer, every CU's own ranges (`DW_AT_low_pc`/`DW_AT_high_pc`,
  `DW_AT_ranges`, DWARF 4 and 5) are indexed once and searched.
- Line rows (section 6.2) are decoded once per CU that a pc falls in, kept sorted, bisected.
- Inline chains: the CU's DIE tree is descended only into DIEs whose ranges hold the pc
  (`DW_TAG_subprogram` -> `DW_TAG_lexical_block` / `DW_TAG_inlined_subroutine`), the call
  sites coming from `DW_AT_call_file` / `DW_AT_call_line`.

pyelftools' DIE and CU objects stay inside this module; callers get plain tuples. Every entry
point swallows parse errors: a corrupt debug file yields no location, never an exception.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import posixpath
import struct
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from stackdump.cache import DiskCache
from stackdump.elf import dwarf_sections
from stackdump.elf.image import ElfObject, parse_errors
from stackdump.elf.store import LoadedObject, ObjectStore, try_open
from stackdump.escape import quote
from stackdump.records import frozen
from stackdump.symbols import dies

_SCOPE_TAGS = ("DW_TAG_subprogram", "DW_TAG_inlined_subroutine", "DW_TAG_lexical_block")
_CONTAINER_TAGS = ("DW_TAG_namespace", "DW_TAG_module")
_MAX_DEPTH = 64  # nesting bound for hostile input
# The sections whose bytes `dies.py` reads, by pyelftools' descriptor names (debug_NAME_sec).
_DIE_SECTIONS = ("info", "abbrev", "str", "line_str", "str_offsets", "addr", "ranges", "rnglists")


@frozen
class InlineFrame:
    """One function active at a pc: its name and where in the source execution stands."""

    name: Optional[str]
    file: Optional[str]
    line: Optional[int]


@dataclass
class _LineTable:
    addresses: List[int]
    rows: List[Tuple[int, int, bool]]  # (file index, line, end_sequence)
    files: List[str]

    def to_fields(self) -> dict:
        return {
            "addresses": array.array("Q", self.addresses),
            "file": array.array("Q", [r[0] for r in self.rows]),
            "line": array.array("q", [r[1] for r in self.rows]),
            "end": array.array("B", [r[2] for r in self.rows]),
            "files": self.files,
        }

    @classmethod
    def from_fields(cls, f: dict) -> _LineTable:
        n = len(f["addresses"])
        if not (len(f["file"]) == len(f["line"]) == len(f["end"]) == n):
            raise ValueError("inconsistent cached line table")
        if not all(isinstance(name, str) for name in f["files"]):
            raise ValueError("inconsistent cached file names")
        rows = list(zip(f["file"].tolist(), f["line"].tolist(), map(bool, f["end"])))
        return cls(f["addresses"].tolist(), rows, list(f["files"]))


class _RangeIndex:
    """Sorted address ranges -> CU offset, in packed arrays (a 1 GB-DWARF binary has
    hundreds of thousands of them; loaded from the disk cache as they were written)."""

    def __init__(self, entries: List[Tuple[int, int, int]]) -> None:
        entries = sorted(e for e in entries if e[0] < e[1])
        self.starts = array.array("Q", [e[0] for e in entries])
        self.ends = array.array("Q", [e[1] for e in entries])
        self.offsets = array.array("Q", [e[2] for e in entries])

    def find(self, vaddr: int) -> Optional[int]:
        found = self.find_range(vaddr)
        return found[2] if found is not None else None

    def find_range(self, vaddr: int) -> Optional[Tuple[int, int, int]]:
        """(start, end, CU offset) of the range holding vaddr."""
        i = bisect.bisect_right(self.starts, vaddr) - 1
        # Ranges of one CU may interleave with another's: look back a little.
        for j in range(i, max(i - 4, -1), -1):
            if self.starts[j] <= vaddr < self.ends[j]:
                return self.starts[j], self.ends[j], self.offsets[j]
        return None

    def to_fields(self) -> dict:
        return {"starts": self.starts, "ends": self.ends, "offsets": self.offsets}

    @classmethod
    def from_fields(cls, f: dict) -> _RangeIndex:
        starts, ends, offsets = f["starts"], f["ends"], f["offsets"]
        if not (len(starts) == len(ends) == len(offsets)):
            raise ValueError("inconsistent cached range index")
        if any(a.typecode != "Q" for a in (starts, ends, offsets)):
            raise ValueError("inconsistent cached range index")
        index = cls([])
        # Written sorted; an entry altered on disk can only misplace a lookup, never crash.
        index.starts, index.ends, index.offsets = starts, ends, offsets
        return index


class DwarfIndex:
    """Lazy DWARF lookups over one ELF file that holds `.debug_info`.

    The address -> CU indexes and the decoded line tables go through the disk cache, so a
    warm FAST lookup never has pyelftools load the debug sections at all.
    """

    def __init__(
        self,
        elf: ElfObject,
        cache: Optional[DiskCache] = None,
        find_supplement: Optional[Callable[[str, str], Optional[ElfObject]]] = None,
        origin: Optional[str] = None,
        open_found: Optional[Callable[[str], Optional[ElfObject]]] = None,
        warn: Optional[Callable[[str], None]] = None,
        shown: str = "",
        own_reader: bool = True,
    ) -> None:
        """`find_supplement(name, build_id)`: the dwz supplementary file the debug info
        names, opened (the store's search), or None. `origin`: where the object lives (its
        .dwp and .dwo files are looked for beside it), when not where `elf` was read from.
        `open_found(path)`: how a .dwo or .dwp is opened (the store's: only regular files,
        the others skipped with a warning), None when it cannot be. `warn(message)`: where
        damage found in the debug info is said (`shown` names the object there).
        `own_reader`: walk entries with `dies.py` where it can (False: pyelftools only, for
        tests that compare the two)."""
        self._warn = warn or (lambda message: None)
        self._shown = shown or origin or elf.path
        self._origin = origin or elf.path
        self._open_found = open_found or try_open
        self._elf = elf
        self._cache = cache if cache is not None else DiskCache(None)
        self._find_supplement = find_supplement or (lambda name, build_id: None)
        self._identity = elf.identity()
        self._info = None
        self._failed = False
        self._aranges: Optional[_RangeIndex] = None
        self._cu_ranges: Optional[_RangeIndex] = None
        self._lines: Dict[int, Optional[_LineTable]] = {}
        self._cus: Dict[int, object] = {}
        self._split: Dict[int, tuple] = {}
        self._opened: List[ElfObject] = []  # .dwo files
        self._package = None  # (the .dwp, its .debug_cu_index), or False when there is none
        self.cus_parsed = 0  # line programs decoded: for tests that prove caching
        self.cus_walked = 0  # CUs read to index their ranges (none with a .gdb_index)
        self._own_reader = own_reader
        self._die_reader: Optional[dies.DieReader] = None
        self._no_reader = not own_reader

    # -- public -----------------------------------------------------------------------------

    def cu_offset(self, vaddr: int, full: bool) -> Optional[int]:
        if self._aranges is None:
            self._aranges = self._cached("aranges", _RangeIndex, self._build_aranges)
        offset = self._aranges.find(vaddr)
        if offset is None and full:
            if self._cu_ranges is None:
                self._cu_ranges = self._cached("cu-ranges", _RangeIndex, self._build_cu_ranges)
            offset = self._cu_ranges.find(vaddr)
        return offset

    def location(self, cu_offset: int, vaddr: int) -> Optional[Tuple[str, int]]:
        table = self._line_table(cu_offset)
        if table is None or not table.addresses:
            return None
        i = bisect.bisect_right(table.addresses, vaddr) - 1
        if i < 0:
            return None
        file_index, line, end = table.rows[i]
        if end or line == 0:
            return None
        # Cheap checks that a damaged table fails: the row lies in the unit's range that
        # holds vaddr (a sequence starts where its code does), its file exists.
        held = self._range_of(vaddr)
        if held is not None and held[2] == cu_offset and table.addresses[i] < held[0]:
            # The row that answers lies before the unit's range holding vaddr: the rows that
            # belong there are missing or moved (an address advance a flipped byte changed).
            self._damaged(cu_offset, f"the row answering for 0x{vaddr:x} is at "
                          f"0x{table.addresses[i]:x}, outside the unit's range "
                          f"0x{held[0]:x}-0x{held[1]:x}")  # fmt: skip
            return None
        if not 0 <= file_index < len(table.files) or not table.files[file_index]:
            self._damaged(cu_offset, f"file number {file_index} of {len(table.files)}")
            return None
        return table.files[file_index], line

    def _range_of(self, vaddr: int) -> Optional[Tuple[int, int, int]]:
        found = self._aranges.find_range(vaddr) if self._aranges is not None else None
        if found is None and self._cu_ranges is not None:
            found = self._cu_ranges.find_range(vaddr)
        return found

    def _damaged(self, cu_offset: int, why: str) -> None:
        self._warn(
            f"{quote(self._shown)}: the line table of the unit at .debug_info+0x{cu_offset:x} "
            f"is damaged ({why}): its file:line answers that fail such checks are left out"
        )

    def inline_chain(self, cu_offset: int, vaddr: int) -> List[InlineFrame]:
        """Functions active at vaddr, innermost first; the last is the physical function.
        Empty when no subprogram covers vaddr."""
        chain = self._own_chain(cu_offset, vaddr)
        if chain is not None:
            return chain
        cu, info, table = self._die_cu(cu_offset)
        if cu is None:
            return []
        try:
            scopes = self._scopes_at(cu, info, vaddr)
        except parse_errors():
            return []
        functions = [d for d in scopes if d.tag != "DW_TAG_lexical_block"]
        if not functions:
            return []
        here = self.location(cu_offset, vaddr)
        frames: List[InlineFrame] = []
        file, line = here if here else (None, None)
        for die in reversed(functions):
            frames.append(InlineFrame(_die_name(die), file, line))
            if die.tag == "DW_TAG_inlined_subroutine":
                file, line = _call_site(die, table)
        return frames

    def _own_chain(self, cu_offset: int, vaddr: int) -> Optional[List[InlineFrame]]:
        """inline_chain through `dies.py`; None where pyelftools must answer."""
        reader = self._reader()
        if reader is None:
            return None
        try:
            unit = reader.unit(cu_offset)
            scopes = dies.scopes_at(reader, unit, vaddr)
        except dies.Unsupported:
            return None
        except parse_errors():
            return []
        functions = [d for d in scopes if d.tag != dies.TAG_LEXICAL_BLOCK]
        if not functions:
            return []
        table = self._line_table(cu_offset)
        here = self.location(cu_offset, vaddr)
        frames: List[InlineFrame] = []
        file, line = here if here else (None, None)
        for die in reversed(functions):
            try:
                name = dies.name_of(reader, unit, die, _text)
            except dies.Unsupported:
                return None
            except parse_errors():
                name = None
            frames.append(InlineFrame(name, file, line))
            if die.tag == dies.TAG_INLINED:
                file, line = _numbered_call_site(*dies.call_site(die), table)
        return frames

    def _reader(self) -> Optional[dies.DieReader]:
        if self._die_reader is None and not self._no_reader:
            info = self._dwarf()
            try:
                if info is None:
                    raise dies.Unsupported("no DWARF")
                self._die_reader = dies.DieReader(
                    {
                        name: dies.Section.of(getattr(info, f"debug_{name}_sec", None))
                        for name in _DIE_SECTIONS
                    }
                )
            except (dies.Unsupported, *parse_errors()):
                self._no_reader = True
        return self._die_reader

    def function_name(self, cu_offset: int, vaddr: int) -> Optional[str]:
        chain = self.inline_chain(cu_offset, vaddr)
        return chain[-1].name if chain else None

    def struct_layout(self, cu_offset: int, qualified: str) -> Optional[Tuple[int, Dict[str, int]]]:
        """(byte size, member -> offset) of the struct `qualified` (namespaces joined by
        `::`) as this CU defines it, or None."""
        cu = self._cu(cu_offset)
        if cu is None:
            return None

        def search(die, prefix: str):
            for child in die.iter_children():
                name = _die_name(child) or ""
                if child.tag == "DW_TAG_namespace":
                    found = search(child, prefix + name + "::")
                    if found is not None:
                        return found
                elif (
                    child.tag in ("DW_TAG_structure_type", "DW_TAG_class_type")
                    and prefix + name == qualified
                    and "DW_AT_byte_size" in child.attributes
                ):
                    members = {}
                    for m in child.iter_children():
                        where = m.attributes.get("DW_AT_data_member_location")
                        if m.tag == "DW_TAG_member" and where and isinstance(where.value, int):
                            members[_die_name(m) or ""] = where.value
                    return child.attributes["DW_AT_byte_size"].value, members
            return None

        try:
            return search(cu.get_top_DIE(), "")
        except parse_errors():
            return None

    def find_struct(self, qualified: str, cu_name: str) -> Optional[Tuple[int, Dict[str, int]]]:
        """`struct_layout` of `qualified` in the first compilation unit named `cu_name` that
        defines it (a compiler may put a type in any of a package's several units)."""
        info = self._dwarf()
        if info is None:
            return None
        for cu in _each_cu(info):
            try:
                name = _die_name(cu.get_top_DIE())
            except parse_errors():
                continue
            if name == cu_name:
                found = self.struct_layout(cu.cu_offset, qualified)
                if found is not None:
                    return found
        return None

    def member_offset(self, cu_offset: int, struct: str, member: str) -> Optional[int]:
        """Byte offset of `member` in the file-scope `struct` as this CU declares it (a
        constant DW_AT_data_member_location), or None."""
        cu = self._cu(cu_offset)
        if cu is None:
            return None
        try:
            for die in cu.get_top_DIE().iter_children():
                if die.tag != "DW_TAG_structure_type" or _die_name(die) != struct:
                    continue
                for child in die.iter_children():
                    if child.tag == "DW_TAG_member" and _die_name(child) == member:
                        where = child.attributes.get("DW_AT_data_member_location")
                        return where.value if where and isinstance(where.value, int) else None
        except parse_errors():
            return None
        return None

    # -- internals --------------------------------------------------------------------------

    def _dwarf(self):
        if self._info is None and not self._failed:
            try:
                self._info = dwarf_sections.dwarf_info(
                    self._elf, self._cache.scratch, self._find_supplement
                )
            except parse_errors():
                self._failed = True
        return self._info

    def _die_cu(self, offset: int):
        """(CU, its DWARFInfo, the line table its DW_AT_call_file numbers index) whose DIEs
        describe the code of the CU at `offset`: for a split-DWARF skeleton unit, the split
        unit in its .dwo file; else that CU itself."""
        if offset not in self._split:
            cu = self._cu(offset)
            found = (cu, self._dwarf(), self._line_table(offset))
            if cu is not None:
                with contextlib.suppress(*parse_errors()):
                    found = self._split_unit(cu) or found
            self._split[offset] = found
        return self._split[offset]

    def _split_unit(self, skeleton):
        top = skeleton.get_top_DIE()
        attrs = top.attributes
        name_attr = attrs.get("DW_AT_dwo_name") or attrs.get("DW_AT_GNU_dwo_name")
        if name_attr is None:
            return None
        found = self._from_package(skeleton)
        if found is not None:
            return found
        name = _text(name_attr.value)
        comp_dir = _text(attrs["DW_AT_comp_dir"].value) if "DW_AT_comp_dir" in attrs else ""
        places = [posixpath.join(comp_dir, name)]
        if self._origin:
            places.append(posixpath.join(posixpath.dirname(self._origin), posixpath.basename(name)))
        for path in dict.fromkeys(places):
            dwo = self._open_found(path)
            if dwo is None:
                continue
            self._opened.append(dwo)
            found = self._split_in(dwo, skeleton)
            if found is not None:
                return found
        return None

    def _from_package(self, skeleton):
        """The split unit from the .dwp package beside the executable (`dwp`, `llvm-dwp`:
        every .dwo of a program in one file), where gdb looks for it: EXECUTABLE.dwp."""
        dwo_id = skeleton.header.get("dwo_id")
        if dwo_id is None or not self._origin:
            return None
        if self._package is None:
            self._package = False
            package = self._open_found(self._origin + ".dwp")
            if package is None:
                return None
            self._opened.append(package)
            self._package = (package, package.section_bytes(".debug_cu_index") or b"")
        if not self._package:
            return None
        package, index = self._package
        parts = dwarf_sections.dwp_parts(index, dwo_id)
        if parts is None:
            return None
        return self._split_in(package, skeleton, parts)

    def _split_in(self, dwo: ElfObject, skeleton, parts=None):
        """(split unit, its DWARFInfo, the line table of its call_file numbers) for
        `skeleton` in a .dwo file, or in one unit's `parts` of a .dwp; None if not there."""
        split = dwarf_sections.split_dwarf_info(dwo, self._dwarf(), self._cache.scratch, parts)
        unit = dwarf_sections.split_unit(split, skeleton)
        if unit is None:
            return None
        program = split.line_program_for_CU(unit)
        files = _decode_lines(program, unit) if program is not None else None
        return unit, split, files or self._line_table(skeleton.cu_offset)

    def close(self) -> None:
        for elf in self._opened:
            elf.close()
        self._opened.clear()
        self._split.clear()

    def _cu(self, offset: int):
        if offset not in self._cus:
            info = self._dwarf()
            try:
                self._cus[offset] = info.get_CU_at(offset) if info is not None else None
            except parse_errors():
                self._cus[offset] = None
        return self._cus[offset]

    def _cached(self, kind: str, cls, build):
        key = f"{self._identity}/{kind}" if self._identity else None
        return self._cache.fetch(key, cls, build)

    def _build_aranges(self) -> _RangeIndex:
        entries = []
        info = self._dwarf()
        section = dies.Section.of(getattr(info, "debug_aranges_sec", None)) if info else None
        if section is not None and not self._no_reader:
            try:
                return _RangeIndex(dies.aranges(section))
            except dies.Unsupported:
                pass  # pyelftools reads it
            except parse_errors():
                return _RangeIndex([])
        try:
            aranges = info.get_aranges() if info is not None else None
            for e in aranges.entries if aranges else ():
                entries.append((e.begin_addr, e.begin_addr + e.length, e.info_offset))
        except parse_errors():
            entries = []
        return _RangeIndex(entries)

    def _build_cu_ranges(self) -> _RangeIndex:
        indexed = gdb_index_ranges(self._elf.section_bytes(".gdb_index") or b"")
        if indexed:
            return _RangeIndex(indexed)  # gdb-add-index's address table: no CU is walked
        own = self._own_cu_ranges()
        if own is not None:
            return _RangeIndex(own)
        entries = []
        info = self._dwarf()
        listed = set(self._aranges.offsets) if self._aranges is not None else set()
        try:
            for cu in _each_cu(info) if info is not None else ():
                if cu.cu_offset in listed:
                    continue  # as in _own_cu_ranges
                self.cus_walked += 1
                top = cu.get_top_DIE()
                for low, high in _die_ranges(top, cu, info):
                    entries.append((low, high, cu.cu_offset))
        except parse_errors():
            pass
        return _RangeIndex(entries)

    def _own_cu_ranges(self) -> Optional[List[Tuple[int, int, int]]]:
        """The top-entry ranges, through `dies.py` (a header and one entry each), of every
        unit `.debug_aranges` does not list: those it lists, FAST has looked up already (a
        pc in code without DWARF, such as crt1.o's `_start`, is in neither, and reading every
        unit's ranges for it took a second of a cold dump of 1 GB of DWARF). None where
        pyelftools must read them."""
        reader = self._reader()
        if reader is None:
            return None
        listed = set(self._aranges.offsets) if self._aranges is not None else set()
        entries = []
        try:
            for offset in reader.unit_offsets(sorted(listed)):
                if offset in listed:
                    continue
                self.cus_walked += 1
                entries.extend((low, high, offset) for low, high in reader.top_ranges(offset))
        except dies.Unsupported:
            return None
        except parse_errors():
            pass  # what was read before the damage is kept, as pyelftools' walk does
        return entries

    def _line_table(self, cu_offset: int) -> Optional[_LineTable]:
        if cu_offset not in self._lines:
            self._lines[cu_offset] = self._cached(
                f"lines/{cu_offset}", _LineTable, lambda: self._decode_line_table(cu_offset)
            )
        return self._lines[cu_offset]

    def _decode_line_table(self, cu_offset: int) -> Optional[_LineTable]:
        cu = self._cu(cu_offset)
        info = self._dwarf()
        if cu is None or info is None:
            return None
        try:
            program = info.line_program_for_CU(cu)
            if program is None:
                return None
            self.cus_parsed += 1
            return _decode_lines(program, cu)
        except parse_errors() as e:
            self._damaged(cu_offset, f"it does not decode: {type(e).__name__}")
            return None

    def _scopes_at(self, cu, info, vaddr: int) -> list:
        """The nested DIEs (outermost first) whose ranges contain vaddr."""
        chain = []
        parent = cu.get_top_DIE()
        for _ in range(_MAX_DEPTH):
            found = None
            for child in parent.iter_children():
                if child.tag in _CONTAINER_TAGS:
                    inner = _search_container(child, cu, info, vaddr)
                    if inner is not None:
                        found = inner
                        break
                elif child.tag in _SCOPE_TAGS and _contains(child, cu, info, vaddr):
                    found = child
                    break
            if found is None:
                break
            chain.append(found)
            parent = found
        return chain


_GDB_INDEX_HEADER = struct.Struct("<6I")
_GDB_ADDRESS = struct.Struct("<QQI")


def gdb_index_ranges(data: bytes) -> List[Tuple[int, int, int]]:
    """(low, high, CU offset) from a `.gdb_index` section (versions 7 to 9, gdb's
    "Index Section Format"): its CU list (offset, length pairs) and its address area
    (low, high, CU number). [] for anything else, or anything inconsistent."""
    if len(data) < _GDB_INDEX_HEADER.size:
        return []
    version, cu_list, types_list, address_area, symbols, _pool = _GDB_INDEX_HEADER.unpack_from(data)
    if not 7 <= version <= 9 or not cu_list <= types_list <= address_area <= symbols <= len(data):
        return []
    offsets = [
        o
        for o, _ in struct.iter_unpack(
            "<QQ", data[cu_list : types_list - (types_list - cu_list) % 16]
        )
    ]
    out = []
    end = symbols - (symbols - address_area) % _GDB_ADDRESS.size
    for low, high, number in _GDB_ADDRESS.iter_unpack(data[address_area:end]):
        if number >= len(offsets):
            return []
        out.append((low, high, offsets[number]))
    return out


def _each_cu(info):
    """Every CU, parsed and let go, its abbreviation table too: pyelftools' iter_CUs() keeps
    every CU and every table it parsed (a table of a few KiB becomes ~0.4 MB of Python
    objects), 350 MiB over the 631 CUs of a 1 GB-DWARF binary, for an index that needs each
    CU's ranges once. (Private API of pyelftools, pinned to 0.33 in pyproject.toml.)"""
    section = info.debug_info_sec
    tables = info._abbrevtable_cache
    kept = set(tables)
    offset = 0
    while section is not None and offset < section.size:
        cu = info._parse_CU_at_offset(offset)
        length = cu["unit_length"] + cu.structs.initial_length_field_size()
        if length <= 0:
            return
        offset += length
        yield cu
        for key in [k for k in tables if k not in kept]:
            del tables[key]


def _search_container(die, cu, info, vaddr: int, depth: int = 0):
    if depth > _MAX_DEPTH:
        return None
    for child in die.iter_children():
        if child.tag in _CONTAINER_TAGS:
            inner = _search_container(child, cu, info, vaddr, depth + 1)
            if inner is not None:
                return inner
        elif child.tag == "DW_TAG_subprogram" and _contains(child, cu, info, vaddr):
            return child
    return None


def _contains(die, cu, info, vaddr: int) -> bool:
    return any(low <= vaddr < high for low, high in _die_ranges(die, cu, info))


def _die_ranges(die, cu, info) -> List[Tuple[int, int]]:
    attrs = die.attributes
    if "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
        low = attrs["DW_AT_low_pc"].value
        high_attr = attrs["DW_AT_high_pc"]
        high = high_attr.value if high_attr.form == "DW_FORM_addr" else low + high_attr.value
        return [(low, high)]
    if "DW_AT_ranges" not in attrs:
        return []
    ranges = info.range_lists()
    if ranges is None:
        return []
    attr = attrs["DW_AT_ranges"]
    top = cu.get_top_DIE()
    base = top.attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in top.attributes else 0
    out = []
    for entry in ranges.get_range_list_at_offset(attr.value, cu=cu):
        kind = type(entry).__name__
        if kind == "BaseAddressEntry":
            base = entry.base_address
        elif kind == "RangeEntry":
            if entry.is_absolute:
                out.append((entry.begin_offset, entry.end_offset))
            else:
                out.append((base + entry.begin_offset, base + entry.end_offset))
    return out


_SUPPLEMENT_REFS = frozenset(("DW_FORM_GNU_ref_alt", "DW_FORM_ref_sup4", "DW_FORM_ref_sup8"))


def _die_name(die) -> Optional[str]:
    """Linkage name (to be demangled) else name, through abstract_origin/specification."""
    for _ in range(8):
        attrs = die.attributes
        for key in ("DW_AT_linkage_name", "DW_AT_MIPS_linkage_name", "DW_AT_name"):
            if key in attrs:
                value = attrs[key].value
                # A string in a dwz supplementary file that is not there stays its offset.
                return _text(value) if isinstance(value, (bytes, str)) else None
        ref = next(
            (k for k in ("DW_AT_abstract_origin", "DW_AT_specification") if k in attrs), None
        )
        if ref is None:
            return None
        if attrs[ref].form in _SUPPLEMENT_REFS and die.dwarfinfo.supplementary_dwarfinfo is None:
            return None  # into a missing supplementary file: read here, another DIE's name
        try:
            die = die.get_DIE_from_attribute(ref)
        except parse_errors():
            return None
    return None


def _numbered_call_site(
    index: Optional[int], line: Optional[int], table: Optional[_LineTable]
) -> Tuple[Optional[str], Optional[int]]:
    """(file, line) of a call site given as a file number of the unit's line table."""
    file = None
    if table is not None and index is not None and 0 <= index < len(table.files):
        file = table.files[index]
    return file, line


def _call_site(die, table: Optional[_LineTable]) -> Tuple[Optional[str], Optional[int]]:
    attrs = die.attributes
    line = attrs["DW_AT_call_line"].value if "DW_AT_call_line" in attrs else None
    file = None
    if table is not None and "DW_AT_call_file" in attrs:
        index = attrs["DW_AT_call_file"].value
        if 0 <= index < len(table.files):
            file = table.files[index]
    return file, line


def _decode_lines(program, cu) -> _LineTable:
    header = program.header
    version = header["version"]
    directories = [_text(d) for d in header["include_directory"]]
    if version < 5:
        # DWARF 4 leaves directory 0 implicit: the CU's compilation directory.
        top = cu.get_top_DIE().attributes
        comp_dir = _text(top["DW_AT_comp_dir"].value) if "DW_AT_comp_dir" in top else ""
        directories = [comp_dir, *directories]
    names = []
    for entry in header["file_entry"]:
        name = _text(entry.name)
        dir_index = entry.dir_index
        # libdw's rule (what eu-stack prints): a relative name is joined to its directory
        # entry, which may itself be relative (glibc's "./libio").
        if name and not name.startswith("/") and 0 <= dir_index < len(directories):
            name = posixpath.join(directories[dir_index], name)
        names.append(name)
    # DWARF 5 numbers files from 0; earlier versions from 1.
    files = names if version >= 5 else [""] + names
    rows = []
    for entry in program.get_entries():
        state = entry.state
        if state is None:
            continue
        rows.append(
            (state.address, not state.end_sequence, state.file, state.line, state.end_sequence)
        )
    # At one address an end_sequence row sorts first, so a sequence starting there wins.
    rows.sort(key=lambda r: (r[0], r[1]))
    return _LineTable(
        addresses=[r[0] for r in rows],
        rows=[(r[2], r[3], r[4]) for r in rows],
        files=files,
    )


def _text(value) -> str:
    """A string attribute's text ("" for a value that is none: a damaged form or offset)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value if isinstance(value, str) else ""


def dwarf_of(loaded: LoadedObject) -> Optional[DwarfIndex]:
    """The DWARF of an object: its debug file's if that has any, else its own. Made once
    and kept on the object."""

    def make() -> Optional[DwarfIndex]:
        for source in (loaded.debug, loaded.elf):
            if source is not None and source.has_section(".debug_info"):
                return DwarfIndex(
                    source,
                    loaded.cache,
                    loaded.find_supplement,
                    loaded.origin,
                    loaded.open_found,
                    loaded.warn,
                    loaded.shown,
                )
        return None

    return loaded.derived("dwarf", make)


def member_offset_at(store: ObjectStore, pc: int, struct: str, member: str) -> Optional[int]:
    """Offset of `member` in `struct` as declared by the DWARF of the code at `pc` (the CU
    holding it): the layout the running library was built with. Kept on the object."""
    resolved = store.resolve(pc)
    if resolved is None:
        return None
    loaded, vaddr = resolved
    dwarf = dwarf_of(loaded)
    if dwarf is None:
        return None

    def find() -> Optional[int]:
        cu = dwarf.cu_offset(vaddr, True)
        return dwarf.member_offset(cu, struct, member) if cu is not None else None

    return loaded.derived(f"member/{struct}/{member}", find)


def cus_decoded(store: ObjectStore) -> int:
    """DWARF line programs decoded so far over every object of the store."""
    return sum(
        value.cus_parsed
        for loaded in store.loaded()
        for value in loaded.derived_values()
        if isinstance(value, DwarfIndex)
    )
