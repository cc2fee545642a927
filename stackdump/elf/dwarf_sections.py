"""The debug sections of one ELF file as pyelftools' `DWARFInfo` reads them, without copying
them into memory, and the supplementary file dwz moved their shared parts to.

pyelftools' `ELFFile.get_dwarf_info()` reads every debug section into a BytesIO: 1 GB of DWARF
becomes 1 GB of this process's memory before the first lookup. Here each section is a
read-only map of the file (`SectionView`): the kernel pages in what a lookup touches (the
aranges, one CU's DIEs and line program, a few strings) and can drop it again. A compressed
section (SHF_COMPRESSED, zlib or zstd) is inflated once, in bounded chunks, into an unlinked
temporary file that is mapped the same way: never into one Python bytes object.

dwz (Debian's and Fedora's debug packages) moves DIEs and strings that many files share into
one supplementary file, named by `.gnu_debugaltlink` (GNU) or `.debug_sup` (DWARF 5): a file
name and its build-id. It is found like any debug file: by that name (relative to the debug
file), then by build-id under the debug roots; a file whose build-id differs is not used.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import struct
from typing import Callable, Dict, Optional, Sequence, Tuple

from stackdump.arch import X86_64, for_elf_machine
from stackdump.elf import sections
from stackdump.elf.sections import Section

# The sections DWARFInfo takes, by its keyword argument.
_SECTIONS = {
    "debug_info_sec": ".debug_info",
    "debug_aranges_sec": ".debug_aranges",
    "debug_abbrev_sec": ".debug_abbrev",
    "debug_frame_sec": ".debug_frame",
    "eh_frame_sec": ".eh_frame",
    "debug_str_sec": ".debug_str",
    "debug_loc_sec": ".debug_loc",
    "debug_ranges_sec": ".debug_ranges",
    "debug_line_sec": ".debug_line",
    "debug_pubtypes_sec": ".debug_pubtypes",
    "debug_pubnames_sec": ".debug_pubnames",
    "debug_addr_sec": ".debug_addr",
    "debug_str_offsets_sec": ".debug_str_offsets",
    "debug_line_str_sec": ".debug_line_str",
    "debug_loclists_sec": ".debug_loclists",
    "debug_rnglists_sec": ".debug_rnglists",
    "debug_sup_sec": ".debug_sup",
    "gnu_debugaltlink_sec": ".gnu_debugaltlink",
    "debug_types_sec": ".debug_types",
}
_MAX_INFLATED = 16 << 30  # one section, inflated: a hostile header must not fill the disk


class SectionView(mmap.mmap):
    """A read-only map of one byte range of a file, seen as a stream from offset 0 to its
    size: reads stay in C (mmap's own), only seek and tell are translated."""

    _base: int
    _size: int

    def __new__(cls, fileno: int, offset: int, size: int) -> SectionView:
        aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
        view = super().__new__(
            cls, fileno, offset - aligned + size, access=mmap.ACCESS_READ, offset=aligned
        )
        view._base = offset - aligned
        view._size = size
        mmap.mmap.seek(view, view._base)
        return view

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            pos += mmap.mmap.tell(self) - self._base
        elif whence == os.SEEK_END:
            pos += self._size
        # A seek past the end reads nothing, as on a file (mmap itself refuses it).
        pos = min(max(pos, 0), self._size)
        mmap.mmap.seek(self, self._base + pos)
        return pos

    def tell(self) -> int:
        return mmap.mmap.tell(self) - self._base


def section_stream(stream, section: Section, scratch: Optional[str]):
    """The section's bytes as a stream: a view of the file, or for a compressed section a
    view of its inflated copy (in `scratch`, else the temp directory). None for what cannot
    be read (SHT_NOBITS, unknown compression, a section past the end of the file)."""
    if section.type == sections.SHT_NOBITS:
        return None
    try:
        fileno = stream.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):
        data = sections.section_data(stream, section)  # an in-memory image (the vDSO)
        return io.BytesIO(data) if data is not None else None
    file_size = os.fstat(fileno).st_size
    if section.offset + section.size > file_size:
        return None
    if not section.flags & sections.SHF_COMPRESSED:
        return SectionView(fileno, section.offset, section.size) if section.size else io.BytesIO()
    with SectionView(fileno, section.offset, section.size) as packed:
        return _inflated(packed, section.size, scratch)


def _inflated(packed: SectionView, size: int, scratch: Optional[str]):
    header = packed.read(sections.CHDR64.size)
    if len(header) < sections.CHDR64.size:
        return None
    kind, _reserved, inflated_size, _align = sections.CHDR64.unpack(header)
    if not 0 < inflated_size <= _MAX_INFLATED:
        return None
    inflate = sections.inflater(kind)
    if inflate is None:
        return None
    import tempfile  # only a compressed section needs it

    out = tempfile.TemporaryFile(dir=scratch)  # noqa: SIM115 - mapped, then closed
    try:
        written = 0
        for chunk in inflate(packed, inflated_size):
            out.write(chunk)
            written += len(chunk)
        if written != inflated_size:
            return None
        out.flush()
        return SectionView(out.fileno(), 0, written)
    finally:
        out.close()  # the map keeps the unlinked file's pages


def dwarf_info(elf, scratch: Optional[str], find_supplement: Callable[[str, str], object]):
    """pyelftools' DWARFInfo over views of `elf`'s debug sections, with the supplementary
    file's DWARFInfo attached when the file names one (`find_supplement(name, build_id)`
    returns an ElfObject or None)."""
    # pyelftools' DWARF reader (~30 ms to import): only for a dump that reads DWARF
    from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DwarfConfig, DWARFInfo

    descriptors: Dict[str, Optional[DebugSectionDescriptor]] = {}
    for keyword, name in _SECTIONS.items():
        section = elf.section(name)
        stream = section_stream(elf.stream, section, scratch) if section is not None else None
        if stream is None:
            descriptors[keyword] = None
            continue
        size = stream.seek(0, os.SEEK_END)
        stream.seek(0)
        descriptors[keyword] = DebugSectionDescriptor(
            stream, name, section.offset, size, section.addr
        )
    arch = for_elf_machine(elf.machine) or X86_64  # (an unknown processor: read as x86-64's)
    config = DwarfConfig(
        little_endian=True, default_address_size=8, machine_arch=arch.pyelftools_machine
    )
    info = DWARFInfo(config=config, **descriptors)
    link = supplement_link(descriptors)
    if link is not None:
        supplement = find_supplement(*link)
        if supplement is not None:
            info.supplementary_dwarfinfo = dwarf_info(supplement, scratch, _no_supplement)
    return info


def _no_supplement(name: str, build_id: str) -> None:
    return None  # a supplementary file names no further one


def supplement_link(descriptors) -> Optional[Tuple[str, str]]:
    """(file name, hex build-id) of the supplementary file: `.gnu_debugaltlink` is the name,
    a NUL, and the build-id; DWARF 5's `.debug_sup` is version (2), is_supplementary (1),
    the name, a NUL, a ULEB128 length and the checksum (the build-id)."""
    alt = descriptors.get("gnu_debugaltlink_sec")
    if alt is not None:
        alt.stream.seek(0)
        data = alt.stream.read(4096)
        name, _, rest = data.partition(b"\0")
        if name and rest:
            return os.fsdecode(name), rest.hex()
    sup = descriptors.get("debug_sup_sec")
    if sup is not None:
        sup.stream.seek(0)
        data = sup.stream.read(4096)
        if len(data) > 3 and data[2] == 0:
            name, _, rest = data[3:].partition(b"\0")
            length, at = _uleb128(rest)
            if name and length and at + length <= len(rest):
                return os.fsdecode(name), rest[at : at + length].hex()
    return None


def _uleb128(data: bytes) -> Tuple[int, int]:
    value = shift = 0
    for i, byte in enumerate(data[:10]):
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i + 1
    return 0, len(data)


def supplement_candidates(
    debug_path: Optional[str],
    name: str,
    build_id: str,
    fs_roots: Sequence[str],
    debug_roots: Sequence[str],
) -> Tuple[str, ...]:
    """Where the supplementary file may be: its name as given (an absolute name under each
    file-system root, the target's first; a relative one from the debug file's directory, as
    dwz writes it), then by build-id under each debug root."""
    places = []
    if os.path.isabs(name):
        places += [f"{root.rstrip('/')}{name}" for root in fs_roots]
    elif debug_path:
        places.append(os.path.normpath(os.path.join(os.path.dirname(debug_path), name)))
    if len(build_id) > 2:
        places += [f"{root}/.build-id/{build_id[:2]}/{build_id[2:]}.debug" for root in debug_roots]
    return tuple(dict.fromkeys(places))


# A .dwo file's sections, by DWARFInfo's keyword; .debug_addr stays the executable's.
_SPLIT_SECTIONS = {
    "debug_info_sec": ".debug_info.dwo",
    "debug_abbrev_sec": ".debug_abbrev.dwo",
    "debug_str_sec": ".debug_str.dwo",
    "debug_str_offsets_sec": ".debug_str_offsets.dwo",
    "debug_line_sec": ".debug_line.dwo",
    "debug_loclists_sec": ".debug_loclists.dwo",
    "debug_rnglists_sec": ".debug_rnglists.dwo",
}
# In a .dwo holding one unit, its indexed forms count from just after each section's header
# (DWARF 5, 7.3.2.1): 8 bytes of .debug_str_offsets, 12 of .debug_rnglists/.debug_loclists.
_SPLIT_BASES = {
    "DW_AT_str_offsets_base": 8,
    "DW_AT_rnglists_base": 12,
    "DW_AT_loclists_base": 12,
    "DW_AT_stmt_list": 0,
}


def split_dwarf_info(dwo, executable_info, scratch: Optional[str], parts=None):
    """DWARFInfo over a .dwo file's sections (`-gsplit-dwarf`), its addresses taken from the
    executable's .debug_addr, as its skeleton unit says. `parts`: for a .dwp package, the
    one unit's contribution (offset, size) to each section, by section name (`dwp_parts`)."""
    from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DWARFInfo  # as dwarf_info

    descriptors = {keyword: None for keyword in _SECTIONS}
    for keyword, name in _SPLIT_SECTIONS.items():
        section = dwo.section(name)
        if section is None:
            continue
        if parts is not None and name in parts:
            start, size = parts[name]
            if section.flags & sections.SHF_COMPRESSED or start + size > section.size:
                continue
            stream = (
                SectionView(dwo.stream.fileno(), section.offset + start, size) if size else None
            )
        else:
            stream = section_stream(dwo.stream, section, scratch)
        if stream is not None:
            size = stream.seek(0, os.SEEK_END)
            stream.seek(0)
            descriptors[keyword] = DebugSectionDescriptor(stream, name, section.offset, size, 0)
    descriptors["debug_addr_sec"] = executable_info.debug_addr_sec
    return DWARFInfo(config=executable_info.config, **descriptors)


# DWARF 5 section identifiers in a package's index (7.3.5.3), by the .dwo section they name.
_DW_SECT = {
    1: ".debug_info.dwo",
    3: ".debug_abbrev.dwo",
    4: ".debug_line.dwo",
    5: ".debug_loclists.dwo",
    6: ".debug_str_offsets.dwo",
    8: ".debug_rnglists.dwo",
}


def dwp_parts(index: bytes, dwo_id: int) -> Optional[Dict[str, Tuple[int, int]]]:
    """The unit `dwo_id`'s (offset, size) in each section of a .dwp package, from its
    `.debug_cu_index` (DWARF 5, 7.3.5.3: a header, a hash table of unit signatures, a
    parallel table of row numbers, then section ids, offsets and sizes by row). None when
    the package does not hold that unit or the index is not one this reads."""
    if len(index) < 16:
        return None
    version, _padding, columns, units, slots = struct.unpack_from("<HHIII", index)
    if version != 5 or not columns or columns > 64 or slots > len(index) // 12:
        return None
    rows_at = 16 + 8 * slots
    ids_at = rows_at + 4 * slots
    offsets_at = ids_at + 4 * columns
    sizes_at = offsets_at + 4 * columns * units
    if sizes_at + 4 * columns * units > len(index):
        return None
    signatures = struct.unpack_from(f"<{slots}Q", index, 16)
    for slot, signature in enumerate(signatures):
        if signature != dwo_id:
            continue
        row = struct.unpack_from("<I", index, rows_at + 4 * slot)[0]
        if not 0 < row <= units:
            return None
        ids = struct.unpack_from(f"<{columns}I", index, ids_at)
        offsets = struct.unpack_from(f"<{columns}I", index, offsets_at + 4 * columns * (row - 1))
        sizes = struct.unpack_from(f"<{columns}I", index, sizes_at + 4 * columns * (row - 1))
        return {
            _DW_SECT[kind]: (offset, size)
            for kind, offset, size in zip(ids, offsets, sizes)
            if kind in _DW_SECT
        }
    return None


def split_unit(split, skeleton):
    """The split unit of `split` that `skeleton` (a CU of the executable) stands for (the same
    dwo_id), its top DIE given the bases the skeleton holds for it (address base, low pc)
    and those a one-unit .dwo implies; None when the file has no such unit."""
    # pyelftools, as in dwarf_info: split DWARF only
    from elftools.common.exceptions import DWARFError
    from elftools.dwarf.die import AttributeValue

    want = skeleton.header.get("dwo_id")
    for unit in split.iter_CUs():
        if want is not None and unit.header.get("dwo_id") not in (None, want):
            continue
        with contextlib.suppress(DWARFError):
            unit.get_top_DIE()  # its indexed attributes need the bases added below
        if not unit._dielist:
            return None
        top = unit._dielist[0]
        given = skeleton.get_top_DIE().attributes
        bases = dict(_SPLIT_BASES)
        for name in ("DW_AT_addr_base", "DW_AT_GNU_addr_base", "DW_AT_low_pc"):
            if name in given:
                bases[name.replace("GNU_", "")] = given[name].value
        for name, value in bases.items():
            if name not in top.attributes:
                top.attributes[name] = AttributeValue(
                    name, "DW_FORM_sec_offset", value, value, 0, 0
                )
        top._translate_indirect_attributes()
        return unit
    return None
