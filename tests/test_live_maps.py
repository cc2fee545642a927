"""A series takes its last read of the maps again while the kernel says the addresses a
capture used are still mapped so, and reads them afresh when not (capture/maps_check.py,
issue 31): the same profile either way, and code swapped under it named from the right
library."""

from __future__ import annotations

import os
import time
from typing import List, Optional

import pytest
from conftest import ON_CI
from helpers import DEADLINE_S, ROLE_SYSCALL, Target, compile_target, wait_for_syscall

from stackdump import api, proc, sampling
from stackdump.capture import maps_check
from stackdump.engine import DumpOptions
from stackdump.types import AnalysisOptions, CaptureOptions


def _query_or_skip(fd: int) -> maps_check.MapsQuery:
    query = maps_check.MapsQuery(fd)
    try:
        query.find(0)
    except maps_check.Unsupported as e:
        if ON_CI:
            pytest.fail(f"this kernel has no PROCMAP_QUERY (Linux 6.11): {e}")
        pytest.skip(f"this kernel has no PROCMAP_QUERY (Linux 6.11): {e}")
    return query


def test_a_mapping_that_changed_is_told_from_the_one_read(tmp_path):
    """What maps_check compares: a file mapped afresh where another was is another mapping."""
    import mmap

    fd = os.open("/proc/self/maps", os.O_RDONLY)
    try:
        query = _query_or_skip(fd)
        first, second = tmp_path / "first", tmp_path / "second"
        first.write_bytes(b"\0" * 8192)
        second.write_bytes(b"\0" * 8192)
        with open(first, "rb") as f:
            region = mmap.mmap(f.fileno(), 8192, prot=mmap.PROT_READ)
        address = next(m.start for m in proc.read_maps(os.getpid()) if m.path == str(first))
        before = maps_check.Layout(proc.read_maps(os.getpid()))
        held = before.holder(address)
        assert held is not None and query.find(address) == maps_check.as_vma(held)
        region.close()
        assert query.find(address) != maps_check.as_vma(held)
        with open(second, "rb") as f:
            again = mmap.mmap(f.fileno(), 8192, prot=mmap.PROT_READ)
        try:
            now = query.find(address)
            assert now is None or now != maps_check.as_vma(held)
        finally:
            again.close()
    finally:
        os.close(fd)


class _Reads:
    """Counts the maps reads of the code under test (each still reads the file)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        read = proc.read_maps

        def counted(*args, **kwargs):
            self.count += 1
            return read(*args, **kwargs)

        monkeypatch.setattr(proc, "read_maps", counted)


@pytest.fixture(scope="module")
def blocked(live, threads_bin):
    with Target(threads_bin("O2"), {"read": 2, "cond": 2, "epoll": 1}).wait_ready() as target:
        yield target


def test_the_kernel_describes_each_mapping_as_the_maps_file_does(blocked):
    """Every line of a quiet process's maps (but the gate page), as PROCMAP_QUERY gives it,
    and no mapping in the gaps between them."""
    fd = os.open(f"/proc/{blocked.pid}/maps", os.O_RDONLY)
    try:
        query = _query_or_skip(fd)
        layout = maps_check.Layout(proc.read_maps(blocked.pid))
        assert len(layout.maps) >= 10
        for m in layout.maps:
            assert query.find(m.start) == maps_check.as_vma(m), m
            assert query.find(m.end - 1) == maps_check.as_vma(m), m
            assert layout.holder(m.start) is m and layout.holder(m.end - 1) is m
        gaps = [(a.end, b.start) for a, b in zip(layout.maps, layout.maps[1:]) if a.end < b.start]
        assert gaps
        for start, _ in gaps:
            assert layout.holder(start) is None
            assert query.find(start) is None
    finally:
        os.close(fd)


def test_a_profile_of_a_process_whose_maps_hold_reads_them_once(blocked, monkeypatch):
    fd = os.open(f"/proc/{blocked.pid}/maps", os.O_RDONLY)
    try:
        _query_or_skip(fd)
    finally:
        os.close(fd)
    reads = _Reads(monkeypatch)
    profile = api.profile(api.Process(blocked.pid), 40, 1)
    assert profile.samples_taken == 40
    # One read before sampling (the permission check), one by the first sample; the 39
    # after take it again.
    assert reads.count <= 2, reads.count


LIBRARY = ("-O2", "-g", "-shared", "-fPIC")


@pytest.fixture(scope="module")
def swapping(live, build_dir):
    libraries = [
        compile_target(
            "swaplibs.c",
            build_dir,
            f"libswap{n}.so",
            ["-O2", "-g", "-shared", "-fPIC", f"-DSWAP_LIB={n}"],
        )
        for n in (1, 2)
    ]
    binary = compile_target("swaplibs.c", build_dir, "swaplibs", ["-O2", "-g"])
    with Target(binary, {"swap": 1}, [str(lib) for lib in libraries]).wait_ready() as target:
        yield target


def _swapped(target: Target, library: str) -> None:
    """Once the swap thread has unloaded its library, loaded `library` and blocked in read
    again inside it (its maps show `library` alone, then its read)."""
    swap = target.tid("swap")
    deadline = time.monotonic() + DEADLINE_S
    while True:
        with open(f"/proc/{target.pid}/maps") as f:  # not proc.read_maps: the test counts those
            loaded = {line.split()[-1] for line in f if "libswap" in line}
        if loaded == {library}:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"never loaded {library}: {loaded}")
        os.sched_yield()
    wait_for_syscall(target.pid, swap, ROLE_SYSCALL["swap"])


def test_code_swapped_between_samples_is_named_from_the_library_now_mapped(swapping, monkeypatch):
    """Before each sample but the first the swap thread loads the other library, at the
    same addresses: a pc of one read with the other's layout falls in a pad_* function
    (tests/targets/swaplibs.c). A sample that took the maps of the sample before without
    finding it out would name it so."""
    libraries = [m.path for m in proc.read_maps(swapping.pid) if m.path.endswith("libswap1.so")]
    one = libraries[0]
    two = one[: -len("libswap1.so")] + "libswap2.so"
    swap = swapping.tid("swap")
    reads = _Reads(monkeypatch)
    named: List[List[Optional[str]]] = []

    def before(index: int) -> None:
        if index:
            swapping.proc.stdin.write(b"x")
            swapping.proc.stdin.flush()
            _swapped(swapping, (one, two)[index % 2])

    def sink(index: int, report, offset_ns: int) -> None:
        thread = next(t for t in report.threads if t.tid == swap)
        named.append([f.function for f in thread.frames if f.module and "libswap" in f.module])

    options = DumpOptions(CaptureOptions(pid=swapping.pid), AnalysisOptions())
    sampling.captures(options, 12, 1, sink, before=before)
    assert named == [["swapped_one"], ["swapped_two"]] * 6
    # Each sample after a swap found its maps out of date and was taken again with them
    # read afresh; none read them beforehand.
    assert reads.count == 12, reads.count


def test_a_file_that_is_not_a_maps_file_says_the_kernel_cannot_be_asked():
    """What a kernel without PROCMAP_QUERY answers (ENOTTY) is what any other /proc file
    answers: the series then reads the maps at every sample."""
    fd = os.open("/proc/self/stat", os.O_RDONLY)
    try:
        with pytest.raises(maps_check.Unsupported):
            maps_check.MapsQuery(fd).find(0)
    finally:
        os.close(fd)
