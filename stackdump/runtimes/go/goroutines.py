"""Go's runtime, read from outside: every `runtime.g` in `runtime.allgs`, with its id, status,
wait reason and wait time, as a snapshot unwound from its saved `sched` context (pc, sp and
the frame pointer Go keeps on amd64) over its own stack; and, for each OS thread, the
goroutine its `runtime.m` serves and whether it was on that goroutine's stack, on the
system stack (`g0`) or on the signal stack (`gsignal`).

Where things are: struct offsets from the table of each Go release's layout below (the
release read from `.go.buildinfo`), else, for a release newer than the table, from the
binary's DWARF (`runtime.g`, `runtime.gobuf`, `runtime.m`, which Go puts in one of the
`runtime` package's units). `runtime.allgs`,
`runtime.allm` and `runtime.waitReasonStrings` from the symbol table, else (a binary built
`-ldflags=-s -w`) found in the process's own memory: the slice in `.bss` whose elements read
as goroutines, the list head in `.bss` whose `m`s are this process's threads, the array in
`.data` whose first strings are the runtime's first wait reasons. Every candidate is checked
against what the runtime keeps true, so a wrong layout finds nothing rather than garbage.

Only memory is read, while every thread runs; a goroutine that ran meanwhile (its saved
context changed while its stack was read) is reported as such; every count is bounded.
"""

from __future__ import annotations

import struct
import time
from array import array
from dataclasses import replace
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from stackdump.arch import X86_64, Arch, aarch64, for_elf_machine, x86_64
from stackdump.elf.image import ElfObject, parse_errors
from stackdump.records import frozen
from stackdump.runtimes.base import LABELS, WAITED_S, labels_text
from stackdump.runtimes.go.names import ALLGS, ALLM, WAIT_REASONS
from stackdump.symbols.dwarf import DwarfIndex
from stackdump.types import MemoryMap, Registers, ThreadSnapshot, ThreadStatus

# runtime2.go: _Gidle .. _Gpreempted, _Gleaked (1.26), _Gdeadextra (1.27: dead, on a cgo
# callback's extra m); _Gscan (0x1000) is ORed in while a GC scans it.
STATUS = {1: "runnable", 2: "running", 3: "syscall", 4: "waiting", 6: "dead", 8: "copystack",
          9: "preempted", 10: "leaked", 11: "dead"}  # fmt: skip
_PARKED = (4, 10)  # waiting, leaked: with a wait reason
_NOT_SHOWN = (2, 6, 11)  # running (its thread's section), dead
_SCAN = 0x1000
_MAX_WAIT_REASONS = 64
_BATCH = 256  # goroutine descriptors read in one system call
_MAX_MS = 100_000
_SCAN_BYTES = 64 << 20  # of .bss or .data searched for allgs, allm, waitReasonStrings
_MAX_CANDIDATES = 1 << 18  # distinct pointers in .bss tried as runtime.allm
_Q = struct.Struct("<Q")
_FIRST_REASONS = (b"GC assist marking", b"IO wait")  # waitReasonStrings[1], [2] since Go 1.11
# The runtime keys a group shares (not the id, not how long each waited), so that goroutines
# parked alike in different ways stay apart, as in Go's own dumps.
GROUP_KEYS = ("go_status", "wait_reason", "go_stack", "created_by", LABELS)


@frozen
class GoLayout:
    """Offsets in runtime.g (whose stack.lo, stack.hi are at 0, 8), runtime.gobuf and
    runtime.m (whose g0 is at 0)."""

    goid: int
    status: int
    wait_reason: int
    wait_since: int
    m: int  # g.m
    sched: int  # a runtime.gobuf
    sp: int  # in gobuf
    pc: int
    bp: int  # the frame pointer: rbp on amd64, x29 on arm64
    lr: int  # arm64's link register (x30) when the switch saved it
    m_procid: int
    m_gsignal: int
    m_curg: int
    m_alllink: int
    # Who created it: the pc of the `go` statement, the creating goroutine's id (1.21+);
    # its pprof labels (a *labelMap: a map before 1.24, a slice of key-value pairs since).
    # None where not measured.
    gopc: Optional[int] = None
    parent_goid: Optional[int] = None
    labels: Optional[int] = None
    labels_slice: bool = False

    @property
    def g_size(self) -> int:
        """The bytes of a g read: up to its last field used."""
        optional = (self.gopc or 0, self.parent_goid or 0, self.labels or 0)
        return max(self.goid, self.status, self.wait_reason, self.wait_since, self.sched
                   + self.bp, *optional) + 8  # fmt: skip

    @property
    def m_size(self) -> int:
        return max(self.m_procid, self.m_gsignal, self.m_curg, self.m_alllink) + 8


# Each Go release's layout for linux/amd64 and arm64 (the same: checked on arm64 for 1.27),
# measured from the DWARF of
# a program built by that release's Debian golang-1.N package (tests/test_go_releases.py
# measures them again and checks this table); 1.20, which Debian never packaged, read from
# its runtime2.go, where nothing before these fields differs from 1.19 and 1.21. What moved:
# 1.22 shrank runtime.m before alllink; 1.23 added g.syscallbp before atomicstatus; 1.25
# removed gobuf.ret (g and m shrank by 8) and moved m fields; 1.26 grew m before alllink.
# Where a goroutine was created and its labels: 1.21 added g.parentGoid and moved gopc; 1.20's
# are not measured (left out); pprof labels became a slice in 1.24.
_L119 = GoLayout(goid=152, status=144, wait_reason=176, wait_since=168, m=48, sched=56, sp=0,
                 pc=8, bp=48, lr=40, m_procid=72, m_gsignal=80, m_curg=192,
                 m_alllink=336, gopc=296, labels=360)  # fmt: skip
_L120 = replace(_L119, gopc=None, labels=None)
_L121 = replace(_L119, gopc=280, parent_goid=272, labels=344)
_L122 = replace(_L121, m_alllink=328)
_L123 = replace(_L122, goid=160, status=152, wait_reason=184, wait_since=176, gopc=288,
                parent_goid=280, labels=352)  # fmt: skip
_L124 = replace(_L123, labels_slice=True)
_L125 = replace(_L121, bp=40, lr=32, m_procid=64, m_gsignal=72, m_curg=184, m_alllink=344,
                labels_slice=True)  # fmt: skip
_L126 = replace(_L125, m_alllink=352, gopc=288, parent_goid=280, labels=352)
LAYOUTS: Tuple[Tuple[int, GoLayout], ...] = (  # (first minor release, layout), in order
    (19, _L119), (20, _L120), (21, _L121), (22, _L122), (23, _L123), (24, _L124),
    (25, _L125), (26, _L126),
)  # fmt: skip
NEWEST_MEASURED = 27


def layout_for_release(minor: int) -> Optional[GoLayout]:
    """Go 1.`minor`'s layout; a release newer than the table gets the newest one (a change
    would make nothing validate, not garbage); before 1.19, none."""
    chosen = None
    for first, layout in LAYOUTS:
        if minor >= first:
            chosen = layout
    return chosen


def go_release(elf: ElfObject) -> Optional[Tuple[str, int]]:
    """("go1.21.13", 21) from `.go.buildinfo` (kept by `-s -w`): a 16-byte magic header
    then, since Go 1.18, the version as a varint-prefixed string at offset 32."""
    data = elf.section_bytes(".go.buildinfo") or b""
    if not data.startswith(b"\xff Go buildinf:") or len(data) < 33 or not data[15] & 2:
        return None
    length, at = 0, 32
    for shift in range(0, 35, 7):
        if at >= len(data):
            return None
        byte = data[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
    version = data[at : at + min(length, 64)].decode("ascii", "replace")
    parts = version[2:].split(".") if version.startswith("go1.") else []
    digits = "".join(c for c in parts[1] if c.isdigit()) if len(parts) > 1 else ""
    return (version, int(digits)) if digits else None


def layout_from_dwarf(elf: ElfObject) -> Optional[GoLayout]:
    if not elf.has_section(".debug_info"):
        return None
    try:
        dwarf = DwarfIndex(elf)
        g = dwarf.find_struct("runtime.g", "runtime")
        gobuf = dwarf.find_struct("runtime.gobuf", "runtime")
        m = dwarf.find_struct("runtime.m", "runtime")
        if not g or not gobuf or not m:
            return None
        g, gobuf, m = g[1], gobuf[1], m[1]
        release = go_release(elf)
        return GoLayout(
            goid=g["goid"], status=g["atomicstatus"], wait_reason=g["waitreason"],
            wait_since=g["waitsince"], m=g["m"], sched=g["sched"], sp=gobuf["sp"],
            pc=gobuf["pc"], bp=gobuf["bp"], lr=gobuf["lr"], m_procid=m["procid"],
            m_gsignal=m["gsignal"],
            m_curg=m["curg"], m_alllink=m["alllink"], gopc=g.get("gopc"),
            parent_goid=g.get("parentGoid"), labels=g.get("labels"),
            labels_slice=release is None or release[1] >= 24,
        )  # fmt: skip
    except (KeyError, *parse_errors()):
        return None


@frozen
class GoRuntime:
    """Where one Go process keeps its goroutines and threads (addresses in the process)."""

    layout: GoLayout
    layout_source: str  # "dwarf" or the release ("go1.21.13")
    allgs: Optional[int]  # the slice header
    allm: Optional[int]  # the list head
    wait_reasons: Optional[int]
    arch: Arch


def find_runtime(
    memory, elf: ElfObject, bias: int, symbols: Mapping[str, int], pid: int, tids: Iterable[int]
) -> Optional[GoRuntime]:
    """The Go runtime of the process whose executable is `elf` (loaded at `bias`), or None
    for a Go release without a known layout or a processor other than amd64 and arm64."""
    arch = for_elf_machine(elf.machine)
    if arch is None:
        return None
    # The table first: reading three structs' DWARF costs a Go server's dump more than all
    # the rest (tests/test_go_releases.py checks the table against every release's DWARF);
    # DWARF for a release newer than the table.
    release = go_release(elf)
    layout, source = None, ""
    if release is not None and release[1] <= NEWEST_MEASURED:
        layout, source = layout_for_release(release[1]), release[0]
    if layout is None:
        layout, source = layout_from_dwarf(elf), "dwarf"
    if layout is None and release is not None:
        layout, source = layout_for_release(release[1]), release[0]
    if layout is None:
        return None
    allgs, allm = symbols.get(ALLGS), symbols.get(ALLM)
    reasons = symbols.get(WAIT_REASONS)
    if allgs is None or allm is None:
        bss = _section_words(memory, elf, ".bss", bias)
        if allgs is None and bss is not None:
            allgs = _search_allgs(memory, layout, *bss)
        if allm is None and bss is not None:
            allm = _search_allm(memory, layout, *bss, {pid, *tids})
    if reasons is None:
        reasons = _search_wait_reasons(memory, elf, bias)
    return GoRuntime(layout, source, allgs, allm, reasons, arch)


def _section_words(memory, elf: ElfObject, name: str, bias: int):
    section = elf.section(name)
    if section is None or not section.addr:
        return None
    start = bias + section.addr
    data = memory.read(start, min(section.size, _SCAN_BYTES))
    words = array("Q")
    words.frombytes(data[: len(data) // 8 * 8])
    return start, words


def _read_g(memory, g: int, layout: GoLayout) -> Optional[bytes]:
    data = memory.read(g, layout.g_size) if g and not g & 7 else b""
    return data if len(data) == layout.g_size else None


def _plausible_g(data: bytes, layout: GoLayout) -> bool:
    """What the runtime keeps true of a live or dead g: a stack of at least Go's minimum
    2 KiB, a known status, a goroutine id below 2^48, a saved sp inside its stack when
    parked."""
    lo, hi = struct.unpack_from("<QQ", data)
    status = struct.unpack_from("<I", data, layout.status)[0] & ~_SCAN
    goid = _Q.unpack_from(data, layout.goid)[0]
    if status in (6, 11) and lo == hi == 0:
        return goid < 1 << 48  # dead, its stack freed
    if not (2048 <= hi - lo <= 1 << 32 and status in (0, *STATUS) and goid < 1 << 48):
        return False
    sp = _Q.unpack_from(data, layout.sched + layout.sp)[0]
    return status not in _PARKED or lo <= sp < hi


def _search_allgs(memory, layout: GoLayout, start: int, words) -> Optional[int]:
    """The slice header {array, len, cap} in .bss whose first elements all read as
    goroutines with distinct ids: the longest such slice is runtime.allgs."""
    best, best_len = None, 0
    for i in range(len(words) - 2):
        pointer, length, cap = words[i], words[i + 1], words[i + 2]
        if not 0 < length <= cap <= 1 << 26 or pointer & 7 or length <= best_len:
            continue
        sample = memory.read(pointer, 8 * min(length, 8))
        if len(sample) != 8 * min(length, 8):
            continue
        ids = set()
        for (g,) in struct.iter_unpack("<Q", sample):
            data = _read_g(memory, g, layout)
            if data is None or not _plausible_g(data, layout):
                break
            ids.add(_Q.unpack_from(data, layout.goid)[0])
        else:
            if len(ids) == len(sample) // 8:
                best, best_len = start + 8 * i, length
    return best


def _search_allm(memory, layout: GoLayout, start: int, words, tids) -> Optional[int]:
    """The pointer in .bss to an m whose procid is one of this process's threads and whose
    g0 points back at it, heading the longest such chain through alllink: runtime.allm."""
    best, best_len = None, 0
    seen = set()
    for i, pointer in enumerate(words):
        if not pointer or pointer & 7 or pointer in seen or len(seen) >= _MAX_CANDIDATES:
            continue
        seen.add(pointer)
        if _m_chain(memory, layout, pointer, tids, 1):
            length = len(_m_chain(memory, layout, pointer, tids, _MAX_MS))
            if length > best_len:
                best, best_len = start + 8 * i, length
    return best


def _m_chain(memory, layout: GoLayout, m: int, tids, limit: int) -> List[Tuple[int, bytes]]:
    """(address, bytes) of each m from `m` along alllink while its g0's m is itself and
    (unless `tids` is None) its procid is one of `tids`."""
    chain: List[Tuple[int, bytes]] = []
    seen = set()
    while m and not m & 7 and len(chain) < limit and m not in seen:  # a torn list may loop
        seen.add(m)
        data = memory.read(m, layout.m_size)
        if len(data) != layout.m_size:
            break
        procid = _Q.unpack_from(data, layout.m_procid)[0]
        g0 = _Q.unpack_from(data, 0)[0]
        back = memory.read(g0 + layout.m, 8) if g0 and not g0 & 7 else b""
        if (tids is not None and procid not in tids) or len(back) != 8 or _Q.unpack(back)[0] != m:
            break
        chain.append((m, data))
        m = _Q.unpack_from(data, layout.m_alllink)[0]
    return chain


def _search_wait_reasons(memory, elf: ElfObject, bias: int) -> Optional[int]:
    """runtime.waitReasonStrings: the array of Go strings in .data whose entries 1 and 2 are
    the runtime's first two wait reasons, wherever the linker put their bytes."""
    rodata = elf.section(".rodata")
    data = elf.section_bytes(".rodata") if rodata is not None else None
    found = _section_words(memory, elf, ".data", bias)
    if not data or found is None:
        return None
    start, words = found
    targets = []
    for text in _FIRST_REASONS:
        at, places = data.find(text), set()
        while at >= 0 and len(places) < 64:
            places.add(bias + rodata.addr + at)
            at = data.find(text, at + 1)
        targets.append(places)
    first, second = targets
    one, two = (len(text) for text in _FIRST_REASONS)
    for i in range(2, len(words) - 3):
        lengths = words[i + 1] == one and words[i + 3] == two
        if lengths and words[i] in first and words[i + 2] in second:
            return start + 8 * (i - 2)
    return None


def thread_keys(
    memory, runtime: GoRuntime, threads: Sequence[ThreadSnapshot]
) -> Dict[int, Tuple[Tuple[str, str], ...]]:
    """tid -> the runtime keys of each Go thread: the goroutine its m serves (`goroutine`,
    `go_status`) and the stack its sp was on when captured when that is not the goroutine's
    (`go_stack=g0`: the system stack, where the runtime, the scheduler and cgo calls run;
    `gsignal`: the signal stack). Read after capture: the m is the thread's for life; the
    goroutine is the one it serves now, kept only when the captured sp agrees."""
    if runtime.allm is None:
        return {}
    layout = runtime.layout
    head = memory.read(runtime.allm, 8)
    if len(head) != 8:
        return {}
    by_tid = {
        _Q.unpack_from(data, layout.m_procid)[0]: data
        for _, data in _m_chain(memory, layout, _Q.unpack(head)[0], None, _MAX_MS)
    }
    out = {}
    for thread in threads:
        data = by_tid.get(thread.tid)
        if data is None or thread.regs is None:
            continue
        sp = thread.regs.sp
        keys: List[Tuple[str, str]] = []
        curg = _Q.unpack_from(data, layout.m_curg)[0]
        g = _read_g(memory, curg, layout) if curg else None
        on_curg = g is not None and _within_stack(g, sp)
        if g is not None:
            status = struct.unpack_from("<I", g, layout.status)[0] & ~_SCAN
            keys.append(("goroutine", str(_Q.unpack_from(g, layout.goid)[0])))
            keys.append(("go_status", STATUS.get(status, str(status))))
        for name, at in (("g0", 0), ("gsignal", layout.m_gsignal)):
            system = _read_g(memory, _Q.unpack_from(data, at)[0], layout)
            if not on_curg and system is not None and _within_stack(system, sp):
                keys.append(("go_stack", name))
        if g is not None and not on_curg and not any(k == "go_stack" for k, _ in keys):
            del keys[:2]  # it serves another goroutine by now
        if keys:
            out[thread.tid] = tuple(keys)
    return out


def _within_stack(g: bytes, sp: int) -> bool:
    lo, hi = struct.unpack_from("<QQ", g)
    return lo <= sp < hi


def goroutines(
    memory,
    runtime: GoRuntime,
    maps: Sequence[MemoryMap],
    stack_bytes: int,
    limit: int,
    keep=None,
    now_ns: Optional[int] = None,
) -> List[ThreadSnapshot]:
    """Every goroutine but the running, dead and idle ones, as snapshots, each passed to
    `keep` at once (the engine unwinds it and drops its stack copy: 100,000 goroutines'
    stacks are never held together). `now_ns`: CLOCK_MONOTONIC now, the runtime's clock,
    for wait times (None for a core: no clock to compare with)."""
    if runtime.allgs is None:
        return []
    header = memory.read(runtime.allgs, 16)
    if len(header) != 16:
        return []
    array_at, count = struct.unpack("<QQ", header)
    count = min(count, limit)
    pointers = memory.read(array_at, 8 * count) if array_at and count else b""
    reasons = _wait_reasons(memory, runtime.wait_reasons) if runtime.wait_reasons else {}
    reader = _Reader(memory, runtime, reasons, maps, stack_bytes, now_ns)
    out = []
    gs = [g for (g,) in struct.iter_unpack("<Q", pointers[: len(pointers) // 8 * 8])]
    for at in range(0, len(gs), _BATCH):
        for snapshot in reader.batch([g if g and not g & 7 else 0 for g in gs[at : at + _BATCH]]):
            out.append(keep(snapshot) if keep is not None else snapshot)
    return out


def monotonic_now() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class _Reader:
    """Goroutines a batch at a time, each step one system call for the whole batch: their
    descriptors, then their stacks, then their saved contexts again (a goroutine whose
    context changed meanwhile ran while its stack was read: its copy is not its stack)."""

    def __init__(self, memory, runtime: GoRuntime, reasons, maps, stack_bytes, now_ns) -> None:
        self.memory = memory
        self.runtime = runtime
        self.reasons = reasons
        self.maps = maps
        self.stack_bytes = stack_bytes
        self.now_ns = now_ns
        self._mapping: Optional[MemoryMap] = None  # the last stack's: most share an arena
        self._keys: Dict[tuple, tuple] = {}  # equal keys as one tuple: most goroutines'
        self._registers = _register_packer(runtime.arch)
        self._g_size = runtime.layout.g_size

    def batch(self, gs: List[int]) -> List[ThreadSnapshot]:
        layout, size = self.runtime.layout, self._g_size
        found = [
            self._decoded(g, data)
            for g, data in zip(gs, self.memory.read_many(gs, size))
            if g and len(data) == size
        ]
        pending = [f for f in found if isinstance(f, _Pending)]
        stacks = self.memory.read_ranges([(f.low, f.size) for f in pending])
        sched, saved = layout.sched, layout.bp + 8
        again = self.memory.read_many([f.g + sched for f in pending], saved)
        read = iter([
            ThreadSnapshot(
                status=ThreadStatus.OK, regs=f.regs, stack_map=f.mapping, stack_base=f.low,
                stack=stack, **f.base,
            )
            if now[:saved] == f.data[sched : sched + saved]
            else ThreadSnapshot(
                status=ThreadStatus.THREAD_EXITED, error="it ran while its stack was read",
                **f.base,
            )
            for f, stack, now in zip(pending, stacks, again)
        ])  # fmt: skip
        return [next(read) if isinstance(f, _Pending) else f for f in found if f is not None]

    def _decoded(self, g: int, data: bytes):
        """None (not shown), a snapshot (its context unreadable) or what to read next."""
        layout = self.runtime.layout
        status = struct.unpack_from("<I", data, layout.status)[0] & ~_SCAN
        if status not in STATUS or status in _NOT_SHOWN:
            return None
        goid = _Q.unpack_from(data, layout.goid)[0]
        creator = _creator_site(data, layout) if goid != 1 else ()
        keys = self._runtime_keys(data, status, creator)
        sched = layout.sched
        sp = _Q.unpack_from(data, sched + layout.sp)[0]
        pc = _Q.unpack_from(data, sched + layout.pc)[0]
        hi = _Q.unpack_from(data, 8)[0]
        mapping = self._stack_mapping(sp)
        base = dict(
            tid=g, name="goroutine", coroutine="goroutine", coroutine_id=goid,
            runtime_keys=keys, group_keys=GROUP_KEYS, ids_as_ranges=True, pc_after_call=True,
            call_sites=creator,
        )  # fmt: skip
        if not pc or not sp or mapping is None or not sp < hi <= mapping.end:
            return ThreadSnapshot(
                status=ThreadStatus.THREAD_EXITED, error="its saved context is not readable",
                **base,
            )  # fmt: skip
        # From just below sp: arm64 Go code saves the caller's frame pointer at sp-8.
        low = max(_Q.unpack_from(data, 0)[0], mapping.start, sp - 16)
        bp = _Q.unpack_from(data, sched + layout.bp)[0]
        lr = _Q.unpack_from(data, sched + layout.lr)[0]
        regs = self._registers(pc, sp, bp, lr)
        return _Pending(g, data, base, mapping, low, min(hi - low, self.stack_bytes), regs)

    def _runtime_keys(self, data: bytes, status: int, creator: tuple) -> tuple:
        layout = self.runtime.layout
        keys = [("go_status", STATUS[status])]
        reason = self.reasons.get(data[layout.wait_reason]) if status in _PARKED else None
        if reason:
            keys.append(("wait_reason", reason))
        since = struct.unpack_from("<q", data, layout.wait_since)[0]
        now_ns = self.now_ns
        if now_ns is not None and since > 0 and status in (3, *_PARKED) and now_ns >= since:
            # The runtime stamps it only when a GC finds the goroutine blocked (mgcmark.go);
            # its own dumps print it in minutes.
            keys.append((WAITED_S, str((now_ns - since) // 1_000_000_000)))
        if creator:
            keys.extend(_creator_keys(data, layout))
        labels = _labels(self.memory, data, layout)
        if labels:
            keys.append((LABELS, labels_text(labels)))
        key = tuple(keys)
        if len(self._keys) < _MAX_KEY_SETS:
            return self._keys.setdefault(key, key)
        return self._keys.get(key, key)

    def _stack_mapping(self, sp: int) -> Optional[MemoryMap]:
        last = self._mapping
        if last is not None and last.start <= sp < last.end:
            return last
        found = next((m for m in self.maps if m.start <= sp < m.end), None)
        if found is not None:
            self._mapping = found
        return found


_MAX_KEY_SETS = 4096


class _Pending:
    """A goroutine decoded, its stack not read yet."""

    __slots__ = ("g", "data", "base", "mapping", "low", "size", "regs")

    def __init__(self, g, data, base, mapping, low, size, regs) -> None:
        self.g, self.data, self.base, self.mapping = g, data, base, mapping
        self.low, self.size, self.regs = low, size, regs


def _creator_site(data: bytes, layout: GoLayout) -> Tuple[Tuple[str, int], ...]:
    """The call site to name where the goroutine was created: its `go` statement's pc,
    named later by the analysis as `created_by` (not for goroutine 1, main's, which the
    runtime started)."""
    gopc = _Q.unpack_from(data, layout.gopc)[0] if layout.gopc is not None else 0
    return (("created_by", gopc),) if gopc else ()


def _creator_keys(data: bytes, layout: GoLayout) -> List[Tuple[str, str]]:
    """The keys of where a goroutine with a creator site was created, as Go's dumps print
    it: `created_by` (its value, the call site, named later) and the creating goroutine
    (`parent_goroutine`, Go 1.21+; 0, the runtime's own, is left out, as Go leaves it out)."""
    keys = [("created_by", "")]
    parent = _Q.unpack_from(data, layout.parent_goid)[0] if layout.parent_goid else 0
    if parent:
        keys.append(("parent_goroutine", str(parent)))
    return keys


def _labels(memory, data: bytes, layout: GoLayout) -> List[Tuple[str, str]]:
    """The goroutine's pprof labels (`pprof.Do`, `SetGoroutineLabels`), sorted by key: a
    slice of (key, value) strings since Go 1.24, a map[string]string before (its buckets
    read for a map of up to 16 buckets that is not growing). Bounded; unreadable: none."""
    at = _Q.unpack_from(data, layout.labels)[0] if layout.labels is not None else 0
    head = memory.read(at, 8 if not layout.labels_slice else 16) if at else b""
    if len(head) < 8:
        return []
    if layout.labels_slice:
        if len(head) < 16:
            return []
        array, count = struct.unpack("<QQ", head)
        raw = memory.read(array, 32 * count) if array and 0 < count <= _MAX_LABELS else b""
        pairs = [struct.unpack_from("<QQQQ", raw, 32 * i) for i in range(len(raw) // 32)]
    else:
        pairs = _map_entries(memory, _Q.unpack(head)[0])
    out = {}
    for kptr, klen, vptr, vlen in pairs:
        key, value = _go_string(memory, kptr, klen), _go_string(memory, vptr, vlen)
        if key is not None and value is not None:
            out[key] = value
    return sorted(out.items())


_MAX_LABELS = 64
_BUCKET = 8 + 8 * 16 + 8 * 16 + 8  # bmap of map[string]string: tophash, keys, values, overflow
_MIN_TOP_HASH = 5  # runtime/map.go: below it, a tophash marks an empty or evacuated slot


def _map_entries(memory, hmap: int) -> List[Tuple[int, int, int, int]]:
    """A map[string]string's entries as (key pointer, length, value pointer, length)."""
    header = memory.read(hmap, 48) if hmap else b""
    if len(header) < 48:
        return []
    count, _flags, log2, _overflows, _seed, buckets, old = struct.unpack_from("<QBBHIQQ", header)
    if not count or count > _MAX_LABELS or log2 > 4 or old or not buckets:
        return []
    entries = []
    for i in range(1 << log2):
        bucket, hops = buckets + i * _BUCKET, 0
        while bucket and hops < 8 and len(entries) < count:
            raw = memory.read(bucket, _BUCKET)
            if len(raw) < _BUCKET:
                break
            for slot in range(8):
                if raw[slot] >= _MIN_TOP_HASH:
                    key = struct.unpack_from("<QQ", raw, 8 + 16 * slot)
                    value = struct.unpack_from("<QQ", raw, 136 + 16 * slot)
                    entries.append((*key, *value))
            bucket, hops = _Q.unpack_from(raw, _BUCKET - 8)[0], hops + 1
    return entries[:count]


def _go_string(memory, pointer: int, length: int) -> Optional[str]:
    if length == 0:
        return ""
    if not pointer or not 0 < length <= 256:
        return None
    raw = memory.read(pointer, length)
    return raw.decode("utf-8", "replace") if len(raw) == length else None


def _register_packer(arch: Arch):
    """A goroutine's saved context as registers: (pc, sp, fp, lr) -> Registers. On arm64
    also the link register, where it is saved (not 0): a function that saved no frame yet
    keeps its return address there."""
    fp = x86_64.RBP if arch is X86_64 else aarch64.FP
    without = Registers.packer((arch.pc, arch.sp, fp), arch)
    if arch is X86_64:
        return lambda pc, sp, bp, lr: without(pc, sp, bp)
    with_lr = Registers.packer((arch.pc, arch.sp, fp, aarch64.LR), arch)
    return lambda pc, sp, bp, lr: with_lr(pc, sp, bp, lr) if lr else without(pc, sp, bp)


def _wait_reasons(memory, at: int) -> Dict[int, str]:
    """runtime.waitReasonStrings: an array of Go strings (pointer, length), by reason."""
    data = memory.read(at, 16 * _MAX_WAIT_REASONS)
    out = {}
    for i in range(len(data) // 16):
        pointer, length = struct.unpack_from("<QQ", data, 16 * i)
        if not pointer or not 0 < length <= 64:
            continue
        text = memory.read(pointer, length)
        if len(text) == length:
            out[i] = text.decode("utf-8", "replace")
    return out
