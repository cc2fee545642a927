"""CFI rows against binutils: every row `readelf --debug-dump=frames-interp` prints for a
test binary, and a sample of libc's, must be what `CfiTable.row` computes at that address:
the CFA rule and the rule of every register readelf shows (issue 14, step 5).

readelf's notation: `rsp+16` (CFA = register + offset), `exp` (a DWARF expression), `c-16`
(saved at CFA-16), `u` (undefined), `s` (same value), `vc+N`, `rN`, `exp`/`vexp`."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import pytest
from conftest import ON_CI, need_tool
from helpers import compile_target

from stackdump.arch.x86_64 import DWARF_REGISTER_NAMES, RIP
from stackdump.elf.image import ElfObject
from stackdump.unwind.cfi import EXPRESSION, OFFSET, REGISTER, SAME, UNDEFINED, CfiTable

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
NUMBERS = {name: i for i, name in enumerate(DWARF_REGISTER_NAMES)} | {"ra": RIP}
FDE_LINE = re.compile(r"^\S+ \S+ \S+ FDE cie=\S+ pc=([0-9a-f]+)\.\.([0-9a-f]+)")


@dataclass(frozen=True)
class Row:
    loc: int
    cfa: str
    rules: Dict[int, str]


def readelf_rows(path: str) -> List[Row]:
    if shutil.which("readelf") is None:
        if ON_CI:
            pytest.fail("readelf (binutils) is missing under CI=true")
        pytest.skip("readelf is not installed")
    text = subprocess.run(
        ["readelf", "--debug-dump=frames-interp", path], capture_output=True, text=True
    ).stdout
    rows: List[Row] = []
    columns: Optional[List[str]] = None
    in_fde = False
    for line in text.splitlines():
        if FDE_LINE.match(line):
            in_fde, columns = True, None
        elif " CIE " in line:
            in_fde, columns = False, None
        elif in_fde and line.strip().startswith("LOC"):
            columns = line.split()[2:]  # after LOC and CFA
        elif in_fde and columns and re.match(r"^[0-9a-f]{16} ", line):
            fields = line.split()
            rules = {NUMBERS[name]: value for name, value in zip(columns, fields[2:])}
            rows.append(Row(int(fields[0], 16), fields[1], rules))
    return rows


def expected_cfa(text: str) -> Optional[Tuple[str, object]]:
    m = re.fullmatch(r"(\w+)([+-]\d+)", text)
    if m:
        return ("reg", (NUMBERS[m.group(1)], int(m.group(2))))
    return None  # exp: compared by kind only


def rule_matches(ours: Optional[Tuple[str, object]], theirs: str) -> bool:
    if theirs == "u":
        return ours is None or ours[0] == UNDEFINED
    if theirs == "s":
        return ours is None or ours[0] == SAME
    m = re.fullmatch(r"c([+-]\d+)", theirs)
    if m:
        return ours == (OFFSET, int(m.group(1)))
    m = re.fullmatch(r"r(\d+)", theirs)
    if m:
        return ours == (REGISTER, int(m.group(1)))
    if theirs == "exp":
        return ours is not None and ours[0] == EXPRESSION
    return True  # vexp, v+N: not in readelf's table often enough to matter here


def compare(path: str, rows: List[Row]) -> int:
    table = CfiTable(ElfObject.open(path), None, None, None)
    checked = 0
    for row in rows:
        ours = table.row(row.loc)
        assert ours is not None, f"{path}: no row at 0x{row.loc:x}"
        cfa = expected_cfa(row.cfa)
        if cfa is not None:
            assert ours.cfa == cfa, (hex(row.loc), ours.cfa, row.cfa)
        else:
            assert ours.cfa[0] == "expr", (hex(row.loc), ours.cfa, row.cfa)
        rules = dict(ours.rules)
        for reg, theirs in row.rules.items():
            if reg == ours.ra_column and theirs == "u":
                continue  # the outermost frame: no return address, however it is said
            assert rule_matches(rules.get(reg), theirs), (hex(row.loc), reg, rules, theirs)
        checked += 1
    return checked


def test_every_row_of_a_test_binary(build_dir):
    binary = compile_target("threads.c", build_dir, "threads-cfi", ["-O2", "-g"])
    rows = readelf_rows(str(binary))
    assert len(rows) > 100
    assert compare(str(binary), rows) == len(rows)


def test_a_sample_of_libc_rows():
    rows = readelf_rows(LIBC)
    assert len(rows) > 10_000
    sample = random.Random(14).sample(rows, 1500)
    assert compare(LIBC, sample) == len(sample)


def test_a_debug_frame_index_is_built_once_and_then_read_from_the_cache(tmp_path):
    """A Go binary has no .eh_frame_hdr: its CFI is a (zlib-compressed) .debug_frame, whose
    index of every FDE is built once per binary and kept in the disk cache; a second table
    over the same file reads it back and gives the same rows. (Go code itself is unwound by
    Go's pcsp table, the next test, so a dump of Go code builds no index at all.)"""
    from stackdump.cache import DiskCache

    go = need_tool("go", "golang-go")
    source = tmp_path / "main.go"
    source.write_text('package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hi") }\n')
    binary = tmp_path / "hello"
    env = {
        **os.environ,
        "GOCACHE": str(tmp_path / "gocache"),
        "GOPATH": str(tmp_path / "gopath"),
        "GO111MODULE": "off",
    }
    subprocess.run([go, "build", "-o", str(binary), str(source)], check=True, env=env)
    sections = subprocess.run(["readelf", "-SW", str(binary)], capture_output=True, text=True)
    assert ".debug_frame" in sections.stdout and ".eh_frame_hdr" not in sections.stdout
    symbols = subprocess.run(["nm", str(binary)], capture_output=True, text=True).stdout
    starts = [int(line.split()[0], 16) for line in symbols.splitlines() if " T main.main" in line]
    starts += [
        int(line.split()[0], 16) for line in symbols.splitlines() if " T fmt.Fprintln" in line
    ]
    assert len(starts) == 2, starts
    cache = DiskCache(str(tmp_path / "cache"))
    rows = []
    for _ in range(2):
        elf = ElfObject.open(str(binary))
        try:
            table = CfiTable(elf, None, cache, None)
            rows.append([table.fde_row(pc + 8) for pc in starts])
            rows.append(table.indexes_built)
        finally:
            elf.close()
    first, built_first, second, built_second = rows
    assert all(row is not None for row in first), first
    assert (built_first, built_second) == (1, 0)
    assert second == first


def test_go_code_is_unwound_by_its_pcsp_table_as_its_debug_frame_says(tmp_path):
    """Every Go function's row from `.gopclntab`'s pcsp table (what `-s -w` binaries keep)
    equals the row its `.debug_frame` FDE gives (CFA and return address), at 2,000 pcs,
    but in the functions Go's own tracebacks end a stack at (`runtime.goexit`...), whose
    return address is undefined: the walk ends there. Rows for Go code build no FDE index."""
    from stackdump.arch import X86_64
    from stackdump.elf.image import ElfObject
    from stackdump.runtimes.go import _STACK_TOPS, GoCode
    from stackdump.runtimes.go.pclntab import go_table
    from stackdump.unwind.cfi import UNDEFINED, CfiTable

    go = need_tool("go", "golang-go")
    binary = tmp_path / "hello"
    source = tmp_path / "main.go"
    source.write_text('package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hi") }\n')
    env = {**os.environ, "GOCACHE": str(tmp_path / "gocache"), "GO111MODULE": "off"}
    subprocess.run([go, "build", "-o", str(binary), str(source)], check=True, env=env)
    symbols = subprocess.run(["nm", "-nS", str(binary)], capture_output=True, text=True).stdout
    functions = [
        (int(f[0], 16), int(f[1], 16))
        for f in (line.split() for line in symbols.splitlines())
        if len(f) == 4 and f[2] in "Tt" and int(f[1], 16) > 1
    ]
    goexit = next(
        int(f[0], 16)
        for f in (line.split() for line in symbols.splitlines())
        if len(f) == 4 and f[3] in ("runtime.goexit.abi0", "runtime.goexit")
    )
    rng = random.Random(20)
    pcs = [start + rng.randrange(size) for start, size in rng.choices(functions, k=2000)]
    pcs.append(goexit + 1)  # where every goroutine's stack ends
    elf = ElfObject.open(str(binary))
    try:
        go_code = GoCode(go_table(elf), X86_64)
        table = CfiTable(elf, None, None, go_code)
        ours = [table.row(pc) for pc in pcs]
        assert table.indexes_built == 0
        theirs = [table.fde_row(pc) for pc in pcs]
        names = [go_table(elf).lookup(pc) for pc in pcs]
    finally:
        elf.close()
    compared = tops = 0
    for pc, mine, fde, name in zip(pcs, ours, theirs, names):
        if name is not None and name[0] in _STACK_TOPS:
            # Go's own tracebacks end the stack here: the row says so (the FDE does not).
            assert dict(mine.rules)[16] == (UNDEFINED, None), (hex(pc), name[0], mine)
            assert fde is None or mine.cfa == fde.cfa, (hex(pc), mine, fde)
            tops += 1
            continue
        if fde is None:
            continue  # assembly without an FDE
        assert mine is not None, hex(pc)
        assert mine.cfa == fde.cfa, (hex(pc), mine, fde)
        assert dict(mine.rules)[16] == dict(fde.rules)[16], (hex(pc), mine, fde)
        compared += 1
    assert compared > 1900 and tops >= 1
