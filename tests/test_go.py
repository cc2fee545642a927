"""Go binaries: names and file:line from Go's own `.gopclntab` (present also in a binary built
`-ldflags=-s -w`), checked against `go tool addr2line`; and a live Go server's frames named
alike in every mode, with file:line in FAST, stripped or not, every thread ending where Go's
own tracebacks end."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from conftest import need_tool
from helpers import TARGETS, any_thread_running, parse_report, run_stackdump

pytestmark = pytest.mark.usefixtures("live")


@pytest.fixture(scope="module")
def go_builds(build_dir):
    go = need_tool("go", "golang-go")
    env = {
        **os.environ,
        "GOCACHE": str(build_dir / "gocache"),
        "GOPATH": str(build_dir / "gopath"),
        "GO111MODULE": "off",
        "GOFLAGS": "",
    }
    built = {}
    for name, flags in (("dwarf", []), ("stripped", ["-ldflags=-s -w"])):
        out = build_dir / f"goserver-{name}"
        if not out.exists():
            subprocess.run(
                [go, "build", *flags, "-o", str(out), str(TARGETS / "goserver" / "main.go")],
                check=True,
                env=env,
            )
        built[name] = out
    return go, env, built


def test_gopclntab_names_and_lines_equal_go_tool_addr2line(go_builds):
    from stackdump.elf.image import ElfObject
    from stackdump.runtimes.go.pclntab import go_table

    go, env, built = go_builds
    symbols = subprocess.run(["nm", str(built["dwarf"])], capture_output=True, text=True).stdout
    starts = [int(line.split()[0], 16) for line in symbols.splitlines() if " T " in line]
    rng = random.Random(20)
    pcs = [start + rng.randrange(0, 32) for start in rng.sample(starts, 300)]
    answer = subprocess.run(
        [go, "tool", "addr2line", str(built["dwarf"])],
        input="".join(f"0x{pc:x}\n" for pc in pcs),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.splitlines()
    compared = 0
    for binary in built.values():  # -s -w keeps the code where it was, and .gopclntab
        elf = ElfObject.open(str(binary))
        try:
            table = go_table(elf)
            assert table is not None
            for i, pc in enumerate(pcs):
                name, where = answer[2 * i], answer[2 * i + 1]
                file, _, line = where.rpartition(":")
                found = table.lookup(pc)
                assert found is not None and found[0] == name, (hex(pc), found, name)
                if file and not file.startswith("<") and int(line) > 0:
                    assert (found[2], found[3]) == (file, int(line)), (hex(pc), found, where)
                    compared += 1
        finally:
            elf.close()
    assert compared > 400


def _server(binary: Path):
    process = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert line.startswith("ready go "), line
    # Until every thread sleeps in the kernel: the runtime's threads settle after start-up.
    deadline = time.monotonic() + 30
    while any_thread_running(process.pid):
        assert time.monotonic() < deadline
        time.sleep(0.01)  # polling a condition with a deadline
    return process


@pytest.mark.parametrize("variant", ["dwarf", "stripped"])
def test_go_server_frames_are_named_alike_in_every_mode_with_lines(go_builds, variant):
    _, _, built = go_builds
    process = _server(built[variant])
    try:
        reports = {}
        for mode in ("disabled", "fast", "full_with_inline"):
            # Every thread stopped (Go retries the EINTR of its netpoller's epoll_wait): a
            # passive copy knows only pc and sp, too little for Go's CFI at netpoll.
            out = run_stackdump("-p", str(process.pid), "--mode", mode, "--capture", "ptrace")
            assert out.returncode in (0, 1), out.stderr
            reports[mode] = parse_report(out.stdout)
    finally:
        process.kill()
        process.wait()
    # Go's functions (package-qualified: a dot in every name), physical frames only
    # (FULL_WITH_INLINE adds inlined ones); libc's, in cgo threads, are named by symbol or
    # DWARF as for any C code.
    names = {
        mode: {
            name
            for t in report.threads
            for f in t.frames
            for name in [f.split(" at ")[0].split(" in ")[0]]
            if not f.startswith("0x") and "." in name and not f.endswith(" (inlined)")
        }
        for mode, report in reports.items()
    }
    assert "runtime.futex" in names["disabled"], names["disabled"]
    assert names["fast"] == names["disabled"] == names["full_with_inline"]
    assert not any(n.endswith(".abi0") for n in names["disabled"])
    fast = [f for t in reports["fast"].threads for f in t.frames]
    assert any(f.startswith("runtime.futex at ") and "sys_linux_amd64.s:" in f for f in fast)
    # Every thread ends cleanly where Go's own tracebacks end, with no junk frames after.
    tops = ("runtime.mstart", "runtime.mcall", "runtime.goexit", "runtime.rt0_go")
    for thread in reports["fast"].threads:
        assert thread.keys["unwind_status"] == "end_of_stack", (thread.keys, thread.frames)
        assert thread.frames[-1].split(" at ")[0] in tops, thread.frames
        assert not any("<autogenerated>" in f for f in thread.frames), thread.frames


def test_watch_judges_goroutines_by_their_stacks_and_go_s_wait_reason(go_builds):
    """--watch --coroutines (issue 32): goroutines parked on a sync.Mutex are blocked (Go's
    wait reason says so), those parked on a channel or in a sleep are waiting; none moved."""
    import json

    _, _, built = go_builds
    process = _server(built["dwarf"])
    try:
        out = run_stackdump(
            "-p", str(process.pid), "--watch", "1", "--interval-ms", "500", "--coroutines",
            "--capture", "ptrace", "--format", "json",
        )  # fmt: skip
    finally:
        process.kill()
        process.wait()
    assert out.returncode in (0, 1), out.stderr
    document = json.loads(out.stdout)
    progress = {}
    for c in document["coroutines"]:
        functions = [f["function"] for f in c["frames"]]
        for name in ("main.parkedOnMutex", "main.parkedOnChannel", "main.parkedInSleep"):
            if name in functions:
                progress.setdefault(name, set()).add(c["progress"])
    assert progress == {
        "main.parkedOnMutex": {"blocked"},
        "main.parkedOnChannel": {"waiting"},
        "main.parkedInSleep": {"waiting"},
    }
    assert document["watch"]["coroutine_counts"]["blocked"] == 3
