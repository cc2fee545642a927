"""Broken inputs must not look like good ones (issue 28): a program whose .eh_frame or
.debug_line has bytes flipped is dumped from the same core as the intact one (`--exe` takes
the damaged copy: its build-id is intact), and every stack either equals the intact one's,
or ends with a status that says it stopped early, never `end_of_stack` cut short."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from conftest import need_tool
from helpers import Target, parse_report, run_stackdump

pytestmark = pytest.mark.usefixtures("live")

ROLES = {"read": 2, "cond": 1, "recurse": 1}


def _section(binary: Path, name: str) -> Tuple[int, int]:
    out = subprocess.run(["readelf", "-SW", str(binary)], capture_output=True, text=True).stdout
    found = re.search(rf"\s{re.escape(name)}\s+PROGBITS\s+\S+\s+(\S+)\s+(\S+)", out)
    assert found, out
    return int(found.group(1), 16), int(found.group(2), 16)


@pytest.fixture(scope="module")
def cored(threads_bin, tmp_path_factory):
    """(program, gcore's core of it running ROLES, the intact dump's threads)."""
    need_tool("gcore", "gdb")
    where = tmp_path_factory.mktemp("broken")
    program = where / "program"
    shutil.copy(threads_bin("nofp"), program)  # no frame pointers: CFI alone finds callers
    with Target(program, ROLES).wait_ready() as target:
        subprocess.run(["gcore", "-o", str(where / "core"), str(target.pid)],
                       check=True, capture_output=True, timeout=300)  # fmt: skip
        core = where / f"core.{target.pid}"
    return program, core, _dump(core, program, "disabled")


def _dump(core: Path, exe: Path, mode: str):
    out = run_stackdump("--core", str(core), "--exe", str(exe), "--mode", mode, "--no-cache", "-a")
    assert out.returncode in (0, 1), out.stderr
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
    return {t.tid: t for t in parse_report(out.stdout).threads}


def _pcs(section) -> List[int]:
    return [int(f.split()[0], 16) for f in section.frames]


def _flipped(data: bytes, at: int, size: int, rng: random.Random, flips: int) -> bytearray:
    damaged = bytearray(data)
    for _ in range(flips):
        damaged[at + rng.randrange(size)] ^= 1 << rng.randrange(8)
    return damaged


def test_a_damaged_eh_frame_never_ends_a_stack_early_as_if_it_were_whole(cored, tmp_path):
    program, core, intact = cored
    data = program.read_bytes()
    at, size = _section(program, ".eh_frame")
    statuses: Dict[str, int] = {}
    for seed in range(40):
        damaged = tmp_path / f"damaged-{seed}"
        damaged.write_bytes(_flipped(data, at, size, random.Random(seed), 8))
        damaged.chmod(0o755)
        for tid, section in _dump(core, damaged, "disabled").items():
            status = section.keys.get("unwind_status") or section.keys.get("fp_status")
            statuses[status] = statuses.get(status, 0) + 1
            ours, whole = _pcs(section), _pcs(intact[tid])
            if status in ("end_of_stack", "end_of_chain") and ours != whole:
                # Reaching the true end through a frame whose damaged CFI still makes a
                # valid chain skips that frame (nothing cheap tells); never a cut-short stack.
                assert ours[-1] == whole[-1] and set(ours) <= set(whole), (seed, tid, ours, whole)
        damaged.unlink()
    assert statuses.get("bad_cfi", 0) >= 10, statuses  # the damage is seen, and said


def test_a_damaged_debug_line_drops_what_fails_its_checks_with_a_warning(cored, tmp_path):
    """Flipped bytes in .debug_line: a row that answers from outside the unit's range, a
    file number past the file table, a table that does not decode: that file:line is left
    out (the frame prints `in OBJECT`) and a warning names the object and the unit. A line
    delta changed inside a valid opcode stays undetectable, as for any reader."""
    program, core, _ = cored
    intact = _dump(core, program, "fast")
    data = program.read_bytes()
    at, size = _section(program, ".debug_line")
    warned = 0
    for seed in range(30):
        damaged = tmp_path / f"damaged-{seed}"
        damaged.write_bytes(_flipped(data, at, size, random.Random(seed), 4))
        damaged.chmod(0o755)
        out = run_stackdump("--core", str(core), "--exe", str(damaged), "--mode", "fast",
                            "--no-cache")  # fmt: skip
        assert out.returncode in (0, 1), out.stderr
        assert "Traceback" not in out.stderr and "internal error" not in out.stderr
        warnings = [line for line in out.stderr.splitlines() if "line table" in line]
        warned += bool(warnings)
        named = [f'"{path}": the line table of the unit at' for path in (program, damaged)]
        assert all(any(n in w for n in named) for w in warnings), warnings
        for section in parse_report(out.stdout).threads:
            for frame, whole in zip(section.frames, intact[section.tid].frames):
                if " at " in frame:
                    file = frame.rsplit(" at ", 1)[1].rsplit(":", 1)[0]
                    assert file and not file.endswith("/") and "None" not in file, frame
                elif " at " in whole and warnings:
                    assert re.search(r" in \S+", frame), frame  # dropped, said on stderr
        damaged.unlink()
    assert warned >= 3  # 4 of these 30 seeds break a check (the rest change lines only)


def test_a_symbol_name_that_is_not_utf8_keeps_its_bytes_in_every_format(threads_bin, tmp_path):
    """`blocking_read` patched to `blocking\\xff\\xfeead` in the symbol table: every format
    prints `blocking\\xff\\xfeead` (the bytes, escaped), never U+FFFD (issue 28)."""
    import json
    import shutil as sh

    program = tmp_path / "program"
    data = bytearray(threads_bin("O2").read_bytes())
    at = data.rfind(b"\0blocking_read\0")  # .strtab, the last table (.debug_str is before)
    assert at > 0
    data[at + 9 : at + 11] = b"\xff\xfe"
    program.write_bytes(bytes(data))
    program.chmod(0o755)
    shown = "blocking\\xff\\xfeead"
    with Target(program, {"read": 1}).wait_ready() as target:
        pid = str(target.pid)
        for args in ([], ["--group"], ["--format", "folded"], ["--format", "json"]):
            # (--no-cache: the intact program, with the same build-id, was cached before)
            out = run_stackdump("-p", pid, "--mode", "disabled", "--no-cache", *args)
            assert out.returncode == 0, out.stderr
            assert "\ufffd" not in out.stdout
            if args[-1:] == ["json"]:
                functions = [f["function"] for t in json.loads(out.stdout)["threads"]
                             for f in t["frames"]]  # fmt: skip
                assert shown in functions, functions
            else:
                assert shown in out.stdout, out.stdout
        go = sh.which("go")
        if go is None:
            if os.environ.get("CI") == "true":
                pytest.fail("go tool pprof is needed (apt install golang-go)")
            return
        profile = tmp_path / "p.pb.gz"
        args = ["--mode", "disabled", "--no-cache", "--format", "pprof", "-o", str(profile)]
        out = run_stackdump("-p", pid, *args)
        assert out.returncode == 0, out.stderr
    home = {**os.environ, "HOME": str(tmp_path)}
    raw = subprocess.run([go, "tool", "pprof", "-raw", str(profile)], capture_output=True,
                         text=True, check=True, env=home).stdout  # fmt: skip
    assert shown in raw and "\ufffd" not in raw, raw
