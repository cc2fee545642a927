"""Issue 31: the fast paths give the answers of the slow ones, and a small dump loads only
what it uses. In sampling, a thread that has not run since the last sample is counted from
its last capture (capture/unchanged.py): the profile must be the one every thread captured
every time gives, and a thread that did run must be captured again."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Iterator, Tuple

import pytest
from conftest import ON_CI
from helpers import ROLE_SYSCALL, Target, compile_target, run_stackdump, wait_for_syscall

from stackdump import api, sampling
from stackdump.arch import host
from stackdump.capture.live import kept_files_limit
from stackdump.capture.remote import RemoteMemory
from stackdump.capture.unchanged import UnchangedThreads, parse_signature
from stackdump.engine import DumpOptions
from stackdump.proc import KeptFiles, read_syscall
from stackdump.types import (
    AnalysisOptions,
    CaptureMethod,
    CaptureOptions,
    FpStatus,
    Frame,
    LocationMode,
    Registers,
    ThreadSnapshot,
    ThreadStatus,
    UnwindResult,
    UnwindStatus,
)

SAMPLES = 30


@pytest.fixture(scope="module")
def blocked(live, threads_bin):
    """Every thread blocked, none ever woken by the target itself."""
    roles = {"read": 2, "cond": 3, "sleep": 2, "epoll": 1}
    with Target(threads_bin("O2"), roles).wait_ready() as target:
        yield target


def _counts(profile) -> Counter:
    """(thread, its name, state, stack as function names, labels) -> thread-samples: every
    field a thread-sample carries but its index, its blocked call and its wchan. A nanosleep
    that a stop interrupted resumes as restart_syscall (wchan do_syscall_64): a profile that
    stops it at every sample says so from then on, one that counts it again says what its
    first capture saw, the call the program made."""
    stacks = [tuple(f.function for f in stack) for stack in profile.stacks]
    counts: Counter = Counter()
    for r in profile.runs:
        counts[(r.tid, profile.names[r.tid], r.state, stacks[r.stack], r.labels)] += r.count
    return counts


@pytest.fixture(scope="module")
def many_blocked(live, threads_bin):
    """More threads than a series keeps files open for under a soft limit of 1,024 open
    files, which this fixture sets for its tests (the rest are read by opening their files
    each time: `capture.live.kept_files_limit`)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        assert kept_files_limit() < 3 * 121  # three files a thread, 121 threads
        with Target(threads_bin("O2"), {"read": 60, "cond": 60}).wait_ready() as target:
            yield target
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("which,samples", [("blocked", SAMPLES), ("many_blocked", 6)])
def test_a_profile_with_skipping_equals_one_without(request, which, samples):
    target = request.getfixturevalue(which)
    fast = api.profile(api.Process(target.pid), samples, 1)
    slow = api.profile(api.Process(target.pid), samples, 1, skip_unchanged=False)
    threads = sum(len(tids) for tids in target.tids.values())  # main is one of them
    assert slow.reused == 0
    # Each thread is captured in the first sample; after that, one that went back to sleep
    # where it was is counted again. A thread still on its way back into its system call
    # when looked at is captured once more, so not every later thread-sample is reused.
    assert fast.reused >= (samples - 1) * threads // 2, fast.reused
    assert _counts(fast) == _counts(slow)
    assert sum(_counts(fast).values()) == samples * threads


@pytest.fixture
def handoff(live, build_dir):
    """locks.c with mutex D held by `owner` and waited for by two `waiter`s."""
    binary = compile_target("locks.c", build_dir, "locks", ["-O2", "-g"])
    roles = {"ab": 1, "ba": 1, "queued": 1, "holder": 1, "blocked": 1, "handoff": 3}
    with Target(binary, roles).wait_ready() as target:
        yield target


@pytest.mark.parametrize("skip_unchanged", [False, True])
def test_a_waiter_whose_mutex_changed_hands_shows_its_new_holder(handoff, skip_unchanged):
    """Between two samples the owner unlocks D: the unlock wakes one waiter, which takes D;
    the other sleeps on without running, and now waits for the first. Counted again from
    its last capture, it would still name the old owner."""
    owner, waiters = handoff.tid("owner"), handoff.tids["waiter"]
    options = DumpOptions(
        CaptureOptions(pid=handoff.pid), AnalysisOptions(mode=LocationMode.DISABLED)
    )
    holders, took = [], []

    def sink(index: int, report, offset_ns: int) -> None:
        holders.append({t.tid: t.mutex_holder for t in report.threads if t.tid in waiters})
        if index == 0:
            took.append(handoff.release())

    run = sampling.captures(options, 2, 1, sink, skip_unchanged=skip_unchanged)
    assert run.taken == 2
    assert holders[0] == {waiter: owner for waiter in waiters}
    (other,) = [waiter for waiter in waiters if waiter != took[0]]
    assert holders[1] == {took[0]: None, other: took[0]}


def test_a_thread_that_stays_where_it_is_is_one_run(blocked):
    """A profile keeps a thread's samples in a row that are alike as one run (`ThreadRun`):
    each thread's runs cover every sample once, in order, and two runs in a row differ."""
    profile = api.profile(api.Process(blocked.pid), SAMPLES, 1)
    threads = sum(len(tids) for tids in blocked.tids.values())
    assert profile.thread_samples == SAMPLES * threads
    by_thread: dict = {}
    for r in profile.runs:
        by_thread.setdefault(r.tid, []).append(r)
    assert len(by_thread) == threads
    for runs in by_thread.values():
        assert [r.sample + k for r in runs for k in range(r.count)] == list(range(SAMPLES))
        fields = [(r.stack, r.state, r.syscall, r.wchan, r.labels) for r in runs]
        assert all(a != b for a, b in zip(fields, fields[1:])), fields
    # A blocked thread changes at most as a stop restarts its call: a few runs, not 30.
    assert len(profile.runs) <= 3 * threads, len(profile.runs)


def _settled(tid: int, pid: int) -> ThreadSnapshot:
    """A thread as a sample keeps it: registers where /proc says it sleeps, frames unwound.
    (The frames' contents do not matter to which thread is recalled.)"""
    call = read_syscall(pid, tid)
    assert call is not None and not call.running
    arch = host()
    regs = Registers.of({arch.pc: call.pc, arch.sp: call.sp}, arch)
    unwound = UnwindResult(
        (Frame(call.pc),),
        CaptureMethod.FRAME_POINTER,
        FpStatus.END_OF_CHAIN,
        UnwindStatus.END_OF_STACK,
    )
    return ThreadSnapshot(tid=tid, name="t", status=ThreadStatus.OK, regs=regs, unwound=unwound)


def _copied(thread: ThreadSnapshot, memory: RemoteMemory, size: int = 1024) -> ThreadSnapshot:
    """The thread as captured: with a copy of its stack from its sp."""
    assert thread.regs is not None
    sp = thread.regs.sp
    stack = memory.read(sp, size)
    assert len(stack) == size
    return dataclasses.replace(thread, stack=stack, stack_base=sp)


@contextlib.contextmanager
def _recall_of(target: Target) -> Iterator[Tuple[UnchangedThreads, RemoteMemory]]:
    """A series' recall of `target`'s threads, through its own kept files, and a reader of
    its memory."""
    memory = RemoteMemory(target.pid)
    try:
        with KeptFiles(8) as kept, UnchangedThreads(target.pid, kept) as unchanged:
            yield unchanged, memory
    finally:
        memory.close()


def _sample_keeping(unchanged: UnchangedThreads, memory: RemoteMemory, tid: int) -> ThreadSnapshot:
    """A sample that captures `tid` as it sleeps now, settled, and keeps it."""
    unchanged.start([tid], memory.read_ranges)
    thread = _settled(tid, memory.pid)
    unchanged.keep(tid, thread, _copied(thread, memory), memory.read)
    return thread


def test_a_thread_that_ran_is_captured_again(blocked):
    """The main thread sleeps in read(stdin) until the test writes a line: kept while it
    sleeps, recalled as long as it has not run, and never once it has."""
    main = blocked.pid
    with _recall_of(blocked) as (unchanged, memory):
        thread = _sample_keeping(unchanged, memory, main)
        assert unchanged.recall(main) is thread
        assert unchanged.recall(main) is thread
        blocked.status()  # it reads a line, answers, and blocks in read again
        assert unchanged.recall(main) is None
        assert unchanged.reused == 2


def test_a_thread_renamed_while_it_sleeps_is_captured_again(blocked):
    """Another thread can rename a sleeping one (pthread_setname_np writes its comm) without
    waking it: the sleeper has not run, but its name is not the one kept with it."""
    tid = blocked.tids["read"][1]
    before = Path(f"/proc/{blocked.pid}/task/{tid}/comm").read_text().rstrip("\n")
    with _recall_of(blocked) as (unchanged, memory):
        thread = _sample_keeping(unchanged, memory, tid)
        assert unchanged.recall(tid) is thread
        try:
            blocked.rename(tid, "renamed")
            assert Path(f"/proc/{blocked.pid}/task/{tid}/comm").read_text() == "renamed\n"
            assert unchanged.recall(tid) is None
        finally:
            blocked.rename(tid, before)


def test_a_thread_that_runs_at_every_sample_is_kept_only_now_and_then(blocked):
    """One that could not be counted again at `_BUSY` samples in a row is not kept, so not
    recalled, even while it sleeps, but at every `_RETRY`th sample; once recalled again it
    is kept at every sample again."""
    from stackdump.capture.unchanged import _BUSY, _RETRY

    main = blocked.pid
    asleep = ROLE_SYSCALL["main"]
    wait_for_syscall(blocked.pid, main, asleep)  # an earlier test may just have woken it
    with _recall_of(blocked) as (unchanged, memory):
        sample = 0

        def next_sample() -> None:
            nonlocal sample
            sample += 1
            _sample_keeping(unchanged, memory, main)

        for _ in range(_BUSY):  # kept, then it runs before the next sample looks
            next_sample()
            blocked.status()
            assert unchanged.recall(main) is None
            wait_for_syscall(blocked.pid, main, asleep)  # asleep again
        while sample % _RETRY != _RETRY - 1:  # busy: not kept, though it sleeps now
            next_sample()
            assert unchanged.recall(main) is None
        next_sample()  # the retry: kept
        assert unchanged.recall(main) is not None
        next_sample()  # recalled once: kept at every sample again
        assert unchanged.recall(main) is not None


def test_a_thread_back_where_it_was_on_another_stack_is_not_kept(blocked):
    """Back in the same call at the same pc and sp is not enough: a stack whose bytes are
    not those copied (it returned, ran and came back through other callers) is captured
    afresh, and one whose bytes are is kept."""
    main = blocked.pid
    with _recall_of(blocked) as (unchanged, memory):
        unchanged.start([main], memory.read_ranges)
        thread = _settled(main, blocked.pid)
        copied = _copied(thread, memory)
        other = bytearray(copied.stack)
        other[-8] ^= 0xFF  # as a return address of other callers would read
        unchanged.keep(main, thread, dataclasses.replace(copied, stack=bytes(other)), memory.read)
        assert unchanged.recall(main) is None
        unchanged.keep(main, thread, copied, memory.read)
        assert unchanged.recall(main) is thread


def test_a_signature_is_read_after_the_name_whatever_it_holds():
    stat = b"42 (a) b) c 5) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0\n"
    signature = (b"S", b"12345", b"1500 200 7\n", b"42 (a) b) c 5")
    assert parse_signature(stat, b"1500 200 7\n") == signature
    assert parse_signature(b"42 (a) S 1", b"1 2 3\n") is None
    assert parse_signature(stat.replace(b")", b"]"), b"1500 200 7\n") is None  # no name end
    # A schedstat not whole, or of a kernel that does not count (every thread "0 0 0"),
    # tells nothing: no thread may be counted again on it.
    for schedstat in (b"1500 200", b"0 0 0\n", b"1500 200 0\n", b""):
        assert parse_signature(stat, schedstat) is None, schedstat
    assert parse_signature(stat, b"1500 200 10\n") is not None


_LIST_MODULES = """
import atexit, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
sys.argv[0] = "stackdump"
runpy.run_module("stackdump", run_name="__main__", alter_sys=True)
"""


def _imported(tmp_path, *args: str) -> set:
    """The modules a real `stackdump` run has loaded when it exits (`-X importtime` would
    miss those importlib loads)."""
    out = tmp_path / "modules"
    result = subprocess.run(
        [sys.executable, "-c", _LIST_MODULES, str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(out.read_text().split())


UNUSED_BY_TEXT = (
    "stackdump.writers.json_doc",
    "stackdump.writers.pprof",
    "stackdump.writers.trace_formats",
    "stackdump.writers.folded",
    "stackdump.writers.profile_text",
    "stackdump.writers.watch",
    "stackdump.writers.merged",
    "stackdump.writers.flamegraph",
    "stackdump.capture.core",
    "stackdump.cli_merge",  # `stackdump merge` and `diff`: loaded only for them
    "stackdump.merge",
)
# What a DISABLED dump of a process with no coroutines to list needs none of (issue 31):
# sampling and watching, the DWARF reader, the coroutine readers, and the standard
# library's network and process modules (a download or a dpkg hint loads them). Not
# urllib.parse: pathlib loads it, and an editable install's finder loads pathlib.
UNUSED_BY_DISABLED = (
    "stackdump.sampling",
    "stackdump.profiles",
    "stackdump.progress",
    "stackdump.capture.unchanged",
    "stackdump.symbols.dwarf",
    "stackdump.symbols.dies",
    "stackdump.runtimes.fcontext",
    "stackdump.runtimes.brpc",
    "stackdump.runtimes.go.goroutines",
    "socket",
    "subprocess",
)


def test_a_disabled_text_dump_imports_only_what_it_uses(blocked, tmp_path):
    """Start-up is most of a small dump's cost (issue 31): a DISABLED text dump of a live
    process loads no pyelftools (no DWARF is read; CFI has its own parser), no rich (stderr
    is no terminal) and no writer of another format; written as JSON, it loads that writer."""
    pid = str(blocked.pid)
    disabled = _imported(tmp_path, "-p", pid, "--mode", "disabled")
    assert "stackdump.unwind.cfi_entries" in disabled  # the run did unwind with CFI
    assert not {m for m in disabled if m.split(".")[0] in ("elftools", "rich")}
    assert not disabled.intersection(UNUSED_BY_TEXT)
    assert not disabled.intersection(UNUSED_BY_DISABLED)
    assert "stackdump.writers.json_doc" in _imported(
        tmp_path, "-p", pid, "--mode", "disabled", "--format", "json"
    )


def test_many_ranges_read_in_one_call_equal_one_read_each(blocked):
    """`read_many` (goroutine descriptors, issue 31) returns what `read` returns range by
    range, an unreadable range in the middle included (b"", and the ranges after it read)."""
    from stackdump.capture.remote import RemoteMemory
    from stackdump.proc import read_maps

    stack = next(m for m in read_maps(blocked.pid) if m.path == "[stack]")
    readable = [stack.end - 4096 + 64 * i for i in range(40)]
    addresses = [*readable[:20], 8, *readable[20:]]  # page 0 is never mapped
    memory = RemoteMemory(blocked.pid)
    try:
        many = memory.read_many(addresses, 64)
        one_by_one = [memory.read(a, 64) for a in addresses]
    finally:
        memory.close()
    assert many[20] == b"" and one_by_one[20] == b""
    assert many == one_by_one
    assert all(len(d) == 64 for i, d in enumerate(many) if i != 20)


def test_ranges_read_in_one_call_equal_one_read_each(blocked):
    """`read_ranges` (goroutine stacks, issue 31) returns what `read` returns range by
    range, whatever their sizes: one that runs off the end of the stack's mapping (`read`
    keeps the part that is there), an unreadable one, an empty one, and more ranges than
    one system call takes (IOV_MAX) or than its buffer holds."""
    from stackdump.capture.remote import _BATCH_BYTES, _IOV_MAX, RemoteMemory
    from stackdump.proc import read_maps

    maps = read_maps(blocked.pid)
    stack = next(m for m in maps if m.path == "[stack]")
    if any(m.start == stack.end for m in maps):
        pytest.fail("a mapping follows [stack] directly: the test needs a gap after it")
    sizes = [8 * (1 + i % 97) for i in range(2 * _IOV_MAX + 5)]
    ranges = [(stack.end - 4096 + (i * 24) % 3000, size) for i, size in enumerate(sizes)]
    ranges[7] = (stack.end - 100, 400)  # past the end of [stack]: 100 bytes read
    ranges[30] = (8, 64)  # page 0 is never mapped
    ranges[31] = (stack.end - 64, 0)
    ranges[_IOV_MAX + 3] = (stack.end - 4096, _BATCH_BYTES + 8)  # alone, and short
    memory = RemoteMemory(blocked.pid)
    try:
        many = memory.read_ranges(ranges)
        one_by_one = [memory.read(a, size) if size else b"" for a, size in ranges]
    finally:
        memory.close()
    assert many == one_by_one
    assert len(many[7]) == 100 and many[30] == b"" and many[31] == b""
    assert len(many[_IOV_MAX + 3]) == 4096
    whole = [i for i, (d, (_, size)) in enumerate(zip(many, ranges)) if len(d) == size]
    assert len(whole) == len(ranges) - 3  # all but those three
    assert sum(len(d) == 0 for d in many) == 2


def test_a_fix_hint_asks_dpkg_once_until_dpkg_changes(live, build_dir, tmp_path):
    """The fix for an object without symbols comes from `dpkg -S` (~0.2 s of CPU): kept in
    the disk cache, a second dump of the same stripped program asks dpkg nothing and says
    the same (issue 31: a server dumped every few seconds paid it each time)."""
    binary = compile_target("threads.c", build_dir, "threads-stripped-fix", ["-O2", "-s"])
    log = tmp_path / "dpkg.log"
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    for tool in ("dpkg", "dpkg-query"):
        real = shutil.which(tool)
        if real is None:
            if ON_CI:
                pytest.fail(f"{tool} is missing under CI=true")
            pytest.skip(f"{tool} is not installed")
        wrapper = wrappers / tool
        wrapper.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{wrappers}:{os.environ['PATH']}",
           "XDG_CACHE_HOME": str(tmp_path / "cache")}  # fmt: skip
    with Target(binary, {"read": 2}).wait_ready() as target:
        first = run_stackdump("-p", str(target.pid), "--mode", "disabled", env=env)
        asked = log.read_text().splitlines()
        second = run_stackdump("-p", str(target.pid), "--mode", "disabled", env=env)
    fixes = [re.findall(r'fix="[^"]*"', r.stdout) for r in (first, second)]
    assert fixes[0] and fixes[0] == fixes[1]
    assert asked and any(line.startswith("dpkg -S") for line in asked)
    assert log.read_text().splitlines() == asked  # the second dump asked nothing


def test_a_runtime_ruled_out_is_looked_for_again_once_the_maps_change():
    """Sampling does not look for a runtime again while the maps are those it was not found
    in (runtimes.Absent); new maps (a library loaded) put every runtime back in question."""
    from stackdump import runtimes
    from stackdump.proc import parse_maps

    text = "7f0000000000-7f0000001000 r-xp 00000000 08:01 42 /usr/lib/libc.so.6\n"
    maps, more = parse_maps(text), parse_maps(text + text.replace("libc", "libgo"))
    go = next(r for r in runtimes.RUNTIMES if r.name == "go")
    absent = runtimes.Absent()
    assert not absent.ruled_out(maps, go)
    absent.rule_out(maps, go)
    assert absent.ruled_out(maps, go)
    assert absent.ruled_out(parse_maps(text), go)  # the same maps read again
    assert not absent.ruled_out(more, go)


def test_registers_read_from_the_ptrace_struct_in_one_go_equal_field_by_field():
    """`_registers_from` (issue 31: three C calls instead of a getattr and a pack per
    register) gives what the per-field reading gave, for any register values."""
    import random

    from stackdump.capture.ptrace import _HOST, _registers_from, ptrace_registers_t
    from stackdump.types import Registers

    regs = ptrace_registers_t()
    for seed in range(50):
        rng = random.Random(seed)
        for name, _ in regs._fields_:
            setattr(regs, name, rng.getrandbits(64) if seed else 2**64 - 1)
        by_field = {i: int(getattr(regs, n)) for i, n in enumerate(_HOST.ptrace_names)}
        got = _registers_from(regs)
        assert got == Registers.of(by_field, _HOST)
        assert got.as_dict() == by_field


def test_module_entries_made_again_from_known_ones_equal_made_afresh():
    """Sampling keeps each module's entry for a layout and makes only its counts again
    (ObjectStore.module_entries' `known`): the entries must equal those made afresh, on this
    process's own maps and files, with counts that change from one call to the next. The
    counts are the frames' by object (`frames_by_module`), named or not."""
    import collections
    import ctypes

    from stackdump.elf.modules import HostFiles
    from stackdump.elf.store import ObjectStore
    from stackdump.proc import read_maps

    frame = collections.namedtuple("frame", "pc function")  # what a report's frame has
    libc = ctypes.CDLL("libc.so.6")
    in_libc = ctypes.cast(libc.getpid, ctypes.c_void_p).value
    in_python = next(m.start for m in read_maps(os.getpid()) if m.executable and m.is_file)
    calls = [
        [frame(in_libc, "getpid")] * 3 + [frame(in_python, None)],
        [frame(in_libc, None)] * 2,
        [frame(in_libc, "getpid"), *[frame(in_libc + 16, None)] * 4, *[frame(in_python, "f")] * 2],
        [frame(0, None)],  # in no object
    ]
    known: dict = {}
    with ObjectStore(HostFiles(), read_maps(os.getpid()), None) as objects:
        for frames in calls:
            counts = objects.frames_by_module(frames)
            again = objects.module_entries(counts, known)
            assert again == objects.module_entries(counts), frames
            placed = [f for f in frames if f.pc]
            assert sum(m.frames for m in again) == len(placed)
            assert sum(m.unknown_frames for m in again) == sum(not f.function for f in placed)
    assert len(known) == 2


def test_a_series_keeps_as_many_files_as_the_open_file_limit_leaves_room_for():
    """Three /proc files a thread: under the default soft limit of 1,024 a series keeps
    those of ~100 threads, under the command's (raised to the hard limit, at most 65,536)
    those of 10,000; never more than half of what the pinned and object files leave."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    checked = []
    try:
        for limit, kept in ((1024, 320), (4096, 1504), (65536, 30_000)):
            if hard != resource.RLIM_INFINITY and limit > hard:
                continue  # a soft limit cannot be raised past the hard one
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
            assert kept_files_limit() == kept, limit
            checked.append(limit)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert checked, f"a hard limit of {hard} open files allows none of the limits checked"


def test_collection_is_paused_inside_and_left_as_it_was_found():
    """collector.paused (a capture, a single dump): no cyclic collection inside, enabled
    again after only if it was before, an inner pause leaving it to the outer one, and an
    error inside leaving it as found too."""
    import gc

    import pytest

    from stackdump.collector import paused

    was = gc.isenabled()
    try:
        gc.enable()
        with paused():
            assert not gc.isenabled()
            with paused():
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert gc.isenabled()
        with pytest.raises(KeyError), paused():
            raise KeyError("inside")
        assert gc.isenabled()
        gc.disable()
        with paused():
            pass
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
