"""Core files: gcore's and the kernel's, against the live dump taken just before and gdb on
the same core, and truncated or garbage cores."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from conftest import ON_CI, need_tool
from helpers import (
    TARGETS,
    Target,
    compile_target,
    crash_on_request,
    parse_gdb_frames,
    parse_report,
    run_stackdump,
)

pytestmark = pytest.mark.usefixtures("live")

GDB_SCRIPT = Path(__file__).parent / "gdb_pcs.py"
ROLES = {"read": 2, "cond": 1, "sleep": 1, "epoll": 1, "recurse": 1, "spin": 1}


def _pcs(report) -> Dict[int, List[int]]:
    return {
        t.tid: [int(re.match(r"0x([0-9a-f]+)", f).group(1), 16) for f in t.frames]
        for t in report.threads
    }


def _dump(*args: str):
    out = run_stackdump(*args, "-a", "--mode", "disabled", "--max-frames", "4096")
    assert out.returncode == 0, out.stderr
    return parse_report(out.stdout)


def _gdb_on_core(binary: Path, core: Path) -> Dict[int, List[int]]:
    out = subprocess.run(
        ["gdb", "-batch", "-nx", "-c", str(core), str(binary), "-x", str(GDB_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    return parse_gdb_frames(out)[0]


def _gcore(pid: int, where: Path) -> Path:
    subprocess.run(
        ["gcore", "-o", str(where), str(pid)], check=True, capture_output=True, timeout=300
    )
    return Path(f"{where}.{pid}")


@pytest.mark.parametrize("variant", ["O2", "nofp"])
def test_gcore_pcs_equal_the_live_dump_and_gdb_on_the_core(threads_bin, variant, tmp_path):
    need_tool("gcore", "gdb")
    binary = threads_bin(variant)
    with Target(binary, ROLES).wait_ready() as target:
        live = _pcs(_dump("-p", str(target.pid)))
        core = _gcore(target.pid, tmp_path / "core")
        spin = set(target.tids["spin"])
    report = _dump("--core", str(core))
    assert report.header["capture"] == "core"
    assert report.header["core"] == str(core)
    assert "signal" not in report.header  # gcore's SIGSTOP ended nothing
    from_core = _pcs(report)
    assert set(from_core) == set(live)
    for tid, pcs in from_core.items():
        start = 1 if tid in spin else 0  # the spinner ran on between the two
        if tid in spin:
            # (it may have been anywhere in its loop: compare from its caller)
            assert pcs[-3:] == live[tid][-3:], (tid, pcs, live[tid])
        else:
            assert pcs[start:] == live[tid][start:], (tid, pcs, live[tid])
    gdb = _gdb_on_core(binary, core)
    assert {tid: pcs for tid, pcs in gdb.items()} == from_core
    # file:line in FAST, from the files the core names
    fast = run_stackdump("--core", str(core), "--mode", "fast")
    assert fast.returncode == 0, fast.stderr
    reader = parse_report(fast.stdout).thread(target.tids["read"][0])
    assert reader.frames[1].startswith("blocking_read at ") and "threads.c:" in reader.frames[1]


def _core_pattern() -> str:
    """kernel.core_pattern, when cores land in the crashing process's cwd (else skip)."""
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern or "%" in pattern:
        reason = f"kernel.core_pattern is {pattern!r}: cores do not land in the cwd here"
        if ON_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return pattern


def _killed_core(program, readers: int, where: Path) -> Tuple[Path, int]:
    """Run tests/targets/threads.c's `program` (a path, bytes allowed) with `readers`
    threads blocked in read, cores allowed, kill() it with SIGSEGV once every thread is
    ready, and return (the kernel's core, the process's pid)."""
    import resource
    import signal

    pattern = _core_pattern()

    def allow_cores():
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    process = subprocess.Popen(
        [program, f"read={readers}".encode()],
        cwd=where,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        preexec_fn=allow_cores,
    )
    for _ in range(readers + 1):
        assert process.stdout.readline().startswith(b"ready ")
    os.kill(process.pid, signal.SIGSEGV)
    assert process.wait(timeout=60) == -signal.SIGSEGV
    core = where / pattern
    if not core.exists():
        core = where / f"{pattern}.{process.pid}"
    return core, process.pid


@pytest.fixture
def kernel_core(build_dir, tmp_path):
    """A core the kernel wrote for tests/targets/crash.c: (binary, core, crasher's TID)."""
    pattern = _core_pattern()
    binary = compile_target("crash.c", build_dir, "crash", ["-O1", "-g"])
    status, tids = crash_on_request([str(binary)], tmp_path, timeout=60)
    assert status == -6  # SIGABRT, from its SIGSEGV handler
    core = tmp_path / pattern
    if not core.exists():
        core = tmp_path / f"{pattern}.{tids['main'][0]}"
    assert core.exists(), sorted(os.listdir(tmp_path))
    return binary, core, tids


def test_kernel_core_marks_the_faulting_thread_through_its_signal_frame(kernel_core):
    binary, core, tids = kernel_core
    out = run_stackdump("--core", str(core), "--mode", "fast")
    assert out.returncode == 0, out.stderr
    report = parse_report(out.stdout)
    crasher = tids["crasher"][0]
    assert report.header["signal"] == "SIGABRT"
    assert report.header["signal_thread"] == str(crasher)
    assert sorted(t.tid for t in report.threads) == sorted(sum(tids.values(), []))
    section = report.thread(crasher)
    assert section.keys["signal"] == "SIGABRT"
    assert all("signal" not in t.keys for t in report.threads if t.tid != crasher)
    names = [f.split(" at ")[0].split(" in ")[0] for f in section.frames]
    chain = ["abort", "on_segv", "__restore_rt", "crash_here", "crash_caller", "crasher_main"]
    positions = [names.index(n) for n in chain]
    assert positions == sorted(positions), names
    assert section.keys["unwind_status"] == "end_of_stack"
    # pcs equal gdb's on the same core
    assert _gdb_on_core(binary, core) == _pcs(_dump("--core", str(core)))
    # and the JSON report says the same, valid against its schema
    import json

    import jsonschema

    out = run_stackdump("--core", str(core), "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    schema = json.loads((Path(__file__).parent.parent / "docs" / "json-schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["header"]["capture"] == "core"
    assert doc["header"]["core"]["signal"] == "SIGABRT"
    assert [t["tid"] for t in doc["threads"] if t.get("signal") == "SIGABRT"] == [crasher]


def test_truncated_and_garbage_cores_never_raise(kernel_core, tmp_path):
    _, core, _ = kernel_core
    data = core.read_bytes()
    rng = random.Random(19)
    cuts = sorted(rng.randrange(1, len(data)) for _ in range(12)) + [64, 1000, 5000]
    damaged = tmp_path / "damaged"
    for cut in cuts:
        damaged.write_bytes(data[:cut])
        out = run_stackdump("--core", str(damaged), "--mode", "fast")
        assert out.returncode in (0, 1, 3), (cut, out.returncode, out.stderr)
        assert "Traceback" not in out.stderr, (cut, out.stderr)
    # garbage over the notes: random bytes where the program headers point
    notes_at = int.from_bytes(data[32:40], "little")
    for seed in range(6):
        rng = random.Random(seed)
        garbage = bytearray(data)
        for _ in range(64):
            at = rng.randrange(notes_at, min(len(data), notes_at + 8192))
            garbage[at] = rng.randrange(256)
        damaged.write_bytes(bytes(garbage))
        out = run_stackdump("--core", str(damaged), "--mode", "fast")
        assert out.returncode in (0, 1, 3), (seed, out.returncode, out.stderr)
        assert "Traceback" not in out.stderr, (seed, out.stderr)


def test_core_arguments_are_checked(tmp_path, threads_bin):
    missing = run_stackdump("--core", str(tmp_path / "nothing"))
    assert missing.returncode == 3 and "cannot read core file" in missing.stderr
    not_core = run_stackdump("--core", str(threads_bin("O0")))
    assert not_core.returncode == 3 and "not a core file" in not_core.stderr
    both = run_stackdump("--core", str(tmp_path / "x"), "-p", "1")
    assert both.returncode == 2 and "mutually exclusive" in both.stderr
    stray = run_stackdump("-p", "1", "--exe", str(threads_bin("O0")))
    assert stray.returncode == 2 and "--exe and --sysroot need --core" in stray.stderr


def test_exe_and_sysroot_find_files_elsewhere(threads_bin, tmp_path):
    """A core from another machine: its files under --sysroot, the executable by --exe."""
    need_tool("gcore", "gdb")
    original = tmp_path / "app"
    shutil.copy(threads_bin("O2"), original)
    with Target(original, {"read": 1}).wait_ready() as target:
        core = _gcore(target.pid, tmp_path / "core")
        reader = target.tids["read"][0]
    moved = tmp_path / "elsewhere" / "app"
    moved.parent.mkdir()
    original.rename(moved)
    gone = parse_report(run_stackdump("--core", str(core)).stdout).thread(reader)
    assert not any(f.startswith("blocking_read") for f in gone.frames), gone.frames
    found = run_stackdump("--core", str(core), "--exe", str(moved), "--sysroot", "/")
    assert found.returncode == 0, found.stderr
    frames = parse_report(found.stdout).thread(reader).frames
    assert frames[1].startswith("blocking_read at "), frames
    # a different binary at that path is not taken for the one the process had
    other = tmp_path / "other"
    subprocess.run(
        ["gcc", "-O0", "-g", "-pthread", str(TARGETS / "threads.c"), "-o", str(other)], check=True
    )
    wrong = run_stackdump("--core", str(core), "--exe", str(other))
    frames = parse_report(wrong.stdout).thread(reader).frames
    assert not any(f.startswith("blocking_read") for f in frames), frames


def test_a_signal_sent_with_kill_names_its_sender_not_a_fault_address(threads_bin, tmp_path):
    """SIGSEGV sent by kill(): si_code is SI_USER and the kernel's siginfo holds the
    sender's pid and uid where a fault's address would be (issue 28). gdb reads the same."""
    binary = threads_bin("O2")
    core, _ = _killed_core(str(binary), 2, tmp_path)
    out = run_stackdump("--core", str(core), "--mode", "disabled")
    assert out.returncode == 0, out.stderr
    header = parse_report(out.stdout).header
    assert header["signal"] == "SIGSEGV"
    assert "fault_address" not in header
    assert header["signal_sender_pid"] == str(os.getpid())
    assert header["signal_sender_uid"] == str(os.getuid())
    gdb = subprocess.run(
        [
            "gdb",
            "-batch",
            "-nx",
            "-c",
            str(core),
            str(binary),
            "-ex",
            "p $_siginfo.si_code",
            "-ex",
            "p $_siginfo._sifields._kill.si_pid",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    assert re.findall(r"^\$\d+ = (-?\d+)$", gdb, re.M) == ["0", str(os.getpid())], gdb


def test_a_truncated_core_says_so_and_never_exits_0(kernel_core, tmp_path):
    """A full disk cuts a core anywhere: before its notes (no thread at all) or inside its
    memory (stacks missing). Both say how much of the file is there, in the header and on
    stderr, and exit 1 (issue 28)."""
    _, core, tids = kernel_core
    data = core.read_bytes()
    phoff, phnum = int.from_bytes(data[32:40], "little"), int.from_bytes(data[56:58], "little")
    promised = 0
    notes_at = None
    for i in range(phnum):
        at = phoff + i * 56
        p_type = int.from_bytes(data[at : at + 4], "little")
        offset = int.from_bytes(data[at + 8 : at + 16], "little")
        filesz = int.from_bytes(data[at + 32 : at + 40], "little")
        promised = max(promised, offset + filesz)
        if p_type == 4:  # PT_NOTE
            notes_at = offset
    assert promised == len(data) and notes_at is not None
    cut = tmp_path / "cut"

    cut.write_bytes(data[: notes_at + 16])
    out = run_stackdump("--core", str(cut), "--mode", "fast")
    assert out.returncode == 1, out.stderr
    problem = f"the file is truncated: it holds {notes_at + 16} of the {promised} bytes"
    assert any(v.startswith(problem) for v in _core_problems(out.stdout)), out.stdout
    assert problem in out.stderr
    assert "no thread could be read from the core" in out.stderr
    assert parse_report(out.stdout).threads == []

    # Cut in the middle of the memory: the threads whose stacks are gone say why.
    half = len(data) // 2
    cut.write_bytes(data[:half])
    out = run_stackdump("--core", str(cut), "--mode", "fast")
    assert out.returncode == 1, out.stderr
    assert f"the file is truncated: it holds {half} of the {promised} bytes" in out.stderr
    report = parse_report(out.stdout)
    assert sorted(t.tid for t in report.threads) == sorted(sum(tids.values(), []))
    errors = {t.keys.get("error") for t in report.threads}
    assert '"the core file is truncated: its stack is in the part cut off"' in errors, errors
    assert all("outside the thread's stack mapping" not in (e or "") for e in errors), errors


def _core_problems(text: str) -> List[str]:
    return [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("core_problem")]


def test_a_core_naming_a_file_that_is_not_utf8_keeps_its_bytes(threads_bin, tmp_path):
    """The program's own name is \\xff\\xfe: NT_FILE, NT_PRPSINFO and the report hold those
    bytes, escaped as docs/FORMAT.md says, in every format (issue 28)."""
    program = os.path.join(os.fsencode(tmp_path), b"thr\xff\xfe")
    shutil.copy(threads_bin("O2"), program)
    core, pid = _killed_core(program, 1, tmp_path)
    shown = f"{tmp_path}/thr\\xff\\xfe"

    out = run_stackdump("--core", str(core), "--mode", "disabled")
    assert out.returncode == 0, out.stderr
    report = parse_report(out.stdout)
    assert report.header["exe"] == shown
    assert report.header["cmdline"].split()[0] == f"{tmp_path}/thr\\xff\\xfe"
    assert report.thread(pid).name == "thr\\xff\\xfe"
    assert any(f.endswith(f" in {shown}") for f in report.thread(pid).frames)
    assert "\ufffd" not in out.stdout
    for fmt in ("json", "folded"):
        out = run_stackdump("--core", str(core), "--mode", "disabled", "--format", fmt)
        assert out.returncode == 0, out.stderr
        assert "thr\\\\xff\\\\xfe" in out.stdout if fmt == "json" else "thr\\xff\\xfe" in out.stdout
        assert "\ufffd" not in out.stdout
    out = run_stackdump("--core", str(core), "--group", "--mode", "disabled")
    assert out.returncode == 0 and shown in out.stdout, out.stderr
    # A profile format is for a live process: a usage error, not "no such process: 0".
    out = run_stackdump("--core", str(core), "--format", "pprof")
    assert out.returncode == 2 and "profile" in out.stderr, out.stderr


def test_hints_are_true_of_the_state_they_describe(threads_bin, tmp_path):
    """A core whose program is gone from this machine: the object line shows the build-id
    the core recorded (not `none`) and says the file is missing, not that it lacks symbols
    and should be rebuilt. And a debug package that is installed is not suggested for
    installation (issue 28)."""
    from stackdump.elf.image import file_build_id
    from stackdump.elf.packages import is_installed, symbols_fix

    program = tmp_path / "gone"
    shutil.copy(threads_bin("O2"), program)
    build_id = file_build_id(str(program))
    core, _ = _killed_core(str(program), 1, tmp_path)
    program.unlink()
    out = run_stackdump("--core", str(core), "--mode", "fast")
    entry = next(o for o in parse_report(out.stdout).objects if o["path"] == str(program))
    assert entry["build_id"] == build_id
    assert entry["fix"].startswith('"the file is not on this machine'), entry
    assert "rebuild" not in out.stdout

    libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    fix = symbols_fix(libc, "00" * 20)
    if is_installed("libc6-dbg"):
        assert fix.startswith("libc6-dbg is installed but has no debug file for this build")
    else:
        assert fix.startswith("apt install libc6-dbg")


def test_sysroot_and_this_machines_debug_files_are_both_searched(threads_bin, tmp_path):
    """--sysroot holds the target's libraries (here copies of this machine's); their debug
    files are found by build-id under the sysroot first, then under this machine's
    /usr/lib/debug (issue 28: the sysroot used to hide them)."""
    need_tool("gcore", "gdb")
    libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    from stackdump.elf.image import file_build_id

    build_id = file_build_id(libc)
    host_debug = f"/usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}.debug"
    if not os.path.isfile(host_debug):
        if ON_CI:
            pytest.fail(f"libc6-dbg's {host_debug} is missing (CI installs libc6-dbg)")
        pytest.skip(f"no {host_debug}: install libc6-dbg")
    with Target(threads_bin("O2"), {"read": 1}).wait_ready() as target:
        core = _gcore(target.pid, tmp_path / "core")
        reader = target.tids["read"][0]
        maps = Path(f"/proc/{target.pid}/maps").read_text()
    sysroot = tmp_path / "root"
    for path in sorted({line.split()[-1] for line in maps.splitlines() if "/" in line}):
        if os.path.isfile(path):
            (sysroot / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, sysroot / path.lstrip("/"))
    out = run_stackdump("--core", str(core), "--sysroot", str(sysroot), "--mode", "fast")
    assert out.returncode == 0, out.stderr
    report = parse_report(out.stdout)
    frames = report.thread(reader).frames
    assert frames[0].startswith("read at ") or " at ../sysdeps/" in frames[0], frames
    out = run_stackdump("--core", str(core), "--sysroot", str(sysroot), "--format", "json")
    import json

    libc_entry = next(
        m for m in json.loads(out.stdout)["objects"] if m["path"].endswith("/libc.so.6")
    )
    assert libc_entry["debug_file"] == host_debug, libc_entry
