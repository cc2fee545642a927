"""The ELF file header and section header table, unpacked with `struct`, and section bytes
(SHF_COMPRESSED sections inflated, zlib with the standard library and zstd with the
`zstandard` package, within a bound).

pyelftools builds a Python object per section, and a hash-table object for .gnu.hash, the
first time any section is looked up by name: 10-15 ms per file, a third of a small dump's
analysis. Every stackdump run asks each object for a few sections by name (.symtab,
.debug_info, .gnu_debuglink, the build-id note), which this table answers from one read.
pyelftools' ELFFile is still what reads DWARF, and only when DWARF is read.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import BinaryIO, Callable, Dict, Iterator, Optional, Tuple

from stackdump.records import frozen

# e_ident, e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize,
# e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
_EHDR64 = struct.Struct("<16sHHIQQQIHHHHHH")
# sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign,
# sh_entsize
_SHDR64 = struct.Struct("<IIQQQQIIQQ")
CHDR64 = struct.Struct("<IIQQ")  # ch_type, ch_reserved, ch_size, ch_addralign
_NOTE = struct.Struct("<III")  # n_namesz, n_descsz, n_type

SHT_NOBITS = 8
SHF_COMPRESSED = 0x800
ELFCOMPRESS_ZLIB = 1
ELFCOMPRESS_ZSTD = 2
_CHUNK = 1 << 20
SHN_XINDEX = 0xFFFF
NT_GNU_BUILD_ID = 3
# A corrupt header must not make us read or inflate gigabytes.
_MAX_SECTIONS = 1 << 20
_MAX_NAMES = 64 << 20
_MAX_INFLATED = 1 << 30


@frozen
class ElfHeader:
    machine: int  # e_machine: which processor (62: x86-64, 183: aarch64)
    type: int  # e_type: 2 an executable, 3 a shared object (or PIE), 4 a core
    phoff: int
    phentsize: int
    phnum: int
    shoff: int
    shentsize: int
    shnum: int
    shstrndx: int


@frozen
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int


class NotElf(ValueError):
    """The file is not a 64-bit little-endian ELF file."""


def read_header(stream: BinaryIO) -> ElfHeader:
    """The file header of a 64-bit little-endian ELF file; NotElf for anything else."""
    stream.seek(0)
    raw = stream.read(_EHDR64.size)
    if len(raw) < _EHDR64.size or raw[:4] != b"\x7fELF":
        raise NotElf("not an ELF file")
    if raw[4] != 2 or raw[5] != 1:
        raise NotElf("not a 64-bit little-endian ELF object")
    fields = _EHDR64.unpack(raw)
    return ElfHeader(
        machine=fields[2],
        type=fields[1],
        phoff=fields[5],
        phentsize=fields[9],
        phnum=fields[10],
        shoff=fields[6],
        shentsize=fields[11],
        shnum=fields[12],
        shstrndx=fields[13],
    )


def read_sections(stream: BinaryIO, header: ElfHeader) -> Tuple[Section, ...]:
    """Every section header, named; () when the table is missing or unreadable. Entries past
    the end of a truncated file are left out."""
    if header.shoff == 0 or header.shentsize < _SHDR64.size:
        return ()
    size = stream.seek(0, 2)
    count, names_index = header.shnum, header.shstrndx
    if count == 0 or names_index == SHN_XINDEX:
        # Extended numbering: the real values live in section 0's sh_size and sh_link.
        first = _raw_headers(stream, header, size, 1)
        if not first:
            return ()
        if count == 0:
            count = first[0][5]
        if names_index == SHN_XINDEX:
            names_index = first[0][6]
    raw = _raw_headers(stream, header, size, min(count, _MAX_SECTIONS))
    names = b""
    if 0 < names_index < len(raw):
        entry = raw[names_index]
        names = _read(stream, entry[4], min(entry[5], _MAX_NAMES))
    return tuple(
        Section(
            name=cstring(names, entry[0]),
            type=entry[1],
            flags=entry[2],
            addr=entry[3],
            offset=entry[4],
            size=entry[5],
            link=entry[6],
        )
        for entry in raw
    )


def by_name(sections: Tuple[Section, ...]) -> Dict[str, Section]:
    # Like pyelftools' get_section_by_name, the last of same-named sections wins.
    return {s.name: s for s in sections}


def section_data(stream: BinaryIO, section: Section) -> Optional[bytes]:
    """The section's bytes, inflated if SHF_COMPRESSED; None for SHT_NOBITS and for
    compression this module cannot undo."""
    if section.type == SHT_NOBITS:
        return None
    data = _read(stream, section.offset, section.size)
    if not section.flags & SHF_COMPRESSED:
        return data
    if len(data) < CHDR64.size:
        return None
    kind, _reserved, inflated_size, _align = CHDR64.unpack_from(data)
    inflate = inflater(kind)
    if inflate is None or not 0 < inflated_size <= _MAX_INFLATED:
        return None
    packed = io.BytesIO(data)
    packed.seek(CHDR64.size)
    out = b"".join(inflate(packed, inflated_size))
    return out if len(out) == inflated_size else None


def inflater(kind: int) -> Optional[Callable[[BinaryIO, int], Iterator[bytes]]]:
    """For a compression type (ch_type), a function that yields the inflated bytes of a
    compressed stream (positioned after its header) in chunks of at most 1 MiB, never more
    than the size the header declares; None for a type it cannot undo (zstd without the
    zstandard package)."""
    if kind == ELFCOMPRESS_ZLIB:
        return _inflate_zlib
    if kind == ELFCOMPRESS_ZSTD:
        try:
            import zstandard  # noqa: F401 - only a zstd section needs it
        except ImportError:
            return None
        return _inflate_zstd
    return None


def _inflate_zlib(packed: BinaryIO, size: int) -> Iterator[bytes]:
    inflate = zlib.decompressobj()
    left = size
    while left > 0:
        data = inflate.unconsumed_tail or packed.read(_CHUNK)
        if not data:
            return
        chunk = inflate.decompress(data, min(left, _CHUNK))
        if not chunk and inflate.eof:
            return
        left -= len(chunk)
        yield chunk


def _inflate_zstd(packed: BinaryIO, size: int) -> Iterator[bytes]:
    import zstandard  # optional: only a zstd-compressed section needs it

    try:
        reader = zstandard.ZstdDecompressor().stream_reader(packed, read_across_frames=True)
        left = size
        while left > 0:
            chunk = reader.read(min(left, _CHUNK))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    except zstandard.ZstdError as e:
        raise ValueError(f"corrupt zstd section: {e}") from None


def gnu_build_id(note_data: bytes) -> Optional[str]:
    """The hex build-id in a .note.gnu.build-id section's bytes."""
    offset = 0
    while offset + _NOTE.size <= len(note_data):
        namesz, descsz, kind = _NOTE.unpack_from(note_data, offset)
        name_at = offset + _NOTE.size
        desc_at = name_at + _align4(namesz)
        end = desc_at + _align4(descsz)
        if desc_at + descsz > len(note_data):
            return None
        if kind == NT_GNU_BUILD_ID and note_data[name_at : name_at + namesz] == b"GNU\0":
            return note_data[desc_at : desc_at + descsz].hex() or None
        offset = end
    return None


def _raw_headers(stream: BinaryIO, header: ElfHeader, file_size: int, count: int):
    if header.shoff >= file_size:
        return []
    count = min(count, (file_size - header.shoff) // header.shentsize)
    data = _read(stream, header.shoff, count * header.shentsize)
    usable = len(data) // header.shentsize
    return [_SHDR64.unpack_from(data, i * header.shentsize) for i in range(usable)]


def _read(stream: BinaryIO, offset: int, size: int) -> bytes:
    # Clamped to the file: a corrupt size must not become a huge allocation in read().
    size = min(size, stream.seek(0, 2) - offset)
    if size <= 0:
        return b""
    stream.seek(offset)
    return stream.read(size)


def _align4(n: int) -> int:
    return (n + 3) & ~3


def cstring(table: bytes, offset: int) -> str:
    """The NUL-terminated string at `offset` of a string table."""
    end = table.find(b"\0", offset)
    if end < 0:
        end = len(table)
    # Bytes that are not UTF-8 are kept (surrogates), to be escaped as \xHH when printed.
    return table[offset:end].decode("utf-8", "surrogateescape")
