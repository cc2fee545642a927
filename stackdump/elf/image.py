"""One ELF object: load segments, build-id, debuglink, and a sorted function-symbol table.

Headers are unpacked with `struct` (sections.py); pyelftools' ELFFile is opened only for
DWARF. The symbol table is unpacked in bulk with `struct.iter_unpack`, ~15x
faster than `iter_symbols()` (FACTS.md), and names are decoded from the string table only when
a lookup returns them.

Every method is defensive: a truncated or corrupt file yields fewer answers, not exceptions.
"""

from __future__ import annotations

import array
import bisect
import io
import lzma
import os
import struct
import zlib
from typing import TYPE_CHECKING, BinaryIO, Dict, Iterator, List, Optional, Set, Tuple

from stackdump import safefs
from stackdump.elf import sections
from stackdump.elf.dwarf_sections import SectionView
from stackdump.elf.sections import Section, cstring
from stackdump.records import frozen

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile

# Everything a malformed file can make our own parsers and struct raise.
PARSE_ERRORS = (
    OSError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
    ValueError,
    LookupError,
    AttributeError,
    TypeError,
    AssertionError,
    EOFError,
    ArithmeticError,
    MemoryError,
    RecursionError,
    NotImplementedError,
)


def parse_errors() -> Tuple[type, ...]:
    """PARSE_ERRORS and what pyelftools raises past them (fuzzing found its vendored
    construct's ConstructError escaping ELFError): for code that calls pyelftools. A
    function, not a constant: an `except parse_errors():` clause evaluates it only when an
    exception passes, so a dump that reads no DWARF never imports construct (~18 ms)."""
    # heavy (construct): imported once pyelftools has run, which has loaded it already
    from elftools.common.exceptions import DWARFError, ELFError
    from elftools.construct.core import ConstructError

    return (*PARSE_ERRORS, ELFError, DWARFError, ConstructError)


_SYM64 = struct.Struct("<IBBHQQ")
STT_FUNC = 2
STT_GNU_IFUNC = 10
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
# Among aliases of one address, exported names (global or weak) beat local ones.
_BINDING_RANK = {STB_GLOBAL: 0, STB_WEAK: 0, STB_LOCAL: 1}


@frozen
class LoadSegment:
    offset: int
    vaddr: int
    filesz: int
    memsz: int


PT_LOAD = 1
PT_GNU_EH_FRAME = 0x6474E550
_PHDR64 = struct.Struct("<IIQQQQQQ")


@frozen
class ProgramHeader:
    type: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


class SymbolTable:
    """Function symbols sorted by address; one name per address."""

    def __init__(self, starts: List[int], sizes: List[int], names: List[int], strtab: bytes):
        self._starts = starts
        self._sizes = sizes
        self._names = names
        self._strtab = strtab

    def __len__(self) -> int:
        return len(self._starts)

    def to_fields(self) -> dict:
        return {
            "starts": array.array("Q", self._starts),
            "sizes": array.array("Q", self._sizes),
            "names": array.array("Q", self._names),
            "strtab": self._strtab,
        }

    @classmethod
    def from_fields(cls, fields: dict) -> SymbolTable:
        starts, sizes, names = fields["starts"], fields["sizes"], fields["names"]
        if not (len(starts) == len(sizes) == len(names)) or list(starts) != sorted(starts):
            raise ValueError("inconsistent cached symbol table")
        return cls(starts.tolist(), sizes.tolist(), names.tolist(), fields["strtab"])

    def lookup(self, vaddr: int) -> Optional[Tuple[str, int]]:
        """(name, symbol start) of the function containing vaddr."""
        found = self.find(vaddr)
        return None if found is None else found[:2]

    def find(self, vaddr: int) -> Optional[Tuple[str, int, int]]:
        """(name, symbol start, size: 0 when the symbol has none) of the function containing
        vaddr."""
        i = bisect.bisect_right(self._starts, vaddr) - 1
        if i < 0:
            return None
        # A sized symbol must contain vaddr. Look a few entries back for an enclosing one,
        # because a small symbol (a cold part, a local label) can sit inside a larger one.
        for j in range(i, max(i - 8, -1), -1):
            start, size = self._starts[j], self._sizes[j]
            if start <= vaddr < start + size:
                return self._name(j), start, size
        # Hand-written assembly often has no size: accept it up to the next symbol only.
        if self._sizes[i] == 0:
            return self._name(i), self._starts[i], 0
        return None

    def named(self, names: Set[str]) -> Iterator[Tuple[str, int]]:
        """(name, start) of every function called one of `names`."""
        for i, start in enumerate(self._starts):
            name = self._name(i)
            if name in names:
                yield name, start

    def _name(self, i: int) -> str:
        # Debug files spell versioned symbols `name@@GLIBC_2.2.5`; the version is noise here.
        return cstring(self._strtab, self._names[i]).split("@", 1)[0]


def file_build_id(path: str) -> Optional[str]:
    """The GNU build-id of the ELF file at `path`; None when it has none or is no ELF file
    (what a server sent, what lies at a core's mapped path)."""
    try:
        elf = ElfObject.open(path)
    except PARSE_ERRORS:
        return None
    try:
        return elf.build_id()
    except PARSE_ERRORS:
        return None
    finally:
        elf.close()


def build_symbol_table(symtab: bytes, strtab: bytes) -> SymbolTable:
    entries = []
    usable = len(symtab) - len(symtab) % _SYM64.size
    for name, info, _other, shndx, value, size in _SYM64.iter_unpack(symtab[:usable]):
        kind = info & 0xF
        if kind in (STT_FUNC, STT_GNU_IFUNC) and shndx != 0 and value:
            entries.append((value, _BINDING_RANK.get(info >> 4, 3), -size, name))
    entries.sort()
    starts: List[int] = []
    sizes: List[int] = []
    names: List[int] = []
    i = 0
    n = len(entries)
    while i < n:
        j = i + 1
        while j < n and entries[j][0] == entries[i][0]:
            j += 1
        best = entries[i] if j == i + 1 else min(entries[i:j], key=lambda e: _alias_key(e, strtab))
        starts.append(best[0])
        sizes.append(-best[2])
        names.append(best[3])
        i = j
    return SymbolTable(starts, sizes, names, strtab)


def _alias_key(entry, strtab: bytes):
    name = cstring(strtab, entry[3])
    # `nanosleep` over `__nanosleep` over `__GI___nanosleep`: the public spelling reads best.
    return (entry[1], len(name) - len(name.lstrip("_")), entry[2], len(name), name)


class ElfObject:
    """Headers and symbols of one ELF file (or in-memory image, for the vDSO)."""

    def __init__(self, stream: BinaryIO, path: Optional[str] = None) -> None:
        self._stream = stream
        self.path = path
        self._header = sections.read_header(stream)
        self.machine = self._header.machine  # e_machine (stackdump.arch.for_elf_machine)
        self._elf: Optional[ELFFile] = None
        self._sections: Optional[Dict[str, Section]] = None
        self._all_sections: Tuple[Section, ...] = ()
        # Program headers unpacked by hand: pyelftools' iter_segments() builds a
        # DynamicSegment that walks every section header, ~20x the cost.
        self.program_headers = self._read_program_headers()
        self.segments: Tuple[LoadSegment, ...] = tuple(
            LoadSegment(p.offset, p.vaddr, p.filesz, p.memsz)
            for p in self.program_headers
            if p.type == PT_LOAD
        )

    def _read_program_headers(self) -> Tuple[ProgramHeader, ...]:
        header = self._header
        count, size = header.phnum, header.phentsize
        if size < _PHDR64.size or count > 4096:
            return ()
        self._stream.seek(header.phoff)
        data = self._stream.read(count * size)
        headers = []
        for i in range(min(count, len(data) // size)):
            p_type, _flags, offset, vaddr, _paddr, filesz, memsz, _align = _PHDR64.unpack_from(
                data, i * size
            )
            headers.append(ProgramHeader(p_type, offset, vaddr, filesz, memsz))
        return tuple(headers)

    def segment_bytes(self, header: ProgramHeader) -> bytes:
        try:
            self._stream.seek(header.offset)
            return self._stream.read(header.filesz)
        except (OSError, ValueError, OverflowError):
            return b""

    @classmethod
    def open(cls, path: str) -> ElfObject:
        """The ELF file at path. Only a regular file is opened, never blocking
        (safefs.NotRegularFile, an OSError, otherwise)."""
        f = safefs.open_binary(path)
        try:
            return cls(f, path)
        except BaseException:
            f.close()
            raise

    @classmethod
    def from_bytes(cls, data: bytes) -> ElfObject:
        return cls(io.BytesIO(data))

    def close(self) -> None:
        self._stream.close()

    @property
    def stream(self) -> BinaryIO:
        """The open file (or in-memory image): for views of its sections."""
        return self._stream

    @property
    def elffile(self) -> ELFFile:
        """pyelftools' view of the file, opened on first use (DWARF): its import and section
        objects cost ~30 ms that a dump without DWARF never pays."""
        if self._elf is None:
            from elftools.elf.elffile import ELFFile  # pyelftools: only for debug sections

            self._elf = ELFFile(self._stream)
        return self._elf

    def section(self, name: str) -> Optional[Section]:
        if self._sections is None:
            try:
                self._all_sections = sections.read_sections(self._stream, self._header)
            except PARSE_ERRORS:
                self._all_sections = ()
            self._sections = sections.by_name(self._all_sections)
        return self._sections.get(name)

    def file_offset_to_vaddr(self, offset: int) -> Optional[int]:
        for seg in self.segments:
            if seg.offset <= offset < seg.offset + max(seg.filesz, 1):
                return seg.vaddr + (offset - seg.offset)
        return None

    def read_vaddr_range(self, vaddr: int, size: Optional[int] = None) -> bytes:
        """File bytes from vaddr to the end of the PT_LOAD segment that holds it (at most
        `size` of them)."""
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                skip = vaddr - seg.vaddr
                length = seg.filesz - skip if size is None else min(size, seg.filesz - skip)
                try:
                    self._stream.seek(seg.offset + skip)
                    return self._stream.read(length)
                except (OSError, ValueError, OverflowError):
                    return b""
        return b""

    def vaddr_view(self, vaddr: int) -> Tuple[Optional[BinaryIO], int]:
        """(stream, size) of the file bytes from vaddr to the end of its PT_LOAD segment: a
        read-only map of the file (nothing copied), or for an in-memory image its bytes."""
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                skip = vaddr - seg.vaddr
                size = seg.filesz - skip
                try:
                    fileno = self._stream.fileno()
                except (OSError, AttributeError, io.UnsupportedOperation):
                    data = self.read_vaddr_range(vaddr)
                    return io.BytesIO(data), len(data)

                try:
                    if seg.offset + skip + size > os.fstat(fileno).st_size or size <= 0:
                        return None, 0
                    return SectionView(fileno, seg.offset + skip, size), size
                except (OSError, ValueError, OverflowError):
                    return None, 0
        return None, 0

    def identity(self) -> Optional[str]:
        """A cache key for this file's contents: build-id and size (a debug file and its
        object share a build-id, not a size), else path, size, mtime and inode. None (not
        cached) for a file that someone other than root and the running user can have
        written: its build-id may be a forgery of another file's, and what is derived from
        it must not name that file's frames in later dumps (safefs.trusted)."""
        if self.path is None:
            return None
        try:
            st = os.fstat(self._stream.fileno())
        except (OSError, ValueError, AttributeError):
            return None
        if not safefs.trusted(st):
            return None
        build_id = self.build_id()
        if build_id:
            return f"build-id:{build_id}:{st.st_size}"
        return f"file:{os.path.realpath(self.path)}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"

    def build_id(self) -> Optional[str]:
        if not hasattr(self, "_build_id"):
            self._build_id = self._read_build_id()
        return self._build_id

    def _read_build_id(self) -> Optional[str]:
        data = self.section_bytes(".note.gnu.build-id")
        return sections.gnu_build_id(data) if data else None

    def has_section(self, name: str) -> bool:
        section = self.section(name)
        return section is not None and section.type != sections.SHT_NOBITS

    def section_bytes(self, name: str) -> Optional[bytes]:
        section = self.section(name)
        return None if section is None else self._section_data(section)

    def _section_data(self, section: Section) -> Optional[bytes]:
        try:
            return sections.section_data(self._stream, section)
        except PARSE_ERRORS:
            return None

    def symbol_values(self, names: Set[str]) -> Dict[str, int]:
        """name -> value of the defined symbols (of any kind: data too) called one of
        `names`, from .symtab else .dynsym."""
        found: Dict[str, int] = {}
        for table, strings in ((".symtab", ".strtab"), (".dynsym", ".dynstr")):
            symtab, strtab = self.section_bytes(table), self.section_bytes(strings)
            if not symtab or not strtab or not any(n.encode() in strtab for n in names):
                continue
            usable = len(symtab) - len(symtab) % _SYM64.size
            for name, _info, _other, shndx, value, _size in _SYM64.iter_unpack(symtab[:usable]):
                if shndx != 0 and value:
                    text = cstring(strtab, name)
                    if text in names:
                        found.setdefault(text, value)
            if len(found) == len(names):
                break
        return found

    def symbols(self, prefer: Tuple[str, ...] = (".symtab", ".dynsym")) -> SymbolTable:
        """The first non-empty table among `prefer`, built anew: callers keep it (LoadedObject
        does, through the disk cache)."""
        for name in prefer:
            section = self.section(name)
            if section is None or not 0 < section.link < len(self._all_sections):
                continue
            symtab = self._section_data(section)
            strtab = self._section_data(self._all_sections[section.link])
            if not symtab or strtab is None:
                continue
            try:
                table = build_symbol_table(symtab, strtab)
            except PARSE_ERRORS:
                continue
            if len(table):
                return table
        return SymbolTable([], [], [], b"")
