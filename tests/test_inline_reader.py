"""Issue 31: inline chains, the CU-range index and `.debug_aranges` read by our own reader
(`symbols/dies.py`) equal pyelftools', pc by pc, on test programs and a C++ program with
deep inlining, in DWARF 4 and 5; damaged entries cost an answer, never an exception."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from helpers import compile_target

from stackdump.elf.image import ElfObject
from stackdump.symbols.dwarf import DwarfIndex

PCS_PER_BINARY = 700


def _built(build_dir: Path, source: str, dwarf: int) -> Path:
    name = f"{Path(source).stem}-inline-dwarf{dwarf}"
    return compile_target(source, build_dir, name, ["-O2", "-g", f"-gdwarf-{dwarf}"])


def _pcs(index: DwarfIndex):
    """(CU offset, address) of rows of every unit's line table, spread evenly."""
    info = index._dwarf()
    rows = []
    for cu in info.iter_CUs():
        program = info.line_program_for_CU(cu)
        for entry in program.get_entries() if program is not None else ():
            if entry.state is not None and not entry.state.end_sequence:
                rows.append((cu.cu_offset, entry.state.address))
    return rows[:: max(1, len(rows) // PCS_PER_BINARY)]


@pytest.mark.parametrize("dwarf", [4, 5])
@pytest.mark.parametrize("source", ["deep_inline.cpp", "threads.c", "cxx_threads.cpp"])
def test_chains_equal_pyelftools(build_dir, source, dwarf):
    binary = str(_built(build_dir, source, dwarf))
    own = DwarfIndex(ElfObject.open(binary), own_reader=True)
    theirs = DwarfIndex(ElfObject.open(binary), own_reader=False)
    pcs = _pcs(theirs)
    assert len(pcs) > 100
    ours = [own.inline_chain(cu, pc) for cu, pc in pcs]
    assert own._die_reader is not None  # the chains above were ours, not the fallback's
    assert ours == [theirs.inline_chain(cu, pc) for cu, pc in pcs]
    deepest = max(len(chain) for chain in ours)
    if source == "deep_inline.cpp":
        assert deepest >= 6, deepest  # Level<6>::step ... inlined into one another


@pytest.mark.parametrize("dwarf", [4, 5])
def test_cu_ranges_equal_pyelftools(build_dir, dwarf):
    binary = str(_built(build_dir, "deep_inline.cpp", dwarf))
    ours = DwarfIndex(ElfObject.open(binary), own_reader=True)._own_cu_ranges()
    theirs = DwarfIndex(ElfObject.open(binary), own_reader=False)._build_cu_ranges()
    assert ours and sorted(ours) == sorted(
        zip(theirs.starts.tolist(), theirs.ends.tolist(), theirs.offsets.tolist())
    )


def test_damaged_entries_cost_answers_not_exceptions(build_dir, tmp_path):
    """Bytes of .debug_info or .debug_abbrev flipped at random: every lookup still returns
    a list, and the unit-range walk returns."""
    binary = _built(build_dir, "deep_inline.cpp", 5)
    pcs = _pcs(DwarfIndex(ElfObject.open(str(binary)), own_reader=False))[::20]
    elf = ElfObject.open(str(binary))
    sections = [elf.section(".debug_info"), elf.section(".debug_abbrev")]
    rng = random.Random(31)
    for round_ in range(60):
        damaged = tmp_path / f"damaged{round_}"
        shutil.copyfile(binary, damaged)
        section = sections[round_ % 2]
        with open(damaged, "r+b") as f:
            for _ in range(rng.choice((1, 8, 64))):
                f.seek(section.offset + rng.randrange(section.size))
                f.write(bytes([rng.randrange(256)]))
        index = DwarfIndex(ElfObject.open(str(damaged)), own_reader=True)
        for cu, pc in pcs:
            assert isinstance(index.inline_chain(cu, pc), list)
        index._own_cu_ranges()


@pytest.mark.parametrize("dwarf", [4, 5])
def test_aranges_equal_pyelftools(build_dir, dwarf):
    binary = str(_built(build_dir, "deep_inline.cpp", dwarf))
    ours = DwarfIndex(ElfObject.open(binary), own_reader=True)._build_aranges()
    theirs = DwarfIndex(ElfObject.open(binary), own_reader=False)._build_aranges()
    assert len(ours.starts) > 0
    for field in ("starts", "ends", "offsets"):
        assert getattr(ours, field).tolist() == getattr(theirs, field).tolist()


def test_an_abbreviation_is_found_past_entries_it_skips_unread():
    """`dies._entry_of` skips entries in C: implicit_const values (form 0x21 and a number),
    multi-byte numbers and a value of 0x21 after another form are each stepped over whole;
    an entry that never ends (hostile bytes) leaves the careful reader to say so."""
    from stackdump.symbols import dies

    table = bytes(
        [1, 0x2E, 1, 0x03, 0x08, 0x3A, 0x21, 0x01, 0, 0]  # code 1: name string, implicit 1
        + [2, 0x34, 0, 0x90, 0x01, 0x0B, 0x02, 0x21, 0x7F, 0, 0]  # code 2: 2-byte attribute
        + [3, 0x11, 1, 0x25, 0x0E, 0, 0]  # code 3
        + [0]
    )  # fmt: skip
    assert dies._entry_of(table, 0, len(table), 3) == 21
    assert dies._entry_of(table, 0, len(table), 2) == 10
    assert dies._entry_of(table, 0, len(table), 9) == len(table) - 1  # the table's end
    hostile = bytes([5, 0x11, 1]) + bytes([0x21] * 20_000)
    assert dies._entry_of(hostile, 0, len(hostile), 7) == 0


def test_prefetching_unit_headers_changes_nothing(build_dir):
    """The unit walk asks for the headers .debug_aranges names first (madvise on the map of
    the file): the same units come out, from a map and from bytes, and offsets outside the
    section are ignored."""
    binary = str(_built(build_dir, "deep_inline.cpp", 5))
    index = DwarfIndex(ElfObject.open(binary), own_reader=True)
    reader = index._reader()
    assert reader is not None and hasattr(reader.info.buffer, "madvise")
    plain = list(reader.unit_offsets())
    known = sorted(set(index._build_aranges().offsets))
    assert known and set(known) <= set(plain)
    assert list(reader.unit_offsets([*known, -1, reader.info.size + 4096])) == plain
    from stackdump.symbols.dies import Section

    copy = Section(
        bytes(reader.info.buffer[reader.info.base :][: reader.info.size]), 0, reader.info.size
    )
    copy.prefetch(known)  # bytes: nothing to advise, no error
