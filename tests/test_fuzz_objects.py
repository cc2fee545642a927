"""Hostile input (issue 5): truncated, corrupted and mutated binaries and debug files never
make symbolization or CFI lookup raise or hang; their frames degrade instead.

Seeds are real files: test targets built here (with DWARF, and split into a stripped binary
and its debug file) and the system's libc. Each example writes a mutated copy to disk and runs
the production path on it (ObjectStore -> CfiTable / DwarfIndex / SymbolTable -> Symbolizer
in FULL_WITH_INLINE, the mode that reads the most) for pcs taken from the unmutated file.

The normal run checks a fixed-seed sample (STACKDUMP_FUZZ_EXAMPLES, default 150 per seed);
the fuzz job (`.ci/fuzz`) runs 10,000 fresh random cases.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import pytest
from conftest import VARIANTS
from helpers import compile_target
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackdump.arch import X86_64
from stackdump.cache import DiskCache
from stackdump.elf.image import ElfObject
from stackdump.elf.modules import HostFiles
from stackdump.elf.store import ObjectStore
from stackdump.runtimes import own_code
from stackdump.symbols.symbolizer import Symbolizer
from stackdump.types import Frame, LocationMode, MemoryMap
from stackdump.unwind.cfi_source import CfiSource
from stackdump.unwind.memory import StackMemory
from stackdump.unwind.unwinder import walk_hybrid

EXAMPLES = int(os.environ.get("STACKDUMP_FUZZ_EXAMPLES", "150"))
BASE = 0x555555554000
PER_EXAMPLE_S = 20  # a hang, not slowness: every loop must be bounded by the data's size
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    pcs: Tuple[int, ...]  # absolute pcs once mapped at BASE
    debug_for: bytes = b""  # when set, `data` is the debug file of this stripped binary


def _pcs_of(path: str, limit: int = 40) -> Tuple[int, ...]:
    elf = ElfObject.open(path)
    try:
        table = elf.symbols((".symtab", ".dynsym"))
        starts = sorted(set(table.to_fields()["starts"]))
    finally:
        elf.close()
    step = max(1, len(starts) // limit)
    picked = starts[::step][:limit]
    return tuple(BASE + s + delta for s in picked if s for delta in (0, 5))


@pytest.fixture(scope="module")
def seeds(build_dir) -> List[Seed]:
    threads = compile_target("threads.c", build_dir, "threads-O2", VARIANTS["O2"])
    cxx = compile_target(
        "cxx_threads.cpp", build_dir, "cxx-fuzz", ["-O2", "-g", "-fno-omit-frame-pointer"]
    )
    debug = build_dir / "threads-O2.debug"
    stripped = build_dir / "threads-O2.stripped"
    if not debug.exists():
        subprocess.run(["objcopy", "--only-keep-debug", str(threads), str(debug)], check=True)
        subprocess.run(["objcopy", "--strip-all", str(threads), str(stripped)], check=True)
    out = [
        Seed("threads", threads.read_bytes(), _pcs_of(str(threads))),
        Seed("cxx", cxx.read_bytes(), _pcs_of(str(cxx))),
        Seed("debugfile", debug.read_bytes(), _pcs_of(str(threads)), stripped.read_bytes()),
    ]
    if os.path.exists(LIBC):
        with open(LIBC, "rb") as f:
            out.append(Seed("libc", f.read(), _pcs_of(LIBC, 20)))
    return out


@st.composite
def mutations(draw, size: int):
    """A list of edits: flip bytes, overwrite a run, or truncate. Most land in the ELF and
    section headers or the first pages, where a single byte changes the most."""
    edits = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["byte", "run", "truncate", "header"]))
        if kind == "truncate":
            edits.append(("truncate", draw(st.integers(0, size)), b""))
        elif kind == "header":
            at = draw(st.integers(0, min(size, 64) - 1))
            edits.append(("set", at, draw(st.binary(min_size=1, max_size=4))))
        elif kind == "byte":
            edits.append(
                ("set", draw(st.integers(0, size - 1)), draw(st.binary(min_size=1, max_size=1)))
            )
        else:
            at = draw(st.integers(0, size - 1))
            fill = draw(st.sampled_from([b"\x00", b"\xff", b"\x7f", b"\x41"]))
            edits.append(("set", at, fill * draw(st.integers(1, 256))))
    return edits


def _apply(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, at, payload in edits:
        if kind == "truncate":
            del buf[at:]
        elif at < len(buf):
            buf[at : at + len(payload)] = payload[: len(buf) - at]
    return bytes(buf)


class _Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Hang(f"no answer in {PER_EXAMPLE_S} s")


def _exercise(tmp: Path, seed: Seed, mutated: bytes) -> None:
    binary = tmp / "object"
    debug_dirs: Tuple[str, ...] = ()
    if seed.debug_for:
        binary.write_bytes(seed.debug_for)
        # The stripped binary names its debug file by .gnu_debuglink; the mutated debug file
        # is put where that lookup finds it.
        (tmp / "debugdir").mkdir(exist_ok=True)
        (tmp / "debugdir" / "threads-O2.debug").write_bytes(mutated)
        debug_dirs = (str(tmp / "debugdir"),)
    else:
        binary.write_bytes(mutated)
    size = max(len(seed.data), len(seed.debug_for), 1)
    mapping = MemoryMap(BASE, BASE + size + 0x1000, "r-xp", 0, "00:00", 1, str(binary))
    with ObjectStore(HostFiles(), (mapping,), None, debug_dirs, DiskCache(None)) as objects:
        symbolizer = Symbolizer(objects, LocationMode.FULL_WITH_INLINE, None, own_code)
        cfi = CfiSource(objects, own_code)
        for pc in seed.pcs:
            cfi.row(pc)
            cfi.function_start(pc)
            cfi.code(pc, 16)
            symbolizer.symbolize(Frame(pc=pc, activation=True))
            frame = symbolizer.symbolize(Frame(pc=pc + 1))
            assert frame.pc == pc + 1
        # Unwind a made-up stack through the mutated CFI: garbage in, a status out.
        words = b"".join((pc + 3).to_bytes(8, "little") for pc in seed.pcs[:16])
        memory = StackMemory(0x7FFF0000, words, 0x7FFF0000, 0x7FFF0000 + len(words))
        regs = {16: seed.pcs[0], 7: 0x7FFF0000, 6: 0x7FFF0000}
        walk_hybrid(regs, memory, cfi.row, 64, cfi, arch=X86_64)


@pytest.mark.parametrize("seed_name", ["threads", "cxx", "debugfile", "libc"])
def test_mutated_objects_degrade_without_raising(seeds, seed_name, tmp_path_factory):
    chosen = [s for s in seeds if s.name == seed_name]
    if not chosen:
        pytest.skip(f"{LIBC} not present")
    seed = chosen[0]
    examples = EXAMPLES if seed_name != "libc" else max(10, EXAMPLES // 5)

    @settings(
        max_examples=examples,
        derandomize=os.environ.get("STACKDUMP_FUZZ_RANDOM") is None,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(edits=mutations(len(seed.data)))
    def run(edits):
        tmp = tmp_path_factory.mktemp("fuzz")
        old = signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(PER_EXAMPLE_S)
        try:
            _exercise(tmp, seed, _apply(seed.data, edits))
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
            shutil.rmtree(tmp, ignore_errors=True)

    run()
