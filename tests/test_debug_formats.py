"""Every real way debug info ships: compressed sections (zlib, zstd), split DWARF, dwz's
supplementary files, and debuginfod (Debian's own server, run here on 127.0.0.1)."""

from __future__ import annotations

import difflib
import http.server
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ON_CI, need_tool
from helpers import (
    TARGETS,
    Target,
    compile_target,
    eu_stack,
    link_two_units,
    locations,
    parse_report,
    run_stackdump,
)

pytestmark = pytest.mark.usefixtures("live")


def _frames(target: Target, mode: str, *extra: str, env=None):
    out = run_stackdump("-p", str(target.pid), "--mode", mode, "--no-cache", *extra, env=env)
    assert out.returncode == 0, out.stderr
    report = parse_report(out.stdout)
    return {role: report.thread(target.tid(role)).frames for role in ("read", "cond")}


def _build_id(binary: Path) -> str:
    out = subprocess.run(["readelf", "-n", str(binary)], capture_output=True, text=True).stdout
    return out.split("Build ID: ", 1)[1].split()[0]


# -- compressed sections and split DWARF ------------------------------------------------------


@pytest.fixture(scope="module")
def variants(build_dir):
    """threads.c built alike five times, its debug info shipped five ways."""
    base = ["-O2", "-g", "-gdwarf-5"]
    built = {
        "plain": compile_target("threads.c", build_dir, "dbg-plain", base),
        "zlib": compile_target("threads.c", build_dir, "dbg-zlib", [*base, "-gz=zlib"]),
        "split": compile_target("threads.c", build_dir, "dbg-split", [*base, "-gsplit-dwarf"]),
    }
    zstd = build_dir / "dbg-zstd"
    if not zstd.exists():
        subprocess.run(
            ["objcopy", "--compress-debug-sections=zstd", str(built["plain"]), str(zstd)],
            check=True,
        )
    built["zstd"] = zstd
    return built


def test_compressed_and_split_debug_info_give_identical_locations(variants):
    sections = subprocess.run(
        ["readelf", "-SW", str(variants["zstd"])], capture_output=True, text=True
    ).stdout
    assert " .debug_info " in sections and "C (compressed)" in sections
    seen = {}
    for name, binary in variants.items():
        with Target(binary, {"read": 1, "cond": 1}).wait_ready() as target:
            seen[name] = {
                mode: _frames(target, mode) for mode in ("fast", "full", "full_with_inline")
            }
    plain = seen["plain"]
    assert any(" at " in f and "threads.c:" in f for f in plain["fast"]["read"]), plain
    for name, found in seen.items():
        assert found == plain, name


# -- dwz ------------------------------------------------------------------------------------


def _agrees_with_eu_stack(binary: Path) -> list:
    """Every thread's FULL_WITH_INLINE frames (function, file, line) equal eu-stack -s -i's
    on the same process; the frames of every thread."""
    roles = {"worker": 1, "waiter": 1, "thrower": 1, "spin": 1}  # (it starts all four)
    with Target(binary, roles).wait_ready() as target:
        out = run_stackdump("-p", str(target.pid), "--mode", "full_with_inline", "--no-cache")
        assert out.returncode == 0, out.stderr
        theirs = eu_stack(target.pid)
        spin = target.tid("spin")
    report = parse_report(out.stdout)
    compared = 0
    for section in report.threads:
        if section.tid == spin:
            continue  # it moved between the two dumps
        ours = [(f, file, line) for f, file, line, _ in locations(section.frames)]
        ours = [(None if f.startswith("0x") else f, file, line) for f, file, line in ours]
        expected = theirs[section.tid]
        if expected and expected[-1][0] == "_start":
            ours, expected = ours[:-1], expected[:-1]
        assert ours == expected, f"thread {section.tid}:\n{ours}\n{expected}"
        compared += len(ours)
    assert compared > 20
    return [f for s in report.threads for f in s.frames]


def test_dwz_supplementary_debug_info_matches_eu_stack(build_dir):
    need_tool("dwz", "dwz")
    need_tool("eu-stack", "elfutils")
    one = compile_target("cxx_threads.cpp", build_dir, "dwz-one", ["-O2", "-g"])
    two = compile_target("cxx_threads.cpp", build_dir, "dwz-two", ["-O2", "-g", "-DDWZ_TWIN"])
    common = build_dir / "dwz-common.debug"
    if not common.exists():
        subprocess.run(
            ["dwz", "-m", str(common), "-M", str(common), str(one), str(two)],
            check=True,
            capture_output=True,
        )
    sections = subprocess.run(["readelf", "-SW", str(one)], capture_output=True, text=True).stdout
    assert ".gnu_debugaltlink" in sections
    frames = _agrees_with_eu_stack(one)
    # Names that live only in the supplementary file (dwz moved the shared DIEs there).
    assert any("storage::engine::" in f for f in frames)


def test_split_dwarf_gives_the_inline_frames_of_a_plain_build(build_dir):
    """-gsplit-dwarf: the executable keeps skeleton units and line tables, the DIEs (names,
    inline chains) are in the .dwo file each skeleton names, or in a .dwp package. The same
    program built without it (whose frames equal eu-stack's, above and in test_live_symbols)
    is the oracle: eu-stack 0.188 shows no inlined frames from a .dwo."""
    split = compile_target(
        "cxx_threads.cpp", build_dir, "split-cxx", ["-O2", "-g", "-gsplit-dwarf"]
    )
    assert list(build_dir.glob("split-cxx*.dwo")), "gcc wrote no .dwo file"
    plain = compile_target("cxx_threads.cpp", build_dir, "plain-cxx", ["-O2", "-g"])
    binaries = [plain, split]
    if shutil.which("llvm-dwp-14") or ON_CI:
        # The same units packed into one .dwp (Debian's own dwp crashes on DWARF 5 units),
        # with no .dwo left beside it: read from the package alone.
        packaged_dir = build_dir / "dwp"
        packaged_dir.mkdir(exist_ok=True)
        packaged = packaged_dir / "split-cxx"
        if not packaged.exists():
            shutil.copy(split, packaged)
            subprocess.run(
                ["llvm-dwp-14", "-e", str(split), "-o", f"{packaged}.dwp"],
                check=True,
                cwd=build_dir,
            )
        assert not list(packaged_dir.glob("*.dwo"))
        binaries.append(packaged)
    roles = {"worker": 1, "waiter": 1, "thrower": 1}
    seen = []
    for binary in binaries:
        with Target(binary, {**roles, "spin": 1}).wait_ready() as target:
            out = run_stackdump("-p", str(target.pid), "--mode", "full_with_inline", "--no-cache")
            assert out.returncode == 0, out.stderr
            report = parse_report(out.stdout)
            seen.append(
                {
                    # An unnamed frame prints its address, which ASLR moves between runs.
                    role: [re.sub(r"^0x[0-9a-f]+ in ", "0x... in ", f) for f in frames]
                    for role, frames in (
                        (role, report.thread(target.tid(role)).frames) for role in roles
                    )
                }
            )
    for found in seen[1:]:
        for role in roles:
            diff = "\n".join(difflib.unified_diff(seen[0][role], found[role], lineterm=""))
            assert found[role] == seen[0][role], f"{role}:\n{diff}"
    inlined = [f for frames in seen[1].values() for f in frames if f.endswith("(inlined)")]
    assert len(inlined) >= 4, seen[1]


# -- debuginfod ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_served(url: str, server: subprocess.Popen) -> None:
    """Until the server answers for the file (it scans its directory after it starts)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, "debuginfod exited"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # polling a condition with a deadline, not waiting and hoping
    pytest.fail(f"debuginfod never served {url}")


@pytest.fixture
def stripped(build_dir, tmp_path):
    """threads.c with its debug info moved out: (stripped binary, directory of the debug
    file, build-id)."""
    full = compile_target("threads.c", build_dir, "dbgd-full", ["-O1", "-g"])
    served = tmp_path / "served"
    served.mkdir()
    debug = served / "threads.debug"
    binary = tmp_path / "threads-stripped"
    subprocess.run(["objcopy", "--only-keep-debug", str(full), str(debug)], check=True)
    subprocess.run(["objcopy", "--strip-debug", str(full), str(binary)], check=True)
    return binary, served, _build_id(binary)


def test_debuginfod_serves_the_debug_file_and_its_cache_is_shared(stripped, tmp_path):
    need_tool("debuginfod", "debuginfod")
    binary, served, build_id = stripped
    port = _free_port()
    cache = tmp_path / "client-cache"
    server = subprocess.Popen(
        ["debuginfod", "-F", str(served), "-p", str(port), "-d", str(tmp_path / "db.sqlite")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        **os.environ,
        "DEBUGINFOD_URLS": f"http://127.0.0.1:{port}",
        "DEBUGINFOD_CACHE_PATH": str(cache),
    }
    try:
        _wait_served(f"http://127.0.0.1:{port}/buildid/{build_id}/debuginfo", server)
        with Target(binary, {"read": 1, "cond": 1}).wait_ready() as target:
            without = _frames(target, "fast", "--no-debuginfod", env=env)
            assert not any("threads.c:" in f for f in without["read"]), without
            fetched = _frames(target, "fast", env=env)
            assert any("threads.c:" in f for f in fetched["read"]), fetched
            assert (cache / build_id / "debuginfo").stat().st_size > 0
            server.terminate()
            server.wait(timeout=30)
            # The server is gone: the second dump reads the cache.
            assert _frames(target, "fast", env=env) == fetched
            # libdebuginfod reads the same cache: eu-stack gets the lines from our download.
            if shutil.which("eu-stack"):
                theirs = eu_stack(target.pid, env)[target.tid("read")]
                assert any(file and file.endswith("threads.c") for _, file, _ in theirs)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


class _Rogue(http.server.BaseHTTPRequestHandler):
    """Answers every build-id with the same file: the wrong one for any other build-id."""

    payload = b""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


def test_a_debug_file_with_the_wrong_build_id_is_rejected(stripped, tmp_path, build_dir):
    binary, _, build_id = stripped
    other = compile_target("threads.c", build_dir, "dbgd-other", ["-O0", "-g"])
    assert _build_id(other) != build_id
    _Rogue.payload = other.read_bytes()
    rogue = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Rogue)
    thread = threading.Thread(target=rogue.serve_forever, daemon=True)
    thread.start()
    cache = tmp_path / "client-cache"
    env = {
        **os.environ,
        "DEBUGINFOD_URLS": f"http://127.0.0.1:{rogue.server_address[1]}",
        "DEBUGINFOD_CACHE_PATH": str(cache),
    }
    try:
        with Target(binary, {"read": 1, "cond": 1}).wait_ready() as target:
            found = _frames(target, "fast", env=env)
    finally:
        rogue.shutdown()
        rogue.server_close()
    assert not any("threads.c:" in f for f in found["read"]), found
    assert not (cache / build_id / "debuginfo").exists()


# -- .gdb_index ---------------------------------------------------------------------------


def test_full_mode_finds_a_cu_through_gdb_index_without_walking_cus(build_dir, tmp_path):
    """FULL looks up a pc aranges does not cover in `.gdb_index`'s address table when the
    binary has one (gdb-add-index), instead of reading every CU's ranges."""
    need_tool("gdb-add-index", "gdb")
    from stackdump.elf.image import ElfObject
    from stackdump.symbols.dwarf import DwarfIndex

    lib_object = tmp_path / "two_units_lib.o"
    subprocess.run(
        ["gcc", "-O1", "-g", "-c", str(TARGETS / "two_units_lib.c"), "-o", str(lib_object)],
        check=True,
    )
    subprocess.run(["objcopy", "--remove-section=.debug_aranges", str(lib_object)], check=True)
    plain = link_two_units(lib_object, tmp_path / "two_units")
    indexed = tmp_path / "two_units_indexed"
    shutil.copy(plain, indexed)
    subprocess.run(["gdb-add-index", str(indexed)], check=True, capture_output=True)

    found = {}
    for binary in (plain, indexed):
        elf = ElfObject.open(str(binary))
        try:
            pc = elf.symbol_values({"lib_blocking_read"})["lib_blocking_read"]
            dwarf = DwarfIndex(elf)
            assert dwarf.cu_offset(pc, False) is None  # aranges does not know that CU
            cu = dwarf.cu_offset(pc, True)
            found[binary.name] = (cu, dwarf.location(cu, pc), dwarf.cus_walked)
        finally:
            elf.close()
    assert found["two_units"][:2] == found["two_units_indexed"][:2]
    assert found["two_units"][1][0] == f"{TARGETS}/two_units_lib.c"
    # Without the index, FULL reads the ranges of the one unit .debug_aranges does not list.
    assert found["two_units"][2] == 1 and found["two_units_indexed"][2] == 0, found
    with Target(indexed, {"read": 1}).wait_ready() as target:
        out = run_stackdump("-p", str(target.pid), "--mode", "full", "--no-cache")
        assert out.returncode == 0, out.stderr
        frames = parse_report(out.stdout).thread(target.tid("read")).frames
    assert frames[1] == f"lib_blocking_read at {TARGETS}/two_units_lib.c:10", frames


def test_a_dwo_replaced_by_a_fifo_is_skipped_with_a_warning(tmp_path):
    """Issue 27: a .dwo is a file stackdump finds; a FIFO in its place must not hang a
    FULL_WITH_INLINE dump: the dump finishes, one warning names it, frames keep their names
    from the symbol table."""
    # GIVEN a split-DWARF program whose every .dwo was replaced by a FIFO
    binary = tmp_path / "split"
    subprocess.run(
        ["g++", "-O2", "-g", "-gsplit-dwarf", "-pthread"]
        + [str(TARGETS / "cxx_threads.cpp"), "-o", str(binary)],
        check=True,
        cwd=tmp_path,
    )
    dwos = list(tmp_path.glob("*.dwo"))
    assert dwos, "gcc wrote no .dwo file"
    for dwo in dwos:
        dwo.unlink()
        os.mkfifo(dwo)
    # Every role cxx_threads starts: waiting for fewer lines may miss the worker's.
    roles = {"worker": 1, "waiter": 1, "thrower": 1, "spin": 1}
    with Target(binary, roles).wait_ready() as target:
        # WHEN it is dumped with inline chains
        started = time.monotonic()
        out = run_stackdump(
            "-p", str(target.pid), "--mode", "full_with_inline", "--no-cache", timeout=60
        )
        took = time.monotonic() - started
    # THEN it finishes, says which file it skipped and why, and names the frames
    assert took < 30
    assert out.returncode == 0, out.stderr
    skipped = [line for line in out.stderr.splitlines() if "warning: skipped" in line]
    assert skipped and all("not a regular file (a FIFO)" in line for line in skipped)
    assert len(skipped) == len(set(skipped))
    report = parse_report(out.stdout)
    assert any(
        "Reader<" in f and "read_one" in f for f in report.thread(target.tid("worker")).functions()
    )


def test_a_missing_or_foreign_dwz_supplement_falls_back_to_symbol_names(build_dir, tmp_path):
    """dwz moved shared DIEs and strings to a supplementary file; without it (or with another
    build's), the DIE offsets are no names: frames are named from the symbol table, and one
    warning names the file looked for (issue 28). Before, offsets printed as names
    (`6# 23111 at cxx_threads.cpp:118`)."""
    need_tool("dwz", "dwz")
    one, two, twin, other = (tmp_path / n for n in ("one", "two", "twin", "other"))
    builds = ((one, []), (two, ["-DDWZ_TWIN"]), (twin, ["-DDWZ_TWIN"]), (other, ["-O1"]))
    for out, extra in builds:
        shutil.copy(compile_target("cxx_threads.cpp", build_dir, "dwz-lost" + "".join(extra),
                                   ["-O2", "-g", *extra]), out)  # fmt: skip
    common = tmp_path / "common.debug"
    subprocess.run(["dwz", "-m", str(common), "-M", str(common), str(one), str(two)],
                   check=True, capture_output=True)  # fmt: skip
    foreign = tmp_path / "foreign.debug"
    subprocess.run(["dwz", "-m", str(foreign), "-M", str(foreign), str(twin), str(other)],
                   check=True, capture_output=True)  # fmt: skip
    roles = {"worker": 1, "spin": 1, "waiter": 1, "thrower": 1}  # cxx_threads takes no args
    with Target(one, roles).wait_ready() as target:
        expected = run_stackdump("-p", str(target.pid), "--mode", "disabled", "--no-cache")
        # The program's own frames, named from its symbol table: index -> name.
        by_symbols = {
            t.tid: {i: n for i, (n, f) in enumerate(zip(t.functions(), t.frames))
                    if f.endswith(f" in {one}")}
            for t in parse_report(expected.stdout).threads
        }  # fmt: skip
        for replacement in (None, foreign):
            common.unlink(missing_ok=True)
            if replacement is not None:
                shutil.copy(replacement, common)  # the same name, another build
            out = run_stackdump("-p", str(target.pid), "--mode", "full_with_inline", "--no-cache")
            assert out.returncode == 0, out.stderr
            warnings = [line for line in out.stderr.splitlines() if "dwz supplementary" in line]
            assert len(warnings) == 1 and f'"{common}"' in warnings[0], out.stderr
            for t in parse_report(out.stdout).threads:
                physical = [f for f in t.frames if not f.endswith(" (inlined)")]
                names = [re.split(r" at | in ", f, maxsplit=1)[0] for f in physical]
                assert not any(re.fullmatch(r"\d+", n) for n in names), t.frames
                if t.tid != target.tid("spin"):  # it moves between the dumps
                    ours = {i: names[i] for i in by_symbols[t.tid]}
                    assert ours == by_symbols[t.tid], t.frames


def test_a_hung_debuginfod_costs_one_timeout_and_is_reported(build_dir, tmp_path):
    """A server that accepts connections and never answers, and two files to fetch (the
    stripped program's debug file, libstdc++'s): they are asked for at once, so the dump
    waits one DEBUGINFOD_TIMEOUT, not one per file, and stderr (not a terminal) says which
    files could not be fetched and why (issue 28)."""
    full = compile_target("cxx_threads.cpp", build_dir, "dbgd-hung", ["-O2", "-g"])
    binary = tmp_path / "hung-stripped"
    subprocess.run(["objcopy", "--strip-debug", str(full), str(binary)], check=True)
    timeout = 5
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)  # the kernel completes connections; nobody ever reads or answers
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        env = {
            **os.environ,
            "DEBUGINFOD_URLS": url,
            "DEBUGINFOD_TIMEOUT": str(timeout),
            "DEBUGINFOD_CACHE_PATH": str(tmp_path / "cache"),
        }
        roles = {"worker": 1, "spin": 1, "waiter": 1, "thrower": 1}
        with Target(binary, roles).wait_ready() as target:
            started = time.monotonic()
            out = run_stackdump("-p", str(target.pid), "--mode", "fast", "--no-cache", env=env)
            took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    summary = [line for line in out.stderr.splitlines() if "debuginfod" in line]
    assert len(summary) == 1, out.stderr
    assert f"no answer within DEBUGINFOD_TIMEOUT={timeout} s at {url}" in summary[0]
    assert "hung-stripped" in summary[0] and "libstdc++" in summary[0], summary
    # One at a time, two files cost two timeouts (10 s) and more; at once, one and the dump.
    assert took < 2 * timeout, f"{took:.1f} s"
    # A timeout is no answer: nothing is cached as missing.
    assert not list((tmp_path / "cache").glob("*/debuginfo"))
