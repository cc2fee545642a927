"""Issue 17 (boost.context part): suspended fibers of a real boost.fiber program, found from
outside by the return addresses of its context switches, unwound whole, in every build the
issue names: frame pointers or not, DWARF or symbols only."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ON_CI, need_tool
from helpers import TARGETS, Target, parse_report, read_syscall_line, run_stackdump

SLEEPERS, WAITERS = 5, 3
SHARED = ["-lboost_fiber", "-lboost_context"]
VARIANTS = {
    "O2-g": (["-O2", "-g"], False, SHARED),
    "O2-fp-g": (["-O2", "-g", "-fno-omit-frame-pointer"], False, SHARED),
    "O2-symbols-only": (["-O2", "-g"], True, SHARED),
    # jump_fcontext in a fixed-address executable, whose first segment's ELF address is not
    # its file offset: the switch functions are found at the load bias, not the mapping's
    # start less its offset.
    "O2-static-boost-no-pie": (
        ["-O2", "-g", "-no-pie"],
        False,
        ["-Wl,-Bstatic", *SHARED, "-Wl,-Bdynamic"],
    ),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def fibers(request, live, build_dir):
    flags, strip_debug, libraries = VARIANTS[request.param]
    binary = build_dir / f"fibers-{request.param}"
    if not binary.exists():
        _build_boost("fibers.cpp", binary, [*flags, "-o", str(binary)], libraries)
        if strip_debug:
            subprocess.run(["strip", "--strip-debug", str(binary)], check=True)
    with Target(binary, {}, extra_args=[str(SLEEPERS), str(WAITERS)]).wait_ready() as target:
        yield target, request.param


def _build_boost(source: str, binary: Path, flags, libraries) -> None:
    """A boost.fiber target from tests/targets, or a skip (a failure on CI) without it."""
    done = subprocess.run(
        ["g++", *flags, str(TARGETS / source), *libraries], capture_output=True, text=True
    )
    if done.returncode != 0:
        reason = f"boost.fiber is needed (apt install libboost-fiber-dev): {done.stderr[-300:]}"
        if ON_CI:
            pytest.fail(reason)
        pytest.skip(reason)


def _chain(section, names):
    functions = [f.split(" at ")[0].split(" in ")[0] for f in section.frames]
    positions = [functions.index(n) for n in names if n in functions]
    return len(positions) == len(names) and positions == sorted(positions)


def test_every_parked_fiber_is_found_with_its_chain(fibers):
    target, variant = fibers
    mode = "disabled" if "symbols-only" in variant else "fast"
    out = run_stackdump("-p", str(target.pid), "--coroutines", "--mode", mode)
    assert out.returncode == 0, out.stderr
    report = parse_report(out.stdout)
    sleeping = [
        c
        for c in report.coroutines
        if _chain(c, ["fiber_sleep_leaf", "fiber_sleep_middle", "fiber_sleep_entry"])
    ]
    locking = [c for c in report.coroutines if _chain(c, ["fiber_lock_leaf", "fiber_lock_entry"])]
    assert len(sleeping) == SLEEPERS, [c.frames for c in report.coroutines]
    assert len(locking) == WAITERS
    for c in sleeping + locking:
        assert c.status == "ok" and c.keys["capture_method"] == "saved_context"
        assert c.keys["unwind_status"] == "end_of_stack" and "error" not in c.keys, c.keys
    # the scheduler's own dispatcher fiber is suspended too; nothing else is
    assert len(report.coroutines) == SLEEPERS + WAITERS + 1
    assert report.coroutine_stats == {"found": 9, "ok": 9, "truncated": 0}
    # no thread was disturbed: the main thread is still in its read
    assert report.thread(target.pid).functions()[:1] == ["read"]


def test_without_the_option_nothing_changes(fibers):
    target, _ = fibers
    out = run_stackdump("-p", str(target.pid), "--mode", "disabled")
    assert out.returncode == 0, out.stderr
    assert "----- fiber" not in out.stdout and "coroutines:" not in out.stdout
    assert parse_report(out.stdout).coroutines == []


def test_a_process_without_fibers_has_none(live, threads_bin):
    with Target(threads_bin("O2"), {"sleep": 2}).wait_ready() as target:
        out = run_stackdump("-p", str(target.pid), "--coroutines", "--mode", "disabled")
    assert out.returncode == 0, out.stderr
    report = parse_report(out.stdout)
    assert report.coroutines == [] and report.coroutine_stats == {
        "found": 0,
        "ok": 0,
        "truncated": 0,
    }


def test_json_and_folded_carry_the_fibers(fibers):
    import json
    from pathlib import Path

    jsonschema = pytest.importorskip("jsonschema")
    target, _ = fibers
    schema = json.loads(
        (Path(__file__).resolve().parent.parent / "docs" / "json-schema.json").read_text()
    )
    out = run_stackdump(
        "-p", str(target.pid), "--coroutines", "--format", "json", "--mode", "disabled"
    )
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    jsonschema.Draft202012Validator(schema).validate(document)
    assert len(document["coroutines"]) == SLEEPERS + WAITERS + 1
    folded = run_stackdump("-p", str(target.pid), "--coroutines", "--format", "folded").stdout
    lines = [line for line in folded.splitlines() if line.startswith("fiber;")]
    sleepers = [
        line for line in lines if "fiber_sleep_entry;fiber_sleep_middle;fiber_sleep_leaf" in line
    ]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in sleepers) == SLEEPERS


# The register slots both switch functions leave below the return address: boost.context's
# `jump_fcontext` (lea -0x38 then movs, boost 1.74) and brpc's `bthread_jump_fcontext` (six
# pushes then lea -0x8), read by `layout` from their machine code.
EXPECTED_SLOTS = ((3, 0x28), (6, 0x30), (12, 0x08), (13, 0x10), (14, 0x18), (15, 0x20))
BRPC = Path(__file__).resolve().parent.parent.parent / "shared" / "third_party"


def _layouts(library, names):
    from stackdump.elf.image import ElfObject
    from stackdump.runtimes.fcontext import layout

    elf = ElfObject.open(str(library))
    try:
        return {
            name: layout(elf.read_vaddr_range(start, 96), start, name)
            for name, start in elf.symbols().named(set(names))
        }
    finally:
        elf.close()


def test_layout_of_boost_context_jump_fcontext():
    library = Path("/usr/lib/x86_64-linux-gnu/libboost_context.so.1.74.0")
    if not library.exists():
        reason = "libboost-context1.74.0 is needed (apt install libboost-fiber-dev)"
        if ON_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    found = _layouts(library, ["jump_fcontext", "ontop_fcontext"])
    for name in ("jump_fcontext", "ontop_fcontext"):
        assert found[name] is not None, name
        assert (found[name].frame, found[name].slots) == (0x38, EXPECTED_SLOTS)
        assert found[name].kind == "fiber"


def test_layout_of_brpc_bthread_jump_fcontext(tmp_path):
    import tarfile

    archives = sorted(BRPC.glob("brpc-*.tar.gz"))
    if not archives:
        reason = f"the brpc source archive is needed ({BRPC})"
        if ON_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    with tarfile.open(archives[0]) as archive:
        for name in ("brpc/src/bthread/context.cpp", "brpc/src/bthread/context.h"):
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extractfile(name).read())
    library = tmp_path / "libcontext.so"
    subprocess.run(
        ["g++", "-shared", "-fPIC", "-O2", "-I", str(tmp_path / "brpc" / "src"),
         str(tmp_path / "brpc/src/bthread/context.cpp"), "-o", str(library)],
        check=True,
    )  # fmt: skip
    found = _layouts(library, ["bthread_jump_fcontext"])["bthread_jump_fcontext"]
    assert found is not None
    assert (found.frame, found.slots, found.kind) == (0x38, EXPECTED_SLOTS, "bthread")


def test_layout_refuses_other_code():
    from stackdump.runtimes.fcontext import layout

    assert layout(b"\x55\x48\x89\xe5\xc3", 0) is None  # push %rbp; mov %rsp,%rbp; ret
    assert layout(b"", 0) is None


# brpc, built once per machine from the source archive into the test cache (about 5 minutes
# on 2 cores): only its static library, which is all a bthread program links.
BRPC_DEPS = (
    "apt install cmake libgflags-dev libprotobuf-dev protobuf-compiler libprotoc-dev "
    "libleveldb-dev libssl-dev"
)


@pytest.fixture(scope="session")
def brpc_library() -> Path:
    import hashlib
    import os
    import tarfile

    archives = sorted(BRPC.glob("brpc-*.tar.gz"))
    if not archives or shutil.which("cmake") is None:
        reason = f"the brpc source archive ({BRPC}) and its build tools ({BRPC_DEPS}) are needed"
        if ON_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    digest = hashlib.sha256(archives[0].read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("STACKDUMP_TEST_CACHE", Path.home() / ".cache" / "stackdump-tests"))
    root = cache / f"brpc-{digest}"
    output = root / "brpc" / "build" / "output"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                if (member.isfile() or member.isdir()) and ".." not in member.name:
                    archive.extract(member, root)
        build = root / "brpc" / "build"
        build.mkdir()
        for command in (
            ["cmake", "..", "-DBUILD_BRPC_TOOLS=OFF", "-DDOWNLOAD_GTEST=OFF",
             "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
            ["make", f"-j{os.cpu_count() or 2}", "brpc-static"],
        ):  # fmt: skip
            done = subprocess.run(command, cwd=build, capture_output=True, text=True)
            if done.returncode != 0:
                reason = f"building brpc failed ({BRPC_DEPS}?): {done.stderr[-500:]}"
                if ON_CI:
                    pytest.fail(reason)
                pytest.skip(reason)
        (root / ".complete").touch()
    return output


@pytest.fixture(scope="module", params=["O2-g", "O2-fp-g", "O2-symbols-only"])
def bthreads(request, live, build_dir, brpc_library):
    binary = build_dir / f"bthreads-{request.param}"
    if not binary.exists():
        fp = ["-fno-omit-frame-pointer"] if "fp" in request.param else []
        subprocess.run(
            ["g++", "-O2", "-g", *fp, "-I", str(brpc_library / "include"),
             str(TARGETS / "bthreads.cpp"), str(brpc_library / "lib" / "libbrpc.a"),
             "-lgflags", "-lprotobuf", "-lleveldb", "-lssl", "-lcrypto", "-ldl", "-lpthread",
             "-lz", "-o", str(binary)],
            check=True,
        )  # fmt: skip
        if request.param == "O2-symbols-only":
            subprocess.run(["strip", "--strip-debug", str(binary)], check=True)
    with Target(binary, {}, extra_args=["5", "3", "2", "1"]).wait_ready() as target:
        yield target, request.param


def test_every_parked_bthread_is_found_with_its_chain(bthreads):
    target, variant = bthreads
    mode = "disabled" if "symbols-only" in variant else "fast"
    out = run_stackdump("-p", str(target.pid), "--coroutines", "--mode", mode)
    assert out.returncode == 0, out.stderr
    report = parse_report(out.stdout)
    found = report.coroutines
    assert all(c.name == "bthread" for c in found)
    sleeping = [
        c
        for c in found
        if _chain(c, ["bthread_usleep", "bt_sleep_leaf", "bt_sleep_middle", "bt_sleep_entry"])
    ]
    locking = [c for c in found if _chain(c, ["bt_lock_leaf", "bt_lock_entry"])]
    butex = [c for c in found if _chain(c, ["bt_butex_leaf", "bt_butex_entry"])]
    assert (len(sleeping), len(locking), len(butex)) == (5, 3, 2), [c.frames for c in found]
    assert len(found) == 10
    # Ids and entries from the TaskMeta pool: by DWARF, or by the layout the pool agrees with.
    assert len({c.tid for c in found}) == 10 and all(c.tid >> 32 for c in found)
    entries = {c.keys.get("entry") for c in found}
    assert entries == {'"bt_sleep_entry"', '"bt_lock_entry"', '"bt_butex_entry"'}, entries
    for c in found:
        assert c.keys["unwind_status"] == "end_of_stack" and "error" not in c.keys, c.keys
        assert _chain(c, ["bthread::TaskGroup::task_runner(long)"]) or mode == "disabled"


def test_group_merges_fibers_parked_alike(fibers):
    target, _ = fibers
    out = run_stackdump("-p", str(target.pid), "--coroutines", "--group", "--mode", "disabled")
    assert out.returncode == 0, out.stderr
    heads = re.findall(r"^----- (\d+) fibers? status=ok frames=\d+ -----$", out.stdout, re.M)
    counts = sorted(int(count) for count in heads)
    assert counts == [1, WAITERS, SLEEPERS], heads


def test_a_context_in_unreadable_memory_degrades_that_coroutine_only():
    """A hit whose memory is gone by the time it is read (a fiber freed meanwhile, a stale
    or hostile word) becomes one coroutine with an error, never an exception."""
    import os

    from stackdump.capture.pages import MapIndex
    from stackdump.capture.remote import RemoteMemory
    from stackdump.runtimes.fcontext import SavedContext, SwitchFunction, context_snapshot
    from stackdump.types import ThreadStatus

    switch = SwitchFunction(0, 0x38, EXPECTED_SLOTS, "jump_fcontext")
    memory = RemoteMemory(os.getpid())
    try:
        snapshot = context_snapshot(SavedContext(0x10, switch), memory, MapIndex([]), 4096)
    finally:
        memory.close()
    assert snapshot.status is ThreadStatus.THREAD_EXITED and snapshot.error


def test_bthread_ids_and_entries_agree_with_brpcs_gdb_script(bthreads, brpc_library):
    """brpc's tools/gdb_bthread_stack.py (`bthread_begin`, `bthread_list`) under gdb on the
    same process lists each bthread's id and entry function; ours are read from the same
    TaskMeta pool without stopping anything, and join each to its stack."""
    target, variant = bthreads
    out = run_stackdump("-p", str(target.pid), "--coroutines", "--mode", "disabled")
    assert out.returncode == 0, out.stderr
    ours = {c.tid: c.keys.get("entry", "").strip('"') for c in parse_report(out.stdout).coroutines}
    if "symbols-only" in variant:
        # No DWARF: the script cannot run, and our layout is brpc 1.13+'s; ids still come.
        entries = {"bt_sleep_entry": 5, "bt_lock_entry": 3, "bt_butex_entry": 2}
        assert sorted(ours.values()) == sorted(n for n, k in entries.items() for _ in range(k))
        assert all(tid >> 32 for tid in ours)  # a version in the high half: a bthread_t
        return
    if shutil.which("gdb") is None:
        if ON_CI:
            pytest.fail("gdb is the referee")
        pytest.skip("gdb is the referee")
    root = brpc_library.parent.parent.parent
    script = root / "brpc" / "tools" / "gdb_bthread_stack.py"
    shown = subprocess.run(
        ["gdb", "-batch", "-nx", "-p", str(target.pid), "-ex", f"source {script}",
         "-ex", "bthread_begin", "-ex", "bthread_list", "-ex", "bthread_end"],
        capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    theirs = {
        int(tid): name
        for tid, name in re.findall(r"^#\d+\s+(\d+)\s+0x[0-9a-f]+ <([A-Za-z_]\w*)", shown, re.M)
    }
    assert len(theirs) == 11, shown[-800:]
    # theirs lists every bthread with a stack, the one running on a worker too
    running = {tid for tid, name in theirs.items() if name == "bt_spin_entry"}
    assert len(running) == 1
    assert ours == {tid: name for tid, name in theirs.items() if tid not in running}


def test_a_worker_running_a_bthread_names_it(bthreads):
    """The bthread spinning on a worker is not suspended: it is that worker's thread section,
    and the worker's line says which bthread it runs (`bthread=ID`, by the stack its sp is in)."""
    target, variant = bthreads
    out = run_stackdump("-p", str(target.pid), "--coroutines", "--mode", "disabled")
    assert out.returncode == 0, out.stderr
    report = parse_report(out.stdout)
    workers = [t for t in report.threads if "bthread" in t.keys]
    assert len(workers) == 1, [t.keys for t in report.threads]
    worker = workers[0]
    assert _chain(worker, ["bt_spin_leaf", "bt_spin_entry"]), worker.frames
    spinner_id = int(worker.keys["bthread"])
    assert spinner_id >> 32 and spinner_id not in {c.tid for c in report.coroutines}
    assert len(report.coroutines) == 10  # the spinner is not among the suspended


def test_a_profile_counts_suspended_fibers(fibers):
    target, variant = fibers
    out = run_stackdump(
        "-p", str(target.pid), "--coroutines", "--samples", "3", "--interval-ms", "20",
        "--mode", "disabled", "--format", "folded",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    counts = {}
    for line in out.stdout.splitlines():
        stack, count = line.rsplit(" ", 1)
        counts[stack] = counts.get(stack, 0) + int(count)
    chain = "fiber_sleep_entry;fiber_sleep_middle;fiber_sleep_leaf"
    sleepers = sum(
        n for stack, n in counts.items() if stack.startswith("fiber;") and chain in stack
    )
    assert sleepers == 3 * SLEEPERS, counts


def test_a_fiber_resumed_while_its_stack_is_read_is_reported_not_unwound(fibers):
    """A fiber that runs between the read of its saved registers and the re-read after its
    stack rewrites those registers when it suspends again. The target is made to do exactly
    that mid-read (the slot where jump_fcontext keeps rbx is rewritten through
    /proc/PID/mem while the stack is copied): stackdump says so for that fiber."""
    import os

    from stackdump.capture.pages import MapIndex
    from stackdump.capture.remote import RemoteMemory
    from stackdump.proc import read_maps
    from stackdump.runtimes.fcontext import SavedContext, SwitchFunction, context_snapshot
    from stackdump.types import ThreadStatus

    target, _ = fibers
    out = run_stackdump("-p", str(target.pid), "--coroutines", "--mode", "disabled")
    assert out.returncode == 0, out.stderr
    handle = parse_report(out.stdout).coroutines[0].tid
    switch = SwitchFunction(0, 0x38, EXPECTED_SLOTS, "jump_fcontext")
    rbx_slot = handle + dict(EXPECTED_SLOTS)[3]

    class ResumedMidRead(RemoteMemory):
        reads = 0

        def read(self, address: int, size: int) -> bytes:
            self.reads += 1
            data = super().read(address, size)
            if self.reads == 2:  # the stack: the fiber runs and suspends again meanwhile
                with open(f"/proc/{target.pid}/mem", "r+b", buffering=0) as mem:
                    mem.seek(rbx_slot)
                    saved = mem.read(8)
                    mem.seek(rbx_slot)
                    mem.write(bytes(b ^ 0xFF for b in saved))
            return data

    index = MapIndex(read_maps(target.pid))
    memory = ResumedMidRead(target.pid)
    with open(f"/proc/{target.pid}/mem", "rb", buffering=0) as mem:
        mem.seek(rbx_slot)
        kept = mem.read(8)
    try:
        plain = RemoteMemory(target.pid)
        as_found = context_snapshot(SavedContext(handle, switch), plain, index, 1 << 20)
        plain.close()
        assert as_found.status is ThreadStatus.OK and as_found.regs is not None
        resumed = context_snapshot(SavedContext(handle, switch), memory, index, 1 << 20)
    finally:
        memory.close()
        with open(f"/proc/{target.pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(rbx_slot)
            mem.write(kept)  # the module's later tests dump this target again
    assert memory.reads == 3
    assert resumed.status is ThreadStatus.THREAD_EXITED and resumed.regs is None
    assert resumed.error == "it was resumed while its stack was read"
    assert os.path.exists(f"/proc/{target.pid}")


def test_fibers_in_a_core_equal_the_live_dump(fibers, tmp_path):
    """--coroutines on gcore's core of the same process: the same suspended fibers, by
    handle, with the same frames (nothing runs in between: they are parked)."""
    need_tool("gcore", "gdb")
    target, _ = fibers
    live = run_stackdump("-p", str(target.pid), "--coroutines", "--mode", "disabled")
    assert live.returncode == 0, live.stderr
    subprocess.run(
        ["gcore", "-o", str(tmp_path / "core"), str(target.pid)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    core = tmp_path / f"core.{target.pid}"
    dumped = run_stackdump("--core", str(core), "--coroutines", "--mode", "disabled")
    assert dumped.returncode == 0, dumped.stderr
    ours = {c.tid: c.frames for c in parse_report(live.stdout).coroutines}
    theirs = {c.tid: c.frames for c in parse_report(dumped.stdout).coroutines}
    assert len(ours) == SLEEPERS + WAITERS + 1, sorted(ours)
    assert theirs == ours


@pytest.fixture(scope="module")
def fiber_pool(live, build_dir):
    """tests/targets/fiber_pool.cpp, with its pool and runner threads blocked in read()."""
    binary = build_dir / "fiber_pool"
    if not binary.exists():
        _build_boost("fiber_pool.cpp", binary, ["-O2", "-g", "-pthread", "-o", str(binary)], SHARED)
    with Target(binary, {"pool": 1, "runner": 1}).wait_ready() as target:
        out = run_stackdump("-p", str(target.pid), "--coroutines", "--mode", "fast")
        maps = Path(f"/proc/{target.pid}/maps").read_text()
        pool_sp = int(read_syscall_line(target.pid, target.tid("pool")).split()[-2], 16)
        yield target, out, maps, pool_sp


def test_fibers_sharing_a_mapping_with_a_threads_stack_are_all_found(fiber_pool):
    """Twelve fibers whose stacks are slices of the one mapping that also holds a thread's
    stack (a pooled stack allocator, pthread_attr_setstack): every one found, with its
    chain; only the thread's own stack is left out, and nothing stale is reported."""
    target, out, maps, pool_sp = fiber_pool
    assert out.returncode == 0, out.stderr
    ranges = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in maps.splitlines()]
    shared = next((lo, hi) for lo, hi in ranges if lo <= pool_sp < hi)
    coroutines = parse_report(out.stdout).coroutines
    pool = [c for c in coroutines if _chain(c, ["pool_leaf", "pool_entry", "make_fcontext"])]
    assert len(pool) == 12, out.stdout
    assert all(shared[0] <= c.tid < shared[1] for c in pool), (shared, [c.tid for c in pool])
    for c in coroutines:  # every other one a whole stack too: no stale record unwound
        assert c.keys["status"] == "ok" and c.keys["unwind_status"] == "end_of_stack", c.keys
        assert c.functions()[-1] in ("make_fcontext", "clone3"), c.frames


def test_a_thread_running_a_fiber_ends_at_its_entry_and_shows_its_main_context(fiber_pool):
    """A thread blocked in read() inside a fiber: its stack ends where the fiber's began
    (make_fcontext's trampoline), a whole stack; the context it left to run the fiber is a
    section of its own, saying whose it is, unwound to the thread's start."""
    target, out, _, _ = fiber_pool
    runner = target.tid("runner")
    report = parse_report(out.stdout)
    section = report.thread(runner)
    functions = section.functions()
    assert functions[-1] == "make_fcontext" and "running_leaf" in functions, section.frames
    assert section.keys["unwind_status"] == "end_of_stack" and "error" not in section.keys
    mains = [c for c in report.coroutines if c.keys.get("main_context_of") == str(runner)]
    assert len(mains) == 1, out.stdout
    assert _chain(mains[0], ["runner_main", "runner_thread(void*)", "start_thread", "clone3"])


def test_which_saved_contexts_are_live():
    """The rule of `fcontext.live_contexts`, on addresses: in each stack (from a context
    stack's top, a thread's own top, or a mapping's end, down to the next), the first record
    met is live unless a thread runs there; below it, and anywhere in a stack a thread runs
    on, records are stale. A live record on a thread's own stack is that thread's."""
    from stackdump.capture.pages import MapIndex
    from stackdump.runtimes.fcontext import Found, SavedContext, SwitchFunction, live_contexts
    from stackdump.types import MemoryMap

    switch = SwitchFunction(0x1000, 0x38, ())
    one = MemoryMap(0x10000, 0x20000, "rw-p", 0, "00:00", 0, "")

    def live(records, tops=(), positions=None, own_tops=None):
        found = Found([SavedContext(sp, switch) for sp in records], list(tops))
        chosen = live_contexts(found, MapIndex([one]), positions or {}, own_tops or {})
        return [(c.sp, owner) for c, owner in chosen]

    # A suspended fiber (its top at 0x1fff8) and the stale record a resumed switch left below.
    assert live([0x1F000, 0x1E000], tops=[0x1FFF8]) == [(0x1F000, None)]
    # Two fibers side by side in one mapping: each its own stack.
    assert live([0x1F000, 0x17000], tops=[0x1FFF8, 0x17FF8]) == [(0x17000, None), (0x1F000, None)]
    # A fiber a thread runs: its records are stale.
    assert live([0x1E000], tops=[0x1FFF8], positions={0x1F000: 7}) == []
    # A thread on its own stack (top at 0x20000): stale records above and below its sp.
    assert live([0x1F800, 0x1E000], positions={0x1F000: 7}, own_tops={0x20000: 7}) == []
    # A thread running a fiber elsewhere: the record on its own stack is its main context.
    assert live([0x1F000], positions={0x50000: 7}, own_tops={0x20000: 7}) == [(0x1F000, 7)]
    # A thread whose top is unknown, below a fiber in the same mapping: the fiber is live.
    assert live([0x1F000], tops=[0x1FFF8], positions={0x17000: 8}) == [(0x1F000, None)]


def test_fibers_unwound_from_remembered_walks_equal_fibers_walked_each(fibers):
    """Issue 31: coroutines parked alike are unwound once, the others checked against what
    that walk read (unwind/traces.py); the report is the one walking each one gives."""
    from stackdump import api
    from stackdump.engine import DumpOptions
    from stackdump.types import AnalysisOptions, CaptureOptions

    target, _ = fibers
    capture = CaptureOptions(pid=target.pid, coroutines=True)
    reports = [
        api.dump(api.Process(target.pid), DumpOptions(capture, AnalysisOptions(remember_unwinds=r)))
        for r in (True, False)
    ]
    remembered, walked = (
        {c.tid: (c.status, c.frames) for c in report.coroutines} for report in reports
    )
    assert len(remembered) >= SLEEPERS + WAITERS  # and the dispatcher
    assert remembered == walked


def _watched_coroutines(target) -> list:
    """(progress, function names) of each coroutine in a one-second --watch."""
    out = run_stackdump(
        "-p", str(target.pid), "--coroutines", "--watch", "1", "--interval-ms", "500",
        "--mode", "disabled", "--format", "json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    return [(c["progress"], [f["function"] for f in c["frames"]]) for c in document["coroutines"]]


def test_a_watch_tells_fibers_on_a_mutex_from_sleeping_ones(fibers):
    """--watch (issue 32): fibers waiting for a fiber mutex are blocked, sleeping ones are
    waiting, and none moved."""
    target, _ = fibers
    found = _watched_coroutines(target)
    lockers = [p for p, names in found if "fiber_lock_leaf" in names]
    sleepers = [p for p, names in found if "fiber_sleep_leaf" in names]
    assert lockers == ["blocked"] * WAITERS, found
    assert sleepers == ["waiting"] * SLEEPERS, found


def test_a_watch_tells_bthreads_on_a_mutex_from_sleeping_ones(bthreads):
    target, _ = bthreads
    found = _watched_coroutines(target)
    assert sorted(p for p, names in found if "bt_lock_leaf" in names) == ["blocked"] * 3, found
    assert [p for p, names in found if "bt_sleep_leaf" in names] == ["waiting"] * 5, found
    assert [p for p, names in found if "bt_butex_leaf" in names] == ["waiting"] * 2, found
