"""Issue 16: naming raw addresses (`--symbolize`). The referees: a dump of the same process
(the same pcs, printed with -a, must get the same names and lines) and binutils' addr2line
on the binary itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import ON_CI
from helpers import Target, parse_report, run_stackdump

DISCRIMINATOR = re.compile(r" [(]discriminator \d+[)]$")
LINE = re.compile(
    r"0x([0-9a-f]{16}) : (\S+?)(?:\+0x([0-9a-f]+)(?:/0x([0-9a-f]+))?)? \[(.+?)\+0x([0-9a-f]+)\]"
    r"(?: at (.+):(\d+))?"
)


def _symbolize(*args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "stackdump", *args], input=stdin, capture_output=True, text=True
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


def test_symbolizing_a_dumps_pcs_gives_the_dumps_names_and_lines(live, threads_bin):
    with Target(threads_bin("O2"), {"read": 1, "sleep": 1, "cond": 1}).wait_ready() as target:
        pid = str(target.pid)
        dump = run_stackdump("-p", pid, "-a", "--mode", "fast")
        assert dump.returncode == 0, dump.stderr
        report = parse_report(dump.stdout)
        for section in report.threads:
            pcs = [f.split()[0] for f in section.frames]
            out = _symbolize(
                "-p",
                pid,
                "--symbolize",
                "-",
                "--backtrace",
                "--mode",
                "fast",
                stdin="\n".join(f"frame {pc}" for pc in pcs),
            )
            lines = out.splitlines()
            assert len(lines) == len(pcs)
            for frame, line in zip(section.frames, lines):
                m = LINE.fullmatch(line)
                assert m, line
                pc, function, _, _, _, _, file, number = m.groups()
                assert frame.split()[0] == f"0x{pc}"
                # the dump's line: `0x... FUNCTION at FILE:LINE`
                assert frame.split()[1] == function, (frame, line)
                if file is None:
                    assert frame.endswith(f" in {m.group(5)}"), (frame, line)
                else:
                    assert frame.endswith(f" at {file}:{number}"), (frame, line)


def test_addr2line_agrees_on_a_binary_with_debug_info(live, threads_bin):
    if shutil.which("addr2line") is None:
        if ON_CI:
            pytest.fail("addr2line (binutils) is the referee")
        pytest.skip("addr2line (binutils) is the referee")
    binary = str(threads_bin("O2"))
    with Target(threads_bin("O2"), {"read": 1, "sleep": 1, "recurse": 1}).wait_ready() as target:
        report = parse_report(run_stackdump("-p", str(target.pid), "--mode", "disabled").stdout)
    # Probe the start, middle and end of every function of the binary the dump named (nm
    # gives where each is), as link-time addresses of the binary itself.
    named = {f.split()[0] for s in report.threads for f in s.frames if f.endswith(f" in {binary}")}
    nm = subprocess.run(["nm", "-S", binary], capture_output=True, text=True, check=True).stdout
    probes = []
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] in named and int(parts[1], 16) > 8:
            start, size = int(parts[0], 16), int(parts[1], 16)
            probes.extend((start + 1, start + size // 2, start + size - 1))
    assert len(probes) >= 9, named
    text = ",".join(f"0x{a:x}" for a in probes)
    ours = _symbolize("--symbolize", text, "--object", binary, "--mode", "full_with_inline")
    chains = []
    for line in ours.splitlines():
        if line.startswith("    inlined: "):
            chains[-1].insert(-1, line[len("    inlined: ") :])
        else:
            m = LINE.fullmatch(line)
            assert m, line
            function, file, number = m.group(2), m.group(7), m.group(8)
            chains.append([f"{function} at {file}:{number}" if file else function])
    expected = []
    for a in probes:
        out = subprocess.run(
            ["addr2line", "-f", "-i", "-e", binary, f"0x{a:x}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        # FUNCTION / FILE:LINE pairs, innermost first (with -i)
        pairs = []
        for k in range(0, len(out), 2):
            where = DISCRIMINATOR.sub("", out[k + 1])
            pairs.append(out[k] if where.startswith("??:") else f"{out[k]} at {where}")
        expected.append(pairs)
    for chain, pairs, a in zip(chains, expected, probes):
        # chain: the inlined functions innermost first, the physical function last
        ordered = chain
        assert [c.split(" at ")[0] for c in ordered] == [p.split(" at ")[0] for p in pairs], (
            hex(a),
            ordered,
            pairs,
        )
        assert ordered[0] == pairs[0], (hex(a), ordered, pairs)


def test_symbolize_needs_a_place_to_look():
    done = subprocess.run(
        [sys.executable, "-m", "stackdump", "--symbolize", "0x1234"], capture_output=True, text=True
    )
    assert (
        done.returncode == 2 and "--symbolize needs either -p PID or --object FILE" in done.stderr
    )
    done = subprocess.run([sys.executable, "-m", "stackdump"], capture_output=True, text=True)
    assert done.returncode == 2 and "Missing option '-p' / '--pid'." in done.stderr
