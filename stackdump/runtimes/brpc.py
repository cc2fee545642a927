"""brpc bthread ids and entry functions, for the bthreads `fcontext.py` found.

brpc keeps every bthread's `TaskMeta` in `butil::ResourcePool<bthread::TaskMeta>`: `_ngroup`
block groups in `_block_groups`, each with `nblock` blocks of `BLOCK_NITEM` items and an
`nitem` count, as brpc's own tools/gdb_bthread_stack.py walks them. A TaskMeta is live when the
version in its `tid` (high 32 bits) equals `*version_butex`; it has run when it has a
`stack`, whose `ContextualStack.context` is the stack pointer its last switch saved: the handle
by which fcontext.py knows the suspended bthread. So each handle gets its bthread id (`tid`)
and entry function (`fn`).

Struct layouts come from the target's DWARF (the CU holding `TaskGroup::task_runner`, which
defines both structs). Without DWARF, from `LAYOUTS`: brpc's x86-64 layouts from 0.9.7 to
today, measured by compiling `offsetof` against each release's own headers (see its comment),
and chosen by which one the pool's memory agrees with: the layouts differ in the TaskMeta's
size (the pool's stride), where `fn`/`stack` are, and where ContextualStack keeps `context`
(after the vtable 1.13 added), so under a wrong one items fail the checks a right one passes
(a live version, a saved stack pointer inside the bthread's own stack). Only memory is read,
while every thread runs; every count is bounded, and a torn or garbage read costs that
bthread its id, never the dump.
"""

from __future__ import annotations

import bisect
import struct
from typing import Dict, Optional, Tuple

from stackdump.capture.remote import RemoteMemory
from stackdump.elf.image import ElfObject, parse_errors
from stackdump.records import frozen
from stackdump.symbols.dwarf import DwarfIndex

NGROUP = "_ZN5butil12ResourcePoolIN7bthread8TaskMetaEE7_ngroupE"
BLOCK_GROUPS = "_ZN5butil12ResourcePoolIN7bthread8TaskMetaEE13_block_groupsE"
TASK_RUNNER = "_ZN7bthread9TaskGroup11task_runnerEl"
MAX_GROUPS = 65536  # RP_MAX_BLOCK_NGROUP
GROUP_NBLOCK = 65536  # RP_GROUP_NBLOCK
BLOCK_MAX_SIZE, BLOCK_MAX_ITEM = 64 * 1024, 256  # ResourcePoolBlockMax{Size,Item} defaults
_Q = struct.Struct("<Q")


@frozen
class Layout:
    meta_size: int
    version_butex: int
    tid: int
    fn: int
    stack: int
    context: int  # in ContextualStack
    source: str  # "dwarf", or the brpc releases a built-in layout is for
    attr: int = 72  # TaskMeta.attr, whose first field is the stack type (0: the pthread's own)
    storage: int = 24  # ContextualStack.storage (a StackStorage)
    stacksize: int = 0  # in StackStorage
    bottom: int = 8  # in StackStorage: the stack's highest address

    @property
    def block_nitem(self) -> int:
        return min(max(BLOCK_MAX_SIZE // self.meta_size, 1), BLOCK_MAX_ITEM)


# brpc's layouts on x86-64, from `offsetof`/`sizeof` compiled against each release's headers
# (git archive TAG src; g++ -S of an array of offsetof values): TaskMeta size, version_butex,
# tid, fn, stack, attr; ContextualStack context, storage; StackStorage stacksize, bottom.
# What moved: 1.8 added TaskMeta.sleep_failed (size 136); 1.12 TaskMeta.status and friends
# (160); 1.13 ContextualStack's virtual destructor (context 0 -> 8, storage 16 -> 24); 1.16
# more TaskMeta state (232); after 1.17, priority_index before fn (240, fn 48).
LAYOUTS = (
    Layout(240, 24, 32, 48, 64, 8, "brpc after 1.17", 72, 24, 0, 8),
    Layout(232, 24, 32, 40, 56, 8, "brpc 1.16-1.17", 64, 24, 0, 8),
    Layout(160, 24, 32, 40, 56, 8, "brpc 1.13-1.15", 64, 24, 0, 8),
    Layout(160, 24, 32, 40, 56, 0, "brpc 1.12", 64, 16, 0, 8),
    Layout(136, 24, 32, 40, 56, 0, "brpc 1.8-1.11", 64, 16, 0, 8),
    Layout(128, 24, 32, 40, 56, 0, "brpc 0.9.7-1.7", 64, 16, 0, 8),
)
_PROBE_ITEMS = 512  # items read per layout to choose one


def layout_from_dwarf(elf: ElfObject) -> Optional[Layout]:
    """The layout the binary's DWARF declares, or None without DWARF."""
    try:
        starts = [start for _, start in elf.symbols().named({TASK_RUNNER})]
        if not starts or not elf.has_section(".debug_info"):
            return None
        dwarf = DwarfIndex(elf)
        cu_offset = dwarf.cu_offset(starts[0], True)
        meta = (
            dwarf.struct_layout(cu_offset, "bthread::TaskMeta") if cu_offset is not None else None
        )
        stack = dwarf.struct_layout(cu_offset, "bthread::ContextualStack") if meta else None
    except parse_errors():
        return None
    storage = dwarf.struct_layout(cu_offset, "bthread::StackStorage") if stack else None
    if not meta or not stack or not storage:
        return None
    size, members = meta
    try:
        return Layout(
            size,
            members["version_butex"],
            members["tid"],
            members["fn"],
            members["stack"],
            stack[1]["context"],
            "dwarf",
            members["attr"],
            stack[1]["storage"],
            storage[1]["stacksize"],
            storage[1]["bottom"],
        )
    except KeyError:
        return None


@frozen
class Bthreads:
    """What the TaskMeta pool says: each suspended bthread by its saved stack pointer, and
    the stack each live bthread owns (to tell which one a worker thread is running)."""

    by_handle: Dict[int, Tuple[int, int]]  # saved sp -> (bthread id, entry function)
    stacks: Tuple[Tuple[int, int, int], ...]  # (low, high, bthread id), sorted

    def running_on(self, sp: int) -> Optional[int]:
        """The bthread whose stack holds `sp`: the one a worker with that sp is running."""
        i = bisect.bisect_right(self.stacks, (sp, float("inf"), 0)) - 1
        if i >= 0 and self.stacks[i][0] <= sp < self.stacks[i][1]:
            return self.stacks[i][2]
        return None


def bthread_ids(
    memory: RemoteMemory, statics: Tuple[int, int], layout: Layout, limit: int
) -> Bthreads:
    """Every live bthread that has a stack: its id and entry function by its saved stack
    pointer, and its stack's range. `statics`: the addresses of `_ngroup` and
    `_block_groups`."""
    found: Dict[int, Tuple[int, int]] = {}
    stacks: list = []
    for item in _live(memory, statics, layout, limit):
        tid, fn, handle, stack = item
        if stack is not None:
            stacks.append((*stack, tid))
        if handle:
            found[handle] = (tid, fn)
    return Bthreads(found, tuple(sorted(stacks)))


def choose_layout(memory: RemoteMemory, statics: Tuple[int, int]) -> Optional[Layout]:
    """The built-in layout the pool's memory agrees with most: the one under which most of
    its first items are live bthreads whose saved stack pointer is inside their own stack.
    None when none does (no bthread has run yet, or not brpc's pool as we know it)."""
    best, best_score = None, 0
    for layout in LAYOUTS:
        score = sum(
            1
            for _, _, handle, stack in _live(memory, statics, layout, _PROBE_ITEMS)
            if stack is not None and stack[0] <= handle < stack[1]
        )
        if score > best_score:
            best, best_score = layout, score
    return best


def _live(memory, statics, layout: Layout, limit: int):
    """(tid, fn, saved sp, (stack low, stack high) or None) of each live TaskMeta with a
    stack, of at most `limit` items read."""
    ngroup_at, groups_at = statics
    ngroup = _word(memory, ngroup_at)
    if ngroup is None:
        return
    nitem_at = layout.meta_size * layout.block_nitem
    seen = 0
    for g in range(min(ngroup, MAX_GROUPS)):
        group = _word(memory, groups_at + 8 * g)
        nblock = _word(memory, group) if group else None
        if not nblock:
            continue
        pointers = memory.read(group + 8, 8 * min(nblock, GROUP_NBLOCK))
        for (block,) in struct.iter_unpack("<Q", pointers[: len(pointers) // 8 * 8]):
            if not block:
                continue
            data = memory.read(block, nitem_at + 8)
            if len(data) < nitem_at + 8:
                continue
            nitem = min(_Q.unpack_from(data, nitem_at)[0], layout.block_nitem)
            for i in range(nitem):
                seen += 1
                if seen > limit:
                    return
                item = _item(memory, layout, data, i * layout.meta_size)
                if item is not None:
                    yield item


def _item(memory, layout: Layout, data: bytes, meta: int):
    tid = _Q.unpack_from(data, meta + layout.tid)[0]
    stack = _Q.unpack_from(data, meta + layout.stack)[0]
    butex = _Q.unpack_from(data, meta + layout.version_butex)[0]
    if not stack or not butex or not tid:
        return None
    if struct.unpack_from("<i", data, meta + layout.attr)[0] == 0:
        return None  # a worker's main task, on the pthread's own stack: that thread
    version = memory.read(butex, 4)
    if len(version) != 4 or struct.unpack("<I", version)[0] != tid >> 32:
        return None  # a TaskMeta freed or reused: not a live bthread
    end = layout.storage + layout.bottom + 8
    block_of_stack = memory.read(stack, end)
    if len(block_of_stack) < end:
        return None
    handle = _Q.unpack_from(block_of_stack, layout.context)[0]
    size = struct.unpack_from("<i", block_of_stack, layout.storage + layout.stacksize)[0]
    bottom = _Q.unpack_from(block_of_stack, layout.storage + layout.bottom)[0]
    in_range = (bottom - size, bottom) if 0 < size <= 1 << 30 and bottom > size else None
    return tid, _Q.unpack_from(data, meta + layout.fn)[0], handle, in_range


def _word(memory: RemoteMemory, address: int) -> Optional[int]:
    if not address:
        return None
    data = memory.read(address, 8)
    return _Q.unpack(data)[0] if len(data) == 8 else None
