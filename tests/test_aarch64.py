"""aarch64, through core files of aarch64 programs run under qemu-aarch64 (no aarch64
machine here): registers from the core's NT_PRSTATUS, CFI with aarch64's register numbers,
frame records (x29, x30), the link register of leaf functions, the objects found through the
dynamic loader's list (qemu's cores have no NT_FILE), and the kernel's signal trampoline.
gdb-multiarch on the same core is the oracle for pcs and function names."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from conftest import need_tool
from helpers import TARGETS, crash_on_request, parse_gdb_frames, parse_report, run_stackdump

SYSROOT = "/usr/aarch64-linux-gnu"
GDB_SCRIPT = Path(__file__).parent / "gdb_pcs.py"
VARIANTS = {
    "fp": ["-O1", "-g", "-fno-omit-frame-pointer"],
    "nofp": ["-O2", "-g", "-fomit-frame-pointer"],
}


@pytest.fixture(scope="module")
def cross(build_dir):
    for tool, package in (
        ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        ("qemu-aarch64", "qemu-user"),
        ("gdb-multiarch", "gdb-multiarch"),
    ):
        need_tool(tool, package)

    def build(variant: str) -> Path:
        out = build_dir / f"crash-aarch64-{variant}"
        if not out.exists():
            subprocess.run(
                ["aarch64-linux-gnu-gcc", *VARIANTS[variant], "-no-pie", "-pthread",
                 str(TARGETS / "crash.c"), "-o", str(out)],
                check=True,
            )  # fmt: skip
        return out

    return build


def _guest_core(binary: Path, where: Path, *args: str) -> Tuple[Path, Dict[str, List[int]]]:
    """Run the program under qemu-aarch64 until it crashes; (qemu's core of it, role -> TIDs)."""
    _, tids = crash_on_request(
        ["qemu-aarch64", "-L", SYSROOT, str(binary), *args], where, timeout=120
    )
    with_cores = [p for p in where.iterdir() if p.name.startswith("qemu_") and p.suffix == ".core"]
    assert len(with_cores) == 1, sorted(os.listdir(where))
    host_core = where / "core"  # qemu's own, when the host writes one: not ours to read
    if host_core.exists():
        host_core.unlink()
    return with_cores[0], tids


def _gdb(binary: Path, core: Path) -> Tuple[Dict[int, List[int]], Dict[int, List[str]]]:
    out = subprocess.run(
        ["gdb-multiarch", "-batch", "-nx",
         "-ex", "set debuginfod enabled off", "-ex", f"set sysroot {SYSROOT}",
         "-ex", f"file {binary}", "-ex", f"core-file {core}", "-x", str(GDB_SCRIPT)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    ).stdout  # fmt: skip
    return parse_gdb_frames(out)


def _ours(binary: Path, core: Path, mode: str = "disabled"):
    out = run_stackdump(
        "--core", str(core), "--exe", str(binary), "--sysroot", SYSROOT, "-a", "--mode", mode
    )
    assert out.returncode == 0, out.stderr
    return parse_report(out.stdout)


def _pc_and_name(frame: str) -> Tuple[int, str]:
    """(pc, function) of a frame line, the function as gdb names it: by DWARF, so without
    the suffix gcc gives a clone's symbol (`crash_here.constprop.0`)."""
    pc_text, _, rest = frame.partition(" ")
    name = rest.split(" at ")[0].split(" in ")[0] if rest and not rest.startswith("in ") else "??"
    return int(pc_text, 16), re.sub(r"\.(constprop|isra|part|cold)(\.\d+)*$", "", name)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_aarch64_core_pcs_and_names_equal_gdb_multiarch(cross, variant, tmp_path):
    binary = cross(variant)
    core, tids = _guest_core(binary, tmp_path, "plain")
    report = _ours(binary, core)
    assert report.header["signal"] == "SIGSEGV"
    assert report.header["signal_thread"] == str(tids["crasher"][0])
    ours = {t.tid: [_pc_and_name(f) for f in t.frames] for t in report.threads}
    gdb_pcs, gdb_names = _gdb(binary, core)
    assert set(ours) == set(gdb_pcs) == set(sum(tids.values(), []))
    for tid, frames in ours.items():
        assert [pc for pc, _ in frames] == gdb_pcs[tid], (tid, frames, gdb_pcs[tid])
        assert [name for _, name in frames] == gdb_names[tid], (tid, frames, gdb_names[tid])
    crasher = [name for _, name in ours[tids["crasher"][0]]]
    assert crasher[:3] == ["crash_here", "crash_caller", "crasher_main"], crasher
    reader = [name for _, name in ours[tids["read"][0]]]
    assert reader[:3] == ["read", "blocking_read", "reader_main"], reader


def test_aarch64_crash_unwinds_through_the_signal_trampoline(cross, tmp_path):
    """A SIGSEGV handler that aborts: the handler's frames, the kernel's signal trampoline
    (qemu's has no CFI: its rt_sigframe is read), then the faulting leaf function, whose
    return address is still in x30, and its callers. (gdb-multiarch 13 loops on this core.)"""
    binary = cross("fp")
    core, tids = _guest_core(binary, tmp_path)
    report = _ours(binary, core, "fast")
    assert report.header["signal"] == "SIGABRT"
    section = report.thread(tids["crasher"][0])
    assert section.keys["signal"] == "SIGABRT"
    assert section.keys["unwind_status"] == "end_of_stack", section.keys
    names = [_pc_and_name(f)[1] for f in section.frames]
    chain = ["abort", "on_segv", "crash_here", "crash_caller", "crasher_main"]
    positions = [names.index(n) for n in chain]
    assert positions == sorted(positions), names
    # the trampoline sits between the handler and the faulting function
    assert names.index("crash_here") == names.index("on_segv") + 2, names
    assert any(f.partition(" ")[2].startswith("crash_here at ") for f in section.frames)


def test_aarch64_pointer_authentication_signatures_are_stripped(cross, build_dir, tmp_path):
    """Built with -mbranch-protection=pac-ret, each saved x30 carries a signature in its top
    bits (qemu's `max` CPU signs them; its core records no PAC mask, and gdb-multiarch stops
    after frame 0): the walk strips it and finds the callers."""
    import struct

    from stackdump.capture.core import capture_core
    from stackdump.runtimes import after_capture
    from stackdump.types import CaptureOptions

    binary = build_dir / "crash-aarch64-pac"
    if not binary.exists():
        subprocess.run(
            ["aarch64-linux-gnu-gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-no-pie",
             "-mbranch-protection=pac-ret", "-pthread", str(TARGETS / "crash.c"),
             "-o", str(binary)],
            check=True,
        )  # fmt: skip
    core, tids = _guest_core(binary, tmp_path, "plain")
    crasher = tids["crasher"][0]
    snapshot = capture_core(
        str(core), CaptureOptions(pid=0), str(binary), SYSROOT, after=after_capture
    )
    try:
        thread = next(t for t in snapshot.threads if t.tid == crasher)
        regs = thread.regs.as_dict()
        saved_lr = struct.unpack_from("<Q", thread.stack, regs[29] + 8 - thread.stack_base)[0]
    finally:
        snapshot.files.close()
    assert saved_lr >> 48, f"0x{saved_lr:x} carries no signature: nothing to strip"
    frames = _ours(binary, core).thread(crasher).frames
    names = [_pc_and_name(f)[1] for f in frames]
    assert names[:3] == ["crash_here", "crash_caller", "crasher_main"], frames
    assert _pc_and_name(frames[2])[0] == saved_lr & ((1 << 48) - 1)


def _run_core(core: Path, *args: str):
    out = run_stackdump("--core", str(core), "-a", "--mode", "disabled", *args)
    assert out.returncode == 0, out.stderr
    return parse_report(out.stdout), out.stderr


def test_aarch64_callers_are_found_or_doubted_never_dropped_silently(cross, tmp_path):
    """Built without frame pointers, with the libraries' files missing (no --sysroot): a
    frame-pointer step out of libc's read lands on a function that keeps no frame record;
    its CFI, from the sp where it returns right after a call to itself, finds the caller
    the frame-pointer chain skips. With no file at all, every thread that gdb-multiarch
    (given every file) unwinds differently says why in `error=` (issue 28)."""
    binary = cross("nofp")
    core, tids = _guest_core(binary, tmp_path, "plain")
    gdb_pcs, _ = _gdb(binary, core)

    report, _ = _run_core(core, "--exe", str(binary))
    for t in report.threads:
        pcs = [_pc_and_name(f)[0] for f in t.frames]
        if pcs != gdb_pcs[t.tid]:
            assert "if its function saved no frame record" in t.keys.get("error", ""), (
                t.tid,
                pcs,
                gdb_pcs[t.tid],
            )
    for role in ("read", "crasher"):
        for tid in tids[role]:
            pcs = [_pc_and_name(f)[0] for f in report.thread(tid).frames]
            assert pcs == gdb_pcs[tid], (role, pcs, gdb_pcs[tid])

    report, stderr = _run_core(core, "--sysroot", str(tmp_path))
    for t in report.threads:
        pcs = [_pc_and_name(f)[0] for f in t.frames]
        assert pcs == gdb_pcs[t.tid] or "saved no frame record" in t.keys.get("error", ""), (
            t.tid,
            pcs,
            gdb_pcs[t.tid],
        )
    assert "the core names no mapped files (no NT_FILE note" in stderr, stderr
    assert "give --sysroot DIR" in stderr and "--exe PATH" in stderr
