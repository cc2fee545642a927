"""Unwinding through code without frame pointers (DWARF CFI), checked against gdb."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest
from helpers import (
    Target,
    assert_untouched,
    compile_target,
    parse_gdb_frames,
    parse_report,
    read_syscall_line,
    run_stackdump,
)

pytestmark = pytest.mark.usefixtures("live")

GDB_SCRIPT = Path(__file__).parent / "gdb_pcs.py"
THREAD_START = ["start_thread", "clone3"]

BLOCKED_ROLES = {
    "read": ("read", ["blocking_read", "read_main"]),
    "cond": ("pthread_cond_wait", ["wait_forever", "cond_main"]),
    "sleep": ("nanosleep", ["sleep_forever", "sleep_main"]),
    "epoll": ("epoll_wait", ["wait_epoll", "epoll_main"]),
    "poll": ("poll", ["wait_poll", "poll_main"]),
    "accept": ("accept", ["wait_accept", "accept_main"]),
}
ALL_ROLES = {**{role: 1 for role in BLOCKED_ROLES}, "spin": 1, "sigalt": 1, "recurse": 1}


def dump(target: Target, *args: str):
    result = run_stackdump("-p", str(target.pid), "--mode", "disabled", *args)
    assert result.returncode == 0, result.stderr
    assert_untouched(target.pid)
    return parse_report(result.stdout)


@pytest.fixture(scope="module")
def nofp_target(threads_bin):
    with Target(threads_bin("nofp"), ALL_ROLES).wait_ready() as target:
        yield target


@pytest.mark.parametrize("role", sorted(BLOCKED_ROLES))
def test_thread_blocked_in_libc_shows_its_callers(nofp_target, role):
    libc_function, callers = BLOCKED_ROLES[role]
    tid = nofp_target.tid(role)
    section = dump(nofp_target, "--thread-id", str(tid)).thread(tid)
    functions = section.functions()
    assert functions[-4:] == [*callers, *THREAD_START], section.frames
    assert libc_function in functions[:-4], section.frames
    assert section.keys["capture_method"] in ("dwarf_cfi", "passive_syscall")
    assert section.keys["unwind_status"] == "end_of_stack"


def test_main_thread_reaches_start(nofp_target):
    section = dump(nofp_target, "--thread-id", str(nofp_target.pid)).thread(nofp_target.pid)
    assert section.functions()[-4:] == [
        "main",
        "__libc_start_call_main",
        "__libc_start_main",
        "_start",
    ], section.frames


def test_signal_handler_on_alternate_stack_unwinds_across_the_trampoline(nofp_target):
    tid = nofp_target.tid("sigalt")
    section = dump(nofp_target, "--thread-id", str(tid)).thread(tid)
    functions = section.functions()
    # the handler's side, on the alternate stack ...
    assert functions[:4] == ["read", "handler_blocks", "on_signal", "__restore_rt"], functions
    # ... and the interrupted side, on the thread's own stack
    assert functions[-4:] == ["raise_on_self", "sigalt_main", *THREAD_START], functions
    assert section.keys["unwind_status"] == "end_of_stack"


def test_deep_recursion_is_unwound_whole(nofp_target):
    tid = nofp_target.tid("recurse")
    section = dump(nofp_target, "--thread-id", str(tid)).thread(tid)
    functions = section.functions()
    assert functions[:2] == ["clock_nanosleep", "nanosleep"], functions[:3]
    assert functions[2:] == ["recurse"] * 201 + ["recurse_main", *THREAD_START]
    assert section.keys["frames"] == str(len(functions))


def test_max_frames_stops_at_the_limit(nofp_target):
    tid = nofp_target.tid("recurse")
    section = dump(nofp_target, "--thread-id", str(tid), "--max-frames", "10").thread(tid)
    assert len(section.frames) == 10
    assert section.keys["frames"] == "10"
    assert section.keys["unwind_status"] == "frame_limit"


# -- differential: stackdump's pcs equal gdb's, frame by frame --------------------------------


def gdb_pcs(pid: int) -> Dict[int, List[int]]:
    out = subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-nx", "-x", str(GDB_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    return parse_gdb_frames(out)[0]


def stackdump_pcs(pid: int, tids=None) -> Dict[int, List[int]]:
    args = ["-p", str(pid), "-a", "--mode", "disabled", "--max-frames", "4096"]
    if tids:
        args += ["--thread-id", ",".join(map(str, tids))]
    result = run_stackdump(*args)
    assert result.returncode == 0, result.stderr
    report = parse_report(result.stdout)
    return {
        t.tid: [int(re.match(r"0x([0-9a-f]+)", f).group(1), 16) for f in t.frames]
        for t in report.threads
    }


def compare(ours: Dict[int, List[int]], gdb: Dict[int, List[int]], running=()) -> float:
    """Fraction of threads whose pcs equal gdb's; a running thread's frame 0 is not compared
    (it moved between the two dumps)."""
    assert set(ours) == set(gdb), (sorted(ours), sorted(gdb))
    mismatches = []
    for tid in ours:
        start = 1 if tid in running else 0
        if ours[tid][start:] != gdb[tid][start:]:
            mismatches.append(
                f"thread {tid}:\n  ours {[hex(p) for p in ours[tid]]}\n"
                f"  gdb  {[hex(p) for p in gdb[tid]]}"
            )
    ratio = 1 - len(mismatches) / len(ours)
    print(f"agreement with gdb: {len(ours) - len(mismatches)}/{len(ours)} threads ({ratio:.0%})")
    assert not mismatches, "\n".join(mismatches)
    return ratio


@pytest.mark.parametrize("variant", ["O0", "O2", "nofp", "nocfi"])
def test_every_thread_matches_gdb(threads_bin, variant):
    with Target(threads_bin(variant), ALL_ROLES).wait_ready() as target:
        ours = stackdump_pcs(target.pid)
        assert_untouched(target.pid)
        compare(ours, gdb_pcs(target.pid), running=target.tids["spin"])


def test_cxx_target_matches_gdb(build_dir):
    binary = compile_target("cxx_threads.cpp", build_dir, "cxx-O2", ["-O2", "-g"])
    roles = {"worker": 1, "waiter": 1, "thrower": 1, "spin": 1}
    with Target(binary, roles).wait_ready() as target:
        ours = stackdump_pcs(target.pid)
        assert_untouched(target.pid)
        compare(ours, gdb_pcs(target.pid), running=target.tids["spin"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _syscall_lines(pid: int) -> Dict[int, str]:
    lines = {}
    for name in os.listdir(f"/proc/{pid}/task"):
        line = read_syscall_line(pid, int(name))
        if line is not None:
            lines[int(name)] = line
    return lines


def _stayed(before: str, after) -> bool:
    if after == before:
        return True
    if after is None or before == "running":
        return False
    first, last = before.split(), after.split()
    return last[0] == "219" and last[-2:] == first[-2:]


def test_real_server_matches_gdb():
    """memcached from Debian: a real multi-threaded server built without frame pointers."""
    memcached = shutil.which("memcached")
    if memcached is None:
        pytest.skip("memcached is not installed (.ci/run installs it)")
    server = subprocess.Popen(
        [memcached, "-u", "root", "-l", "127.0.0.1", "-p", str(_free_port()), "-U", "0", "-t", "4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Settled: 10 threads (main, 4 workers, 5 helpers), every one blocked in a syscall.
        deadline = time.monotonic() + 20
        while True:
            before = _syscall_lines(server.pid)
            blocked = [line for line in before.values() if line != "running"]
            if len(before) >= 10 and len(blocked) == len(before):
                break
            assert time.monotonic() < deadline, f"memcached did not settle: {before}"
            os.sched_yield()
        ours = stackdump_pcs(server.pid)
        assert_untouched(server.pid)
        theirs = gdb_pcs(server.pid)
        after = _syscall_lines(server.pid)
        # A thread that woke up between the two dumps may legitimately differ: compare the
        # threads that provably stayed in the same call with the same arguments. A sleep or
        # timed futex that a ptrace stop (ours, then gdb's) interrupted resumes as
        # restart_syscall (219) at the same sp and pc: that thread stayed put too.
        steady = [tid for tid in before if _stayed(before[tid], after.get(tid))]
        # memcached's main thread wakes once a second for its clock event, and its helper
        # threads on condition variables; gdb alone takes about a second here. Seen: 7 or 8
        # of 10 steady, so 0.8 failed now and then (a fresh-clone CI run saw 7).
        assert len(steady) >= 0.6 * len(before), (before, after)
        compare({t: ours[t] for t in steady}, {t: theirs[t] for t in steady})
        # And the dump is more than libc: memcached's own frames are there.
        assert all(len(ours[t]) >= 3 for t in steady), ours
    finally:
        server.kill()
        server.wait()


def test_a_thread_in_an_epilogue_keeps_its_caller(build_dir):
    """After `pop rbp` and before `ret`, the CFI names rbp's slot in the red zone, below the
    stack pointer: that slot is copied, the CFI step is taken, and the caller (which a
    frame-pointer walk from there skips) is in the report, as in gdb's."""
    if os.uname().machine != "x86_64":
        pytest.skip("the target is x86-64 assembly")
    binary = compile_target("epilogue.c", build_dir, "epilogue", ["-O2", "-fno-omit-frame-pointer"])
    with Target(binary, {"epilogue": 1}).wait_ready() as target:
        tid = target.tid("epilogue")
        section = dump(target, "--thread-id", str(tid)).thread(tid)
        assert section.functions()[:3] == [
            "epilogue_leaf",
            "epilogue_caller",
            "epilogue_main",
        ], section.frames
        ours = stackdump_pcs(target.pid, [tid])
        # It spins in the epilogue's loop: its own pc moves between the two dumps.
        compare(ours, {tid: gdb_pcs(target.pid)[tid]}, running=[tid])
