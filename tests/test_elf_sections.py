"""stackdump's struct-based section table agrees with pyelftools on real files: names, types,
addresses, bytes (compressed debug sections inflated) and the build-id."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from helpers import compile_target

from stackdump.elf import sections
from stackdump.elf.image import ElfObject

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def libc_debug_file() -> Path:
    """libc6-dbg's file for this libc (installed by .ci/run), which compresses its DWARF."""
    out = subprocess.run(["readelf", "-n", LIBC], capture_output=True, text=True).stdout
    build_id = out.split("Build ID:")[1].split()[0]
    path = Path("/usr/lib/debug/.build-id") / build_id[:2] / f"{build_id[2:]}.debug"
    if not path.exists():
        pytest.skip(f"libc6-dbg not installed ({path} missing)")
    return path


def real_files(build_dir):
    plain = compile_target("threads.c", build_dir, "threads-O0", ["-O0", "-g"])
    compressed = build_dir / "threads-zdebug"
    subprocess.run(
        ["objcopy", "--compress-debug-sections=zlib", str(plain), str(compressed)], check=True
    )
    return [plain, compressed, Path(LIBC), libc_debug_file()]


def test_section_table_and_bytes_match_pyelftools(build_dir):
    compressed_seen = 0
    for path in real_files(build_dir):
        with open(path, "rb") as f:
            ours = sections.read_sections(f, sections.read_header(f))
            theirs = list(ELFFile(f).iter_sections())
            assert [s.name for s in ours] == [s.name for s in theirs], path
            for mine, section in zip(ours, theirs):
                assert mine.addr == section["sh_addr"]
                assert mine.offset == section["sh_offset"]
                assert mine.size == section["sh_size"]
                assert mine.link == section["sh_link"]
                assert (mine.type == sections.SHT_NOBITS) == (section["sh_type"] == "SHT_NOBITS")
                if mine.type == sections.SHT_NOBITS:
                    assert sections.section_data(f, mine) is None
                    continue
                if mine.flags & sections.SHF_COMPRESSED:
                    compressed_seen += 1
                assert sections.section_data(f, mine) == section.data(), (path, mine.name)
    assert compressed_seen >= 10  # the objcopy'd binary's and libc6-dbg's .debug_* sections


def test_build_id_matches_readelf(build_dir):
    for path in real_files(build_dir):
        out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True).stdout
        expected = out.split("Build ID:")[1].split()[0]
        elf = ElfObject.open(str(path))
        try:
            assert elf.build_id() == expected
        finally:
            elf.close()


def test_not_elf_and_truncated_files():
    with pytest.raises(sections.NotElf):
        sections.read_header(io.BytesIO(b"#!/bin/sh\n" * 10))
    with pytest.raises(sections.NotElf):
        sections.read_header(io.BytesIO(b"\x7fELF\x01\x01" + bytes(58)))  # 32-bit
    data = Path(LIBC).read_bytes()
    header = sections.read_header(io.BytesIO(data))
    # Cut inside the section header table: the entries that are whole, no exception.
    cut = header.shoff + 10 * header.shentsize + 7
    table = sections.read_sections(io.BytesIO(data[:cut]), header)
    assert len(table) == 10
    # A section whose size runs past the end of the file reads what is there.
    text = next(s for s in sections.read_sections(io.BytesIO(data), header) if s.name == ".text")
    shorter = data[: text.offset + 100]
    assert len(sections.section_data(io.BytesIO(shorter), text)) == 100


def test_build_id_note_parser_on_odd_bytes():
    note = (4).to_bytes(4, "little") + (3).to_bytes(4, "little") + (3).to_bytes(4, "little")
    assert sections.gnu_build_id(note + b"GNU\0" + b"\xab\xcd\xef\0") == "abcdef"
    assert sections.gnu_build_id(note + b"GNU\0" + b"\xab") is None  # desc cut short
    other = (4).to_bytes(4, "little") + (1).to_bytes(4, "little") + (1).to_bytes(4, "little")
    assert sections.gnu_build_id(other + b"GNU\0" + b"\x01\0\0\0") is None
    assert sections.gnu_build_id(b"") is None
