"""Goroutines of every Go release from 1.19 to 1.27, each built with Debian's own toolchain
for that release (tests/go_toolchains.py), with DWARF and `-ldflags=-s -w`: the layout table
against each release's DWARF, `--coroutines` against the program's own `runtime.Stack` dump
and against Debian's delve, and each thread's goroutine."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import pytest
from conftest import ON_CI
from helpers import CACHE, TARGETS, any_thread_running, parse_report, run_stackdump

pytestmark = pytest.mark.usefixtures("live")

RELEASES = ["1.19", "1.21", "1.22", "1.23", "1.24", "1.25", "1.26", "1.27"]
SOURCE = TARGETS / "goserver" / "main.go"
PARKED = {  # function -> how main.go parks three goroutines in it (runtime.Stack's words)
    "main.parkedInSleep": "sleep",
    "main.parkedOnChannel": "chan receive",
    "main.parkedInSelect": "select",
    "main.chainInner": "chan receive",
}


def tid_ranges(ids):
    from stackdump.views import tid_ranges as ranges

    return ranges(ids)


def _toolchain(release: str) -> Path:
    import go_toolchains

    try:
        return go_toolchains.goroot(release)
    except (OSError, RuntimeError) as e:  # no network, no dpkg-deb, no golang-go
        if ON_CI:
            pytest.fail(f"Go {release}: {e}")
        pytest.skip(f"Go {release} toolchain unavailable: {e}")


def _build(
    release: str, variant: str, source: Path = SOURCE, cgo: bool = False, arch: str = "amd64"
) -> Path:
    """A Go target built by `release`, cached by the toolchain and the source."""
    root = _toolchain(release)
    key = hashlib.sha256(str(root).encode() + source.read_bytes()).hexdigest()[:16]
    name = f"{source.parent.name}-{release}-{variant}{'-' + arch if arch != 'amd64' else ''}"
    out = CACHE / "go-targets" / f"{name}-{key}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "GOROOT": str(root),
            "GOCACHE": str(CACHE / "go-targets" / f"gocache-{release}"),
            "GOPATH": str(CACHE / "go-targets" / "gopath"),
            "GOTOOLCHAIN": "local",
            "GOFLAGS": "",
            "GO111MODULE": "off",
            "CGO_ENABLED": "1" if cgo else "0",
            "GOARCH": arch,
        }
        flags = ["-ldflags=-s -w"] if variant == "stripped" else []
        partial = out.with_suffix(".partial")
        subprocess.run(
            [str(root / "bin" / "go"), "build", *flags, "-o", str(partial), str(source)],
            check=True,
            env=env,
        )
        partial.rename(out)
    return out


class GoServer:
    """The running target, stdin held open for its commands; with `env`, those variables
    set, and its stderr kept (for its own SIGQUIT dump, `quit`)."""

    def __init__(self, binary: Path, env: Optional[dict] = None) -> None:
        self.process = subprocess.Popen(
            [str(binary)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if env is not None else None,
            text=True,
            env={**os.environ, **env} if env is not None else None,
        )
        assert self.process.stdout.readline().startswith("ready go ")
        self.pid = self.process.pid

    def command(self, line: str, until: str) -> list:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        lines = []
        while True:
            text = self.process.stdout.readline()
            assert text, "the Go target exited"
            if text.strip() == until:
                return lines
            lines.append(text.rstrip("\n"))

    def runtime_stack(self) -> dict:
        """goroutine id -> (state, function names) from the program's own runtime.Stack."""
        found = {}
        for goid, state, rows in _goroutine_blocks("\n".join(self.command("stacks", "end stacks"))):
            names = [r.rsplit("(", 1)[0] for r in rows if not r.startswith(("\t", "created by"))]
            found[goid] = (state, names)
        return found

    def settle(self) -> dict:
        """Until the program itself sees all 15 goroutines of main.go parked, and every
        thread sleeps in the kernel; then its runtime.Stack dump."""
        deadline = time.monotonic() + 30
        while True:
            theirs = self.runtime_stack()
            parked = Counter(
                fn for _, names in theirs.values() for fn in names if fn in PARKED
            ) + Counter("mutex" for _, names in theirs.values() if "main.parkedOnMutex" in names)
            if all(parked[fn] == 3 for fn in [*PARKED, "mutex"]) and not any_thread_running(
                self.pid
            ):
                return theirs
            assert time.monotonic() < deadline, theirs
            time.sleep(0.01)  # polling a condition with a deadline

    def quit(self) -> str:
        """Go's own dump of every goroutine, as SIGQUIT makes the runtime print it on its
        way out (with GOTRACEBACK=system: runtime frames too, each with its file:line)."""
        self.process.send_signal(signal.SIGQUIT)
        _, err = self.process.communicate(timeout=60)
        return err

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def _goroutine_blocks(dump: str):
    """(goroutine id, state, the rows after its header) of each goroutine in a dump Go
    printed: runtime.Stack's, or the traceback of SIGQUIT or a crash (`goroutine 7 [chan
    receive, 2 minutes]:`, with `gp=... m=...` before the state at GOTRACEBACK=system)."""
    for block in dump.split("\n\n"):
        rows = block.strip().splitlines()
        head = re.match(r"goroutine (\d+) .*?\[([^\],]*)", rows[0]) if rows else None
        if head is not None:
            yield int(head[1]), head[2], rows[1:]


def _goroutines(text: str) -> dict:
    """goroutine id -> (keys, function names, inlined ones included) from our report."""
    out = {}
    for section in parse_report(text).coroutines:
        assert section.name == "goroutine", section.name
        names = [
            f.split(" at ")[0].split(" in ")[0]
            for f in section.frames
            if " at <autogenerated>:" not in f  # wrappers Go's dump hides too
            and not f.startswith("0x")
        ]
        out[section.tid] = (section.keys, names)
    return out


@pytest.mark.parametrize("release", RELEASES)
def test_layout_table_is_each_releases_dwarf(release):
    """The table `-s -w` binaries are read with equals what each release's DWARF says."""
    from stackdump.elf.image import ElfObject
    from stackdump.runtimes.go import goroutines

    elf = ElfObject.open(str(_build(release, "dwarf")))
    try:
        assert goroutines.go_release(elf)[0].startswith(f"go{release}")
        measured = goroutines.layout_from_dwarf(elf)
    finally:
        elf.close()
    assert measured == goroutines.layout_for_release(int(release.split(".")[1])), release


@pytest.mark.parametrize("variant", ["dwarf", "stripped"])
@pytest.mark.parametrize("release", RELEASES)
def test_goroutines_agree_with_runtime_stack(release, variant):
    server = GoServer(_build(release, variant))
    try:
        server.settle()
        # The second collection stamps every blocked goroutine's wait start with the end of
        # the first (mgcmark.go: work.tstart, 0 until a collection ended).
        server.command("gc", "gc done")
        server.command("gc", "gc done")
        theirs = server.settle()
        out = run_stackdump("-p", str(server.pid), "--coroutines", "--mode", "full_with_inline")
        assert out.returncode in (0, 1), out.stderr
        grouped = run_stackdump("-p", str(server.pid), "--coroutines", "--group", "--mode", "fast")
        after = server.runtime_stack()
        age_s = time.time() - os.stat(f"/proc/{server.pid}").st_mtime
    finally:
        server.stop()
    ours = _goroutines(out.stdout)
    compared = 0
    for goid, (state, names) in theirs.items():
        if state == "running" or after.get(goid) != (state, names):
            continue  # printing the dump, or it moved while we looked: no fixed answer
        assert goid in ours, (goid, state, names, sorted(ours))
        keys, our_names = ours[goid]
        if state not in ("runnable", "syscall"):
            assert keys.get("wait_reason", "").strip('"') == state, (goid, keys, state)
        # With inlined functions as frames (Go's inline tree), the same functions in the
        # same order as Go's own dump, leaving aside the runtime's frames (which Go's dump
        # shows only in part) and the wrapper `go f(x)` runs f in (which it hides).
        mine = [n for n in our_names if not n.startswith("runtime.")]
        if len(mine) > 1 and re.search(r"\.(func|gowrap)\d+$", mine[-1]):
            mine = mine[:-1]
        assert mine == [n for n in names if not n.startswith("runtime.")], (goid, names, mine)
        compared += 1
    assert compared >= 15
    for function, reason in PARKED.items():
        chains = [(k, n) for k, n in ours.values() if function in n]
        assert len(chains) == 3, (function, ours)
        for keys, names in chains:
            assert keys["wait_reason"].strip('"') == reason, keys
            assert names[-1] == "runtime.goexit", names
            # Stamped by the collection above, so no later than the process's start.
            assert 0 <= int(keys["wait_s"]) <= age_s + 1, (keys, age_s)
    chain = next(n for _, n in ours.values() if "main.chainInner" in n)
    at = chain.index("main.chainInner")
    assert chain[at : at + 3] == ["main.chainInner", "main.chainMiddle", "main.chainOuter"]
    # Grouped, main.go's five kinds of parked goroutines are five sections of three, each
    # with its wait reason and the ids the ungrouped report gave them.
    for function, reason in [*PARKED.items(), ("main.parkedOnMutex", None)]:
        ids = sorted(goid for goid, (_, n) in ours.items() if function in n)
        head = re.search(
            rf"^----- 3 goroutines status=ok frames=\d+ go_status=waiting "
            rf'wait_reason=("[^"]*"|\S+) created_by="main\.main at [^"]*main\.go:\d+" -----\n'
            rf"ids: {tid_ranges(ids)}\n",
            grouped.stdout,
            re.M,
        )
        assert head, (function, ids, grouped.stdout)
        assert reason is None or head[1].strip('"') == reason
    # Each thread names the goroutine it serves: main's, blocked reading stdin, is served
    # by one thread in a syscall on its own stack; idle threads are on their g0 stacks.
    threads = parse_report(out.stdout).threads
    serving = [t for t in threads if t.keys.get("goroutine") == "1"]
    assert len(serving) == 1, [t.keys for t in threads]
    assert serving[0].keys["go_status"] == "syscall" and "go_stack" not in serving[0].keys
    assert "main.main" in serving[0].functions()
    on_g0 = [t for t in threads if t.keys.get("go_stack") == "g0"]
    assert on_g0, [t.keys for t in threads]
    tops = ("runtime.mstart", "runtime.rt0_go", "runtime.mcall", "runtime.morestack",
            "runtime.systemstack")  # fmt: skip
    for t in on_g0:  # from the thread's start, or from where it switched stacks
        assert t.functions()[-1] in tops, t.frames


def _own(functions) -> list:
    """The program's own functions, not the wrapper a `go` statement runs its function in
    (runtime.Stack hides it, GOTRACEBACK=system shows it)."""
    own = [f for f in functions if f.startswith("main.")]
    if len(own) > 1 and re.search(r"\.(func|gowrap)\d+$", own[-1]):
        own = own[:-1]
    return own


_FRAME = re.compile(r"^(.*) at (\S+):(\d+)(?: \(inlined\))?$")


def _gos_frames(dump: str) -> dict:
    """goroutine id -> (frames as (function, file, line), `created by` as Go prints it or
    None, the creating goroutine or None) from Go's GOTRACEBACK=system dump."""
    found = {}
    for goid, _, rows in _goroutine_blocks(dump):
        frames, created, parent = [], None, None
        for call, where in zip(rows[0::2], rows[1::2]):
            place = re.match(r"\t(\S+):(\d+)", where)
            if place is None:
                break
            if call.startswith("created by "):
                by = re.match(r"created by (\S+)(?: in goroutine (\d+))?", call)
                created, parent = f"{by[1]} at {place[1]}:{place[2]}", by[2]
            else:
                frames.append((call.rsplit("(", 1)[0], place[1], int(place[2])))
        found[goid] = (frames, created, parent)
    return found


@pytest.mark.parametrize("variant", ["dwarf", "stripped"])
@pytest.mark.parametrize("release", RELEASES)
def test_goroutine_frames_and_creators_equal_gos_own_dump(release, variant):
    """Every frame of every parked goroutine (inlined ones included), with its file:line,
    equal to what Go's own SIGQUIT dump prints with GOTRACEBACK=system: the innermost one
    named by its call as Go names it (`runtime.gopark`'s line is that of its mcall, not the
    next), and `created by` (function, the line of its `go` statement, the creating
    goroutine) as Go prints it; the labelled goroutine's pprof labels."""
    server = GoServer(_build(release, variant), env={"GOTRACEBACK": "system"})
    try:
        before = server.settle()
        out = run_stackdump("-p", str(server.pid), "--coroutines", "--mode", "full_with_inline")
        theirs = _gos_frames(server.quit())
    finally:
        server.stop()
    assert out.returncode in (0, 1), out.stderr
    ours = {c.tid: c for c in parse_report(out.stdout).coroutines}
    compared = 0
    for goid, (frames, created, parent) in theirs.items():
        section = ours.get(goid)
        parked = section is not None and section.keys.get("go_status") == "waiting"
        if not parked or not frames or frames[0][0] != "runtime.gopark":
            continue  # running, or in a system call: no fixed answer
        if _own(before.get(goid, (None, []))[1]) != _own(f for f, _, _ in frames):
            continue  # moved between the dumps
        mine = [(m[1], m[2], int(m[3])) for m in map(_FRAME.match, section.frames) if m]
        assert mine == frames, (goid, section.frames, frames)
        if goid != 1:
            assert section.keys.get("created_by", "").strip('"') == created, (goid, created)
        assert section.keys.get("parent_goroutine") == parent, (goid, section.keys, parent)
        compared += 1
    assert compared >= 16, (compared, sorted(theirs), sorted(ours))
    labelled = [c for c in ours.values() if any("main.parkedWithLabels" in f for f in c.frames)]
    assert len(labelled) == 1, out.stdout
    assert labelled[0].keys.get("labels") == "request=42,tenant=acme", labelled[0].keys


def _delve(pid: int) -> dict:
    """goroutine id -> (wait reason, physical pcs, function names with the inlined ones),
    innermost first, from Debian's delve."""
    import go_toolchains

    try:
        dlv = go_toolchains.delve()
    except (OSError, RuntimeError) as e:
        if ON_CI:
            pytest.fail(f"delve: {e}")
        pytest.skip(f"delve unavailable: {e}")
    out = subprocess.run(
        [
            str(dlv),
            "attach",
            str(pid),
            "--allow-non-terminal-interactive=true",
            "--check-go-version=false",
        ],  # fmt: skip
        input="goroutines -t 100\nquit -c\n",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TERM": "dumb"},
    ).stdout
    found: dict = {}
    current = None
    for line in re.sub(r"\x1b\[[0-9;]*m", "", out).splitlines():
        head = re.match(r"[ *]*Goroutine (\d+) - .*\[([^\]]*)\]\s*$", line)
        if head:
            current = found[int(head[1])] = (head[2].split(" ")[0], [], [])
            continue
        frame = re.match(r"\s+\d+\s+0x([0-9a-f]+) in (\S+)", line)
        if frame and current is not None:
            current[2].append(frame[2])
            pc = int(frame[1], 16)
            if not current[1] or current[1][-1] != pc:  # inlined: the same pc again
                current[1].append(pc)
    assert found, out
    return found


def _our_pcs(pid: int) -> dict:
    import jsonschema

    out = run_stackdump(
        "-p", str(pid), "--coroutines", "--format", "json", "--mode", "full_with_inline"
    )
    assert out.returncode in (0, 1), out.stderr
    document = json.loads(out.stdout)
    schema = json.loads((TARGETS.parent.parent / "docs" / "json-schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(document)
    assert any("goroutine" in t.get("runtime", {}) for t in document["threads"])
    return {
        c["coroutine_id"]: (
            [f["pc"] for f in c["frames"]],
            [
                n
                for f in c["frames"]
                for n in [*(i["function"] for i in f["inlined"]), f["function"]]
            ],
        )
        for c in document["coroutines"]
    }


@pytest.mark.parametrize("release", RELEASES)
def test_goroutines_agree_with_delve(release):
    """Frame for frame with delve on the DWARF build; delve cannot list the goroutines of a
    `-s -w` build ("could not find goroutine array"), so the stripped build, whose code is
    the same bytes at the same addresses, must give the DWARF build's stacks for main.go's
    15 parked goroutines."""
    stacks = {}
    for variant in ("dwarf", "stripped"):
        server = GoServer(_build(release, variant))
        try:
            server.settle()
            ours = _our_pcs(server.pid)
            theirs = _delve(server.pid) if variant == "dwarf" else None
            server.settle()  # still parked: delve detached and left it running
            again = _our_pcs(server.pid) if theirs is not None else {}
        finally:
            server.stop()
        if theirs is not None:
            compared = 0
            for goid, (reason, pcs, names) in theirs.items():
                moved = goid not in ours or ours[goid] != again.get(goid)
                if moved or reason in ("running", "syscall"):
                    # Running (in a thread's section), or it moved around delve's look (the
                    # runtime's own may wake): no fixed answer.
                    continue
                our_pcs, our_names = ours[goid]
                assert our_pcs == pcs, (goid, [hex(p) for p in our_pcs], [hex(p) for p in pcs])
                assert our_names == names, (goid, our_names, names)
                compared += 1
            assert compared >= 15, (sorted(theirs), sorted(ours))
        main_pcs = _main_pcs(_build(release, "dwarf"))
        stacks[variant] = Counter(
            (tuple(pcs), tuple(names))
            for pcs, names in ours.values()
            if any(pc in main_pcs for pc in pcs)
        )
    assert sum(stacks["dwarf"].values()) == 16, stacks["dwarf"]
    assert stacks["stripped"] == stacks["dwarf"]


class _Functions:
    """The code of main.go's parked functions (from the DWARF build's symbols)."""

    def __init__(self, binary: Path) -> None:
        text = subprocess.run(["nm", "-n", str(binary)], capture_output=True, text=True).stdout
        rows = [line.split() for line in text.splitlines() if len(line.split()) == 3]
        self.ranges = [
            (int(row[0], 16), int(rows[i + 1][0], 16))
            for i, row in enumerate(rows[:-1])
            if row[2].startswith(("main.parked", "main.chain"))
        ]

    def __contains__(self, pc: int) -> bool:
        return any(start <= pc < end for start, end in self.ranges)


def _main_pcs(binary: Path) -> _Functions:
    return _Functions(binary)


@pytest.mark.parametrize("release", ["1.19", RELEASES[-1]])
def test_goroutines_of_a_core_equal_the_live_ones(release, tmp_path):
    """gcore's core of a `-s -w` server: the same goroutines, keys and frames as the live
    dump taken just before (while everything stayed parked), and each thread's goroutine."""
    server = GoServer(_build(release, "stripped"))
    try:
        server.settle()
        live = run_stackdump("-p", str(server.pid), "--coroutines", "--mode", "fast")
        core = tmp_path / "core"
        subprocess.run(["gcore", "-o", str(core), str(server.pid)], capture_output=True, check=True)
        server.settle()  # nothing moved meanwhile
    finally:
        server.stop()
    dumped = run_stackdump(
        "--core", f"{core}.{server.pid}", "--coroutines", "--mode", "fast", "--no-debuginfod"
    )
    assert dumped.returncode in (0, 1), dumped.stderr
    ours, theirs = _goroutines(live.stdout), _goroutines(dumped.stdout)
    # main.go's 15 parked goroutines stay put between the two (server.settle() above checks
    # it); the runtime's own (the scavenger, GC workers) may wake in between.
    mains = {
        goid: v
        for goid, v in ours.items()
        if any(n in PARKED or n == "main.parkedOnMutex" for n in v[1])
    }
    assert len(mains) == 15 and set(mains) <= set(theirs), (sorted(ours), sorted(theirs))
    for goid, (keys, names) in mains.items():
        wanted = {k: v for k, v in keys.items() if k in ("go_status", "wait_reason")}
        assert {k: theirs[goid][0].get(k) for k in wanted} == wanted, goid
        assert theirs[goid][1] == names, goid
    threads = {t.tid: t.keys for t in parse_report(dumped.stdout).threads}
    assert any(k.get("goroutine") == "1" for k in threads.values()), threads


@pytest.mark.parametrize("variant", ["dwarf", "stripped"])
@pytest.mark.parametrize("release", ["1.19", RELEASES[-1]])
def test_a_goroutine_blocked_in_c_through_cgo(release, variant):
    """A cgo call: its C code runs on the thread's system stack (g0), whose frames are C's
    (named by their symbols when it has them), ending where the call switched stacks
    (runtime.asmcgocall); the thread names the goroutine it serves, and that goroutine's own
    frames, the Go side of the call, are its --coroutines section. The C linker puts C code
    before Go's in .text, which Go's function table must not count from."""
    binary = _build(release, variant, TARGETS / "gocgo" / "main.go", cgo=True)
    process = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("ready go ")
        deadline = time.monotonic() + 30  # until the main thread is in pause()
        while not Path(f"/proc/{process.pid}/syscall").read_text().startswith("34 "):
            assert time.monotonic() < deadline
            time.sleep(0.01)  # polling a condition with a deadline
        out = run_stackdump("-p", str(process.pid), "--coroutines", "--mode", "fast")
    finally:
        process.kill()
        process.wait()
    assert out.returncode in (0, 1), out.stderr
    report = parse_report(out.stdout)
    main = report.thread(process.pid)
    names = main.functions()
    assert names[0] == "pause" and names[-1] == "runtime.asmcgocall", main.frames
    if variant == "dwarf":
        assert names[-2].endswith("_Cfunc_block_in_c"), main.frames
    assert main.keys["go_status"] == "syscall" and main.keys["go_stack"] == "g0", main.keys
    goroutine = next(c for c in report.coroutines if str(c.tid) == main.keys["goroutine"])
    chain = [f.split(" at ")[0] for f in goroutine.frames]
    assert chain[chain.index("main.callIntoC") :] == [
        "main.callIntoC", "main.main", "runtime.main", "runtime.goexit"
    ], goroutine.frames  # fmt: skip


def test_a_goroutine_that_runs_while_it_is_read_is_reported_not_unwound():
    """A torn read degrades that goroutine only. While one parked goroutine's stack is being
    read, its saved pc is rewritten in the target (through /proc/PID/mem, then restored), as
    if it had run meanwhile: that goroutine says so, every other one is unwound."""
    from stackdump import proc
    from stackdump.capture.remote import RemoteMemory
    from stackdump.elf.image import ElfObject
    from stackdump.runtimes.go import goroutines

    binary = _build(RELEASES[-1], "stripped")
    server = GoServer(binary)
    try:
        server.settle()
        memory = RemoteMemory(server.pid)
        elf = ElfObject.open(str(binary))
        try:
            runtime = goroutines.find_runtime(
                memory, elf, 0, {}, server.pid, proc.list_tids(server.pid)
            )
        finally:
            elf.close()
        layout = runtime.layout
        maps = proc.read_maps(server.pid)
        first = goroutines.goroutines(memory, runtime, maps, 1 << 20, 100_000)
        victim = next(g for g in first if ("wait_reason", "sleep") in g.runtime_keys)
        pc_at = victim.tid + layout.sched + layout.pc

        class Racing:
            """The target's memory, where the victim 'runs' while its stack is copied."""

            def __init__(self) -> None:
                self.saved = b""

            def read(self, address: int, size: int) -> bytes:
                data = memory.read(address, size)
                if address == victim.stack_base and not self.saved:
                    with open(f"/proc/{server.pid}/mem", "r+b", buffering=0) as mem:
                        mem.seek(pc_at)
                        self.saved = mem.read(8)
                        mem.seek(pc_at)
                        mem.write((int.from_bytes(self.saved, "little") + 1).to_bytes(8, "little"))
                return data

            def read_many(self, addresses, size: int):
                return [self.read(a, size) if a else b"" for a in addresses]

            def read_ranges(self, ranges):
                return [self.read(a, size) for a, size in ranges]

        racing = Racing()
        try:
            second = goroutines.goroutines(racing, runtime, maps, 1 << 20, 100_000)
        finally:
            with open(f"/proc/{server.pid}/mem", "r+b", buffering=0) as mem:
                mem.seek(pc_at)
                mem.write(racing.saved)
        assert racing.saved
        server.settle()  # it slept on, untouched
    finally:
        server.stop()
    by_id = {g.coroutine_id: g for g in second}
    assert by_id[victim.coroutine_id].error == "it ran while its stack was read"
    assert by_id[victim.coroutine_id].regs is None
    # Every other goroutine reads as it did before (the same frames' registers and errors).
    before = {g.coroutine_id: (g.error, g.regs) for g in first}
    others = {
        g.coroutine_id: (g.error, g.regs) for g in second if g is not by_id[victim.coroutine_id]
    }
    assert others == {k: v for k, v in before.items() if k != victim.coroutine_id}
    assert sum(not error for error, _ in others.values()) >= 20, others


def _go_crash_dump(text: str) -> dict:
    """goroutine id -> (state, pcs of its physical frames, innermost first) from the
    traceback Go prints as it crashes with GOTRACEBACK=crash (every frame line but an
    inlined one ends in `pc=0x...`)."""
    found = {}
    for goid, state, rows in _goroutine_blocks(text):
        pcs = [int(m[1], 16) for r in rows if (m := re.search(r" pc=0x([0-9a-f]+)$", r))]
        found[goid] = (state, pcs)
    return found


@pytest.mark.parametrize("variant", ["dwarf", "stripped"])
def test_arm64_goroutines_in_a_core_equal_gos_own_crash_dump(variant, tmp_path):
    """An arm64 Go server under qemu-aarch64, made to crash by SIGQUIT with GOTRACEBACK=crash:
    Go prints every goroutine's frames with their pcs, qemu writes the core, and
    `--core --coroutines` gives each parked goroutine's pcs exactly (unwound through the
    arm64 frame layout: the return address at sp, the caller's frame pointer below it)."""
    import resource
    import signal

    from conftest import need_tool

    qemu = need_tool("qemu-aarch64", "qemu-user")
    binary = _build(RELEASES[-1], variant, arch="arm64")

    def allow_cores():
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    process = subprocess.Popen(
        [qemu, str(binary)],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "GOTRACEBACK": "crash"},
        preexec_fn=allow_cores,
    )
    server = GoServer.__new__(GoServer)
    server.process, server.pid = process, process.pid
    try:
        assert process.stdout.readline().startswith("ready go ")
        server.settle()
        process.send_signal(signal.SIGQUIT)
        _, crash = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    cores = list(tmp_path.glob("qemu_*.core"))
    assert len(cores) == 1, (list(tmp_path.iterdir()), crash[-2000:])
    theirs = _go_crash_dump(crash)
    out = run_stackdump(
        "--core", str(cores[0]), "--exe", str(binary), "--coroutines", "--format", "json",
        "--mode", "disabled", "--no-debuginfod",
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    ours = {
        c["coroutine_id"]: [f["pc"] for f in c["frames"]]
        for c in json.loads(out.stdout)["coroutines"]
    }
    compared = 0
    for goid, (state, pcs) in theirs.items():
        if state in ("running", "runnable", "syscall", "idle") or goid == 0:
            # Not parked: on a thread, or moved by the crash itself (SIGQUIT interrupts the
            # main goroutine's read, which Go retries: runnable for a moment); 0: an m's g0.
            continue
        assert ours.get(goid) == pcs, (goid, state, [hex(p) for p in ours.get(goid, [])],
                                       [hex(p) for p in pcs])  # fmt: skip
        compared += 1
    assert compared >= 15, (sorted(theirs), sorted(ours))


def test_a_goroutines_pprof_labels_are_its_profile_samples_labels(tmp_path):
    """A profile with --coroutines carries the labelled goroutine's pprof labels as its
    samples' labels, read back by `go tool pprof`."""
    release = RELEASES[-1]
    server = GoServer(_build(release, "stripped"))
    out = tmp_path / "goroutines.pb.gz"
    try:
        server.settle()
        profiled = run_stackdump(
            "-p", str(server.pid), "--coroutines", "--samples", "2", "--interval-ms", "10",
            "--format", "pprof", "-o", str(out),
        )  # fmt: skip
    finally:
        server.stop()
    assert profiled.returncode == 0, profiled.stderr
    go = _toolchain(release) / "bin" / "go"
    raw = subprocess.run(
        [str(go), "tool", "pprof", "-raw", str(out)],
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "HOME": str(tmp_path),
            "GOTOOLCHAIN": "local",
            "GOROOT": str(_toolchain(release)),
            "GOCACHE": str(CACHE / "go-targets" / f"gocache-{release}"),
        },
    ).stdout
    labelled = [line for line in raw.splitlines() if "tenant:[acme]" in line]
    assert len(labelled) == 1 and "request:[42]" in labelled[0], raw
