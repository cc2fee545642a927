"""Source locations, inline frames, separate debug files and the cache, on live targets."""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest
from helpers import (
    TARGETS,
    Target,
    assert_untouched,
    compile_target,
    eu_stack,
    link_two_units,
    locations,
    parse_report,
    run_stackdump,
)

pytestmark = pytest.mark.usefixtures("live")

READ_CHAIN = ["read", "blocking_read", "read_main", "start_thread", "clone3"]


def dump(target: Target, *args: str):
    result = run_stackdump("-p", str(target.pid), *args)
    assert result.returncode == 0, result.stderr
    assert_untouched(target.pid)
    return parse_report(result.stdout)


def test_libc_frame_has_its_source_line_in_fast_mode(threads_bin):
    # libc6-dbg (installed by .ci/run) holds libc's DWARF under /usr/lib/debug/.build-id
    with Target(threads_bin("O2"), {"read": 1}).wait_ready() as target:
        tid = target.tid("read")
        section = dump(target, "--thread-id", str(tid), "--mode", "fast").thread(tid)
        assert re.fullmatch(
            r"read at \.\./sysdeps/unix/sysv/linux/read\.c:\d+", section.frames[0]
        ), section.frames
        assert section.frames[1].startswith("blocking_read at "), section.frames
        assert section.frames[1].endswith(f"{TARGETS}/threads.c:{_line_of('blocking_read')}")


def _line_of(function: str) -> int:
    """The line of threads.c marked `LINE:<function>`: where that function calls down."""
    lines = (TARGETS / "threads.c").read_text().splitlines()
    return next(i + 1 for i, text in enumerate(lines) if f"LINE:{function} " in text + " ")


def test_disabled_mode_has_no_locations_even_after_a_full_dump(threads_bin, isolated_cache):
    with Target(threads_bin("O2"), {"read": 1, "cond": 1}).wait_ready() as target:
        full = dump(target, "--mode", "full")
        assert any(" at " in f for t in full.threads for f in t.frames)
        assert full.stats["cache_hits"] >= 0
        # the cache now holds line tables; DISABLED must not print any of them
        disabled = dump(target, "--mode", "disabled")
        assert disabled.header["dwarf_location_info_mode"] == "disabled"
        for section in disabled.threads:
            assert not any(" at " in f for f in section.frames), section.frames
            assert all(" in /" in f for f in section.frames), section.frames


def test_second_dump_is_served_from_the_cache(threads_bin, tmp_path):
    cache_home = tmp_path / "xdg"
    env_dump = ["--mode", "fast"]
    with Target(threads_bin("O0"), {"read": 1, "sleep": 1}).wait_ready() as target:
        first = _dump_with_cache(target, cache_home, *env_dump)
        second = _dump_with_cache(target, cache_home, *env_dump)
        assert first.stats["cus_decoded"] > 0 and first.stats["cache_hits"] == 0
        assert second.stats["cus_decoded"] == 0 and second.stats["cache_hits"] > 0
        assert [t.frames for t in first.threads] == [t.frames for t in second.threads]
        no_cache = dump(target, "--no-cache", *env_dump)
        assert no_cache.stats["cache_hits"] == 0 and no_cache.stats["cus_decoded"] > 0
        assert [t.frames for t in no_cache.threads] == [t.frames for t in first.threads]


def _dump_with_cache(target: Target, cache_home: Path, *args: str):
    result = subprocess.run(
        ["env", f"XDG_CACHE_HOME={cache_home}", *_stackdump_cmd(), "-p", str(target.pid), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return parse_report(result.stdout)


def _stackdump_cmd() -> List[str]:
    import sys

    return [sys.executable, "-m", "stackdump"]


def test_corrupt_cache_entries_are_discarded(threads_bin, tmp_path):
    cache_home = tmp_path / "xdg"
    with Target(threads_bin("O0"), {"read": 1}).wait_ready() as target:
        good = _dump_with_cache(target, cache_home, "--mode", "fast")
        entries = [p for p in (cache_home / "stackdump").rglob("*") if p.is_file()]
        assert entries
        for path in entries:
            data = bytearray(path.read_bytes())
            data[-1] ^= 0xFF  # flip bits in the payload: the CRC no longer matches
            path.write_bytes(bytes(data))
        again = _dump_with_cache(target, cache_home, "--mode", "fast")
        assert again.stats["cache_hits"] == 0 and again.stats["cus_decoded"] > 0
        assert [t.frames for t in again.threads] == [t.frames for t in good.threads]


@pytest.mark.parametrize(
    "flags",
    [
        ["-O2", "-g", "-gdwarf-4"],
        ["-O2", "-g", "-gdwarf-5"],
        ["-O2", "-g", "-gz=zlib"],
    ],
    ids=["dwarf4", "dwarf5", "zlib"],
)
def test_dwarf_flavours_give_the_same_locations(build_dir, flags):
    name = "threads-" + "-".join(f.strip("-").replace("=", "") for f in flags)
    binary = compile_target("threads.c", build_dir, name, flags)
    with Target(binary, {"read": 1}).wait_ready() as target:
        tid = target.tid("read")
        section = dump(target, "--thread-id", str(tid), "--mode", "fast").thread(tid)
        where = locations(section.frames)
        assert [w[0] for w in where] == READ_CHAIN
        assert where[1][1:3] == (f"{TARGETS}/threads.c", _line_of("blocking_read")), where


def test_stripped_binary_finds_its_debuglink_file_in_debug_dir(build_dir, tmp_path):
    binary = compile_target(
        "threads.c", build_dir, "threads-O2", ["-O2", "-g", "-fno-omit-frame-pointer"]
    )
    stripped = tmp_path / "bin" / "threads-stripped"
    debug_dir = tmp_path / "debug"
    stripped.parent.mkdir()
    debug_dir.mkdir()
    debug_file = debug_dir / "threads-stripped.debug"
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(debug_file)], check=True)
    shutil.copy(binary, stripped)
    subprocess.run(["objcopy", "--strip-all", str(stripped)], check=True)
    # the link is made from the debug file's directory, as distributions do
    subprocess.run(
        ["objcopy", f"--add-gnu-debuglink={debug_file.name}", str(stripped)],
        check=True,
        cwd=debug_dir,
    )
    assert (
        b".symtab"
        not in subprocess.run(
            ["readelf", "-S", str(stripped)], capture_output=True, check=True
        ).stdout
    )
    with Target(stripped, {"read": 1}).wait_ready() as target:
        tid = target.tid("read")
        # WITHOUT the directory: the stripped binary's own frames have no names
        bare = dump(target, "--thread-id", str(tid), "--mode", "fast").thread(tid)
        assert "blocking_read" not in " ".join(bare.frames)
        assert re.search(r"0x[0-9a-f]{16} in .*threads-stripped\+0x[0-9a-f]+", bare.frames[1])
        # WITH --debug-dir: names and lines come from the debug file
        found = dump(
            target, "--thread-id", str(tid), "--mode", "fast", "--debug-dir", str(debug_dir)
        ).thread(tid)
        where = locations(found.frames)
        assert [w[0] for w in where] == READ_CHAIN
        assert where[1][2] == _line_of("blocking_read")


def test_cu_without_aranges_is_found_by_full_mode_only(build_dir):
    lib_object = build_dir / "two_units_lib.o"
    binary = build_dir / "two_units"
    if not binary.exists():
        subprocess.run(
            ["gcc", "-O1", "-g", "-c", str(TARGETS / "two_units_lib.c"), "-o", str(lib_object)],
            check=True,
        )
        subprocess.run(["objcopy", "--remove-section=.debug_aranges", str(lib_object)], check=True)
        link_two_units(lib_object, binary)
    with Target(binary, {"read": 1}).wait_ready() as target:
        tid = target.tid("read")
        fast = locations(
            dump(target, "--thread-id", str(tid), "--mode", "fast", "--no-cache").thread(tid).frames
        )
        full = locations(
            dump(target, "--thread-id", str(tid), "--mode", "full", "--no-cache").thread(tid).frames
        )
        assert fast[1][0] == full[1][0] == "lib_blocking_read"
        assert fast[1][1] is None  # aranges does not know this CU
        assert full[1][1] == f"{TARGETS}/two_units_lib.c" and full[1][2] == 10, full


# -- FULL_WITH_INLINE against eu-stack -s -i ---------------------------------------------------


def test_inline_frames_match_eu_stack(build_dir):
    if shutil.which("eu-stack") is None:
        pytest.skip("eu-stack is not installed (.ci/run installs elfutils)")
    binary = compile_target("cxx_threads.cpp", build_dir, "cxx-O2", ["-O2", "-g"])
    roles = {"worker": 1, "waiter": 1, "thrower": 1, "spin": 1}
    with Target(binary, roles).wait_ready() as target:
        report = dump(target, "--mode", "full_with_inline")
        theirs = eu_stack(target.pid)
        spin = target.tid("spin")
        compared = 0
        for section in report.threads:
            ours = [(f, file, line) for f, file, line, _ in locations(section.frames)]
            # An unknown function prints as its pc in our format, as nothing in eu-stack's.
            ours = [(None if f.startswith("0x") else f, file, line) for f, file, line in ours]
            expected = theirs[section.tid]
            if section.tid == spin:
                # the spinner moved between the dumps: compare from its caller on
                ours, expected = ours[-3:], expected[-3:]
            # eu-stack gives _start a line from whatever CU precedes it; we give none.
            if expected and expected[-1][0] == "_start":
                ours, expected = ours[:-1], expected[:-1]
            assert ours == expected, f"thread {section.tid}:\n{ours}\n{expected}"
            compared += len(ours)
        assert compared > 30
        # the spinner's inline chain: two always_inline helpers inside spin_forever
        spinner = locations(report.thread(spin).frames)
        assert [(f, inl) for f, _, _, inl in spinner[:3]] == [
            ("storage::engine::inner_spin()", True),
            ("storage::engine::middle_spin()", True),
            ("storage::engine::spin_forever()", False),
        ], spinner
        assert report.thread(spin).keys["frames"] == str(len(spinner) - 2)


def _with_minidebuginfo(binary: Path, out: Path) -> Path:
    """`binary` stripped, with its function symbols in .gnu_debugdata as Fedora ships them
    (gdb's manual, "MiniDebugInfo"): the .symtab of the functions .dynsym lacks, in an
    xz-compressed ELF file."""

    def names(*args: str) -> set:
        listed = subprocess.run(
            ["nm", *args, "--format=posix", "--defined-only", str(binary)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return {f[0] for f in (line.split() for line in listed.splitlines()) if f[1] in "Tt"}

    keep = out.with_suffix(".keep")
    keep.write_text("\n".join(sorted(names() - names("-D"))) + "\n")
    debug, mini = out.with_suffix(".debug"), out.with_suffix(".mini")
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(debug)], check=True)
    subprocess.run(
        ["objcopy", "-S", "--remove-section", ".gdb_index", "--remove-section", ".comment",
         f"--keep-symbols={keep}", str(debug), str(mini)],
        check=True,
    )  # fmt: skip
    packed = out.with_suffix(".xz")
    packed.write_bytes(lzma.compress(mini.read_bytes(), format=lzma.FORMAT_XZ))
    shutil.copy(binary, out)
    subprocess.run(["objcopy", "--strip-all", str(out)], check=True)
    subprocess.run(["objcopy", "--add-section", f".gnu_debugdata={packed}", str(out)], check=True)
    return out


def test_stripped_binary_names_its_functions_from_minidebuginfo(build_dir, tmp_path):
    """A binary stripped of .symtab names its own functions from the xz-compressed symbol
    table in .gnu_debugdata; without that section the same frames have no names."""
    binary = compile_target("threads.c", build_dir, "threads-O2", ["-O2", "-g"])
    plain = tmp_path / "threads-plain"
    shutil.copy(binary, plain)
    subprocess.run(["objcopy", "--strip-all", str(plain)], check=True)
    mini = _with_minidebuginfo(binary, tmp_path / "threads-mini")
    for path, named in ((plain, False), (mini, True)):
        with Target(path, {"read": 1}).wait_ready() as target:
            tid = target.tid("read")
            frames = dump(target, "--thread-id", str(tid), "--mode", "disabled").thread(tid).frames
        joined = " ".join(frames)
        assert ("blocking_read" in joined and "read_main" in joined) is named, (path, frames)
