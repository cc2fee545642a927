"""Issue 15: the views of one dump. Every test runs the real stackdump on a real target whose
threads were waited into known states, and checks the output with the consumer it is for:
a JSON Schema validator, a flame-graph renderer from the npm registry, a terminal."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import ON_CI
from helpers import Target, compile_target, parse_report, run_stackdump

from stackdump.types import CaptureMethod, FpStatus, ThreadStatus, UnwindStatus

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "json-schema.json").read_text())
CACHE = Path(os.environ.get("STACKDUMP_TEST_CACHE", Path.home() / ".cache" / "stackdump-tests"))
# A JavaScript port of flamegraph.pl that reads folded lines (later majors read only
# cpuprofiles); pinned, so the test draws with the same renderer every time.
FLAMEGRAPH_NPM = "flamegraph@0.1.0"


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def _unavailable(reason: str) -> None:
    if ON_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def mixed(live, threads_bin):
    with Target(threads_bin("O2"), {"read": 2, "cond": 2, "sleep": 3}).wait_ready() as target:
        yield target


def test_json_validates_against_the_schema_and_carries_the_text_frames(mixed):
    jsonschema = pytest.importorskip("jsonschema")
    pid = str(mixed.pid)
    document = json.loads(_ok(run_stackdump("-p", pid, "--format", "json", "--group")))
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    text = parse_report(_ok(run_stackdump("-p", pid)))
    assert document["header"]["pid"] == mixed.pid
    assert [t["tid"] for t in document["threads"]] == [t.tid for t in text.threads]
    for ours, section in zip(document["threads"], text.threads):
        names = [f["function"] or f"0x{f['pc']:016x}" for f in ours["frames"]]
        assert names == section.functions(), section.tid
        assert ours["status"] == section.status
        assert str(ours["frame_count"]) == section.keys["frames"]
        assert ours["state"] == section.keys["state"]
        for frame in ours["frames"]:
            if frame["object"] and not frame["object"].startswith("["):
                assert frame["build_id"], frame
    assert sum(g["count"] for g in document["groups"]) == len(document["threads"])
    assert document["objects"] and all(o["frames"] > 0 for o in document["objects"])


def test_schema_enums_name_every_value_the_code_has():
    props = SCHEMA["$defs"]["thread"]["properties"]
    assert {s.value for s in ThreadStatus} <= set(props["status"]["enum"])
    assert {s.value for s in FpStatus} <= set(props["fp_status"]["enum"])
    assert {s.value for s in UnwindStatus} <= set(props["unwind_status"]["enum"])
    assert {s.value for s in CaptureMethod} <= set(props["capture_method"]["enum"])


@pytest.fixture(scope="session")
def flamegraph_renderer() -> Path:
    """node_modules with the renderer, installed from the npm registry once per cache."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        _unavailable("node and npm are needed to draw the flame graph (apt install nodejs npm)")
    where = CACHE / ("npm-" + FLAMEGRAPH_NPM.replace("@", "-"))
    module = where / "node_modules" / "flamegraph"
    if not module.exists():
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(where), FLAMEGRAPH_NPM],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            _unavailable(f"npm install {FLAMEGRAPH_NPM} failed: {done.stderr[-400:]}")
    return where / "node_modules"


DRAW = """
const flamegraph = require("flamegraph");
const lines = require("fs").readFileSync(0, "utf8").split("\\n").filter(Boolean);
process.stdout.write(flamegraph.svg(lines, {}));
"""


def test_folded_output_draws_a_flame_graph(live, threads_bin, flamegraph_renderer):
    roles = {"sleep": 20, "read": 3}
    with Target(threads_bin("O2"), roles).wait_ready() as target:
        folded = _ok(run_stackdump("-p", str(target.pid), "--format", "folded"))
    lines = folded.splitlines()
    assert all(re.fullmatch(r"[^ ;][^;]*(;[^;]+)+ \d+", line) for line in lines), lines
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) == 24
    svg = subprocess.run(
        ["node", "-e", DRAW],
        input=folded,
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_PATH": str(flamegraph_renderer)},
        check=True,
    ).stdout
    titles = [t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}title")]
    # The renderer merged the 20 sleepers into one tower: their function spans 20 samples.
    assert any(t.startswith("sleep_main (20 samples") for t in titles), titles
    assert any(t.startswith("read_main (3 samples") for t in titles), titles


def test_group_merges_identical_stacks(live, threads_bin):
    with Target(threads_bin("O2"), {"sleep": 50, "read": 1, "cond": 1}).wait_ready() as target:
        out = _ok(run_stackdump("-p", str(target.pid), "--group", "--mode", "disabled"))
    section = r"^----- (\d+) threads? \((.*)\) status=(\S+).*-----\ntids: (\S+)$"
    sections = re.findall(section, out, re.M)
    assert [int(count) for count, *_ in sections] == [50, 1, 1, 1]
    sleepers = sorted(target.tids["sleep"])
    assert sections[0][3] == f"{sleepers[0]}-{sleepers[-1]}" or _expand(sections[0][3]) == sleepers
    singles = {int(tids) for *_, tids in sections[1:]}
    assert singles == {target.tid("read"), target.tid("cond"), target.tid("main")}
    assert all(status == "ok" for _, _, status, _ in sections)
    assert "sleep_main" in out.split("tids: ", 2)[1]


def _expand(ranges: str):
    tids = []
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        tids.extend(range(int(low), int(high or low) + 1))
    return tids


def test_sort_cpu_puts_the_spinner_first(live, threads_bin):
    with Target(threads_bin("O2"), {"sleep": 4, "spin": 1, "read": 2}).wait_ready() as target:
        out = _ok(run_stackdump("-p", str(target.pid), "--sort", "cpu", "--cpu-window-ms", "300"))
    report = parse_report(out)
    first = report.threads[0]
    assert first.tid == target.tid("spin")
    assert int(first.keys["recent_cpu_ms"]) >= 100
    assert all(int(t.keys["recent_cpu_ms"]) < 50 for t in report.threads[1:])


@pytest.fixture
def locks(live, build_dir):
    binary = compile_target("locks.c", build_dir, "locks", ["-O2", "-g"])
    roles = {"ab": 1, "ba": 1, "queued": 1, "holder": 1, "blocked": 1}
    with Target(binary, roles).wait_ready() as target:
        yield target


def test_lock_holders_and_one_deadlock(locks):
    report = parse_report(_ok(run_stackdump("-p", str(locks.pid), "--mode", "disabled")))
    ab, ba, queued = locks.tid("ab"), locks.tid("ba"), locks.tid("queued")
    holder, blocked = locks.tid("holder"), locks.tid("blocked")
    held_by = {t.tid: t.keys.get("held_by") for t in report.threads}
    assert held_by[ab] == str(ba) and held_by[ba] == str(ab)
    assert held_by[queued] == str(ab)  # mutex A, held by ab
    assert held_by[blocked] == str(holder)
    assert held_by[holder] is None and held_by[locks.tid("main")] is None
    mutex_a = report.thread(queued).keys["waits_for"]
    assert report.thread(ba).keys["waits_for"] == mutex_a
    assert report.thread(holder).keys["syscall"] == "clock_nanosleep"
    assert report.deadlocks == [sorted([ab, ba])]


def test_kernel_stacks_as_the_kernel_shows_them(live, threads_bin):
    with Target(threads_bin("O2"), {"read": 1, "cond": 1}).wait_ready() as target:
        reader = target.tid("read")
        try:
            ours = Path(f"/proc/{target.pid}/task/{reader}/stack").read_text()
        except PermissionError:
            _unavailable("the kernel shows kernel stacks to root only")
        expected = [line.split("] ", 1)[1] for line in ours.splitlines()]
        assert expected, "this kernel shows an empty kernel stack"
        out = _ok(run_stackdump("-p", str(target.pid), "--kernel", "--mode", "disabled"))
    section = parse_report(out).thread(reader)
    kernel = [f[: -len(" [kernel]")] for f in section.frames if f.endswith(" [kernel]")]
    assert kernel == expected
    assert section.frames[: len(kernel)] == [f"{k} [kernel]" for k in kernel]
    assert section.functions()[len(kernel) :][:1] == ["read"]


def test_unknown_frames_name_the_object_and_its_fix(live, threads_bin, build_dir):
    stripped = build_dir / "threads-stripped"
    if not stripped.exists():
        shutil.copy(threads_bin("O2"), stripped)
        subprocess.run(["strip", "--strip-all", str(stripped)], check=True)
    with Target(stripped, {"read": 1}).wait_ready() as target:
        env = {k: v for k, v in os.environ.items() if k != "DEBUGINFOD_URLS"}
        out = run_stackdump("-p", str(target.pid), "--mode", "disabled", env=env)
        report = parse_report(_ok(out))
    objects = {o["path"]: o for o in report.objects}
    ours = objects[str(stripped)]
    assert ours["symbols"] in ("none", "dynsym") and int(ours["unknown"]) > 0
    assert "--debug-dir" in ours["fix"] and "rebuild it with symbols" in ours["fix"]
    assert "DEBUGINFOD_URLS set to a debuginfod server" in ours["fix"]
    libc = next(o for path, o in objects.items() if path.endswith("/libc.so.6"))
    assert libc["unknown"] == "0" and "fix" not in libc


def test_no_unknown_frames_no_objects_section(mixed):
    out = _ok(run_stackdump("-p", str(mixed.pid), "--mode", "disabled"))
    assert "unknown_frames:" not in out and "\nobject " not in out
    assert parse_report(out).objects == []


_TIMINGS = re.compile(r"(pause_us|elapsed_ms|max_pause_us|cpu_ms|cache_hits)=\d+")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_colour_on_a_terminal_only(mixed, tmp_path):
    if shutil.which("script") is None:
        _unavailable("script(1) from bsdutils is needed to give stackdump a terminal")
    pid = str(mixed.pid)
    command = f"{sys.executable} -m stackdump -p {pid}"
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    shown = subprocess.run(
        ["script", "-qec", command, "/dev/null"], capture_output=True, text=True, env=env
    ).stdout
    assert "\x1b[" in shown
    plain_tty = _ANSI.sub("", shown).replace("\r\n", "\n")
    piped = _ok(run_stackdump("-p", pid))
    assert "\x1b" not in piped
    written = tmp_path / "report.txt"
    _ok(run_stackdump("-p", pid, "-o", str(written)))
    assert _TIMINGS.sub("", written.read_text()) == _TIMINGS.sub("", piped)
    assert _TIMINGS.sub("", plain_tty) == _TIMINGS.sub("", piped)
    no_colour = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        capture_output=True,
        text=True,
        env={**env, "NO_COLOR": "1"},
    ).stdout
    assert "\x1b[" not in no_colour


def test_shell_completion_scripts():
    for shell, marker in (("bash", "complete "), ("zsh", "compdef"), ("fish", "complete ")):
        done = subprocess.run(
            [sys.executable, "-m", "stackdump"],
            env={**os.environ, "_STACKDUMP_COMPLETE": f"{shell}_source"},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0 and marker in done.stdout, (shell, done.stderr)


def test_mutex_owner_offset_from_dwarf_matches_gdb(build_dir):
    """held_by= reads glibc's `__owner` where the DWARF of the code declares it; gdb's
    `ptype /o` of the same struct in the same binary is the referee."""
    from stackdump.elf.image import ElfObject
    from stackdump.symbols.dwarf import DwarfIndex

    if shutil.which("gdb") is None:
        _unavailable("gdb is needed as the referee")
    binary = compile_target("locks.c", build_dir, "locks", ["-O2", "-g"])
    shown = subprocess.run(
        ["gdb", "-batch", "-nx", "-ex", "ptype /o struct __pthread_mutex_s", str(binary)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected = int(re.search(r"/\*\s+(\d+)\s+\|\s+\d+ \*/\s+int __owner;", shown).group(1))
    dwarf = DwarfIndex(ElfObject.open(str(binary)))
    main = subprocess.run(["nm", str(binary)], capture_output=True, text=True, check=True).stdout
    address = int(next(line.split()[0] for line in main.splitlines() if line.endswith(" main")), 16)
    cu = dwarf.cu_offset(address, True)
    assert cu is not None
    assert dwarf.member_offset(cu, "__pthread_mutex_s", "__owner") == expected
    assert dwarf.member_offset(cu, "__pthread_mutex_s", "__no_such_member") is None
