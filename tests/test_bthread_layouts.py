"""brpc's TaskMeta pool read with each release's layout: without DWARF, the layout is chosen by
which one the pool's memory agrees with, and each release's pool gives its bthread ids, entry
functions and stacks. The pools are laid out in bytes here, as each release lays them out (the
offsets in capture/bthreads.py's LAYOUTS); the pool of the brpc built from source is read
live in test_coroutines.py."""

from __future__ import annotations

import struct

import pytest

from stackdump.runtimes import brpc as bthreads


class Pool:
    """A sparse address space holding one ResourcePool<TaskMeta> as brpc lays it out."""

    NGROUP, GROUPS, GROUP, BLOCK, STACKS, BUTEXES = (
        0x1000,
        0x2000,
        0x10000,
        0x100000,
        0x10000000,
        0x900000,
    )

    def __init__(self, layout: bthreads.Layout, live: int, freed: int) -> None:
        self.regions = {}
        self.put(self.NGROUP, struct.pack("<Q", 1))
        self.put(self.GROUPS, struct.pack("<Q", self.GROUP))
        self.put(self.GROUP, struct.pack("<QQ", 1, self.BLOCK))
        block = bytearray(layout.meta_size * layout.block_nitem + 8)
        struct.pack_into("<Q", block, layout.meta_size * layout.block_nitem, live + freed)
        self.expected = {}
        for i in range(live + freed):
            meta = i * layout.meta_size
            version = 7 + i
            butex = self.BUTEXES + 8 * i
            self.put(butex, struct.pack("<I", version if i < live else version + 1))
            tid = version << 32 | (i + 1)
            stack = self.STACKS + 0x100000 * i
            high = stack + 0x1000 + 0x20000  # its stack: 128 KiB above a guard page
            saved_sp = high - 0x400
            struct.pack_into("<Q", block, meta + layout.version_butex, butex)
            struct.pack_into("<Q", block, meta + layout.tid, tid)
            struct.pack_into("<Q", block, meta + layout.fn, 0x401000 + i)
            struct.pack_into("<Q", block, meta + layout.stack, stack)
            struct.pack_into("<i", block, meta + layout.attr, 2)  # STACK_TYPE_NORMAL
            contextual = bytearray(64)
            if layout.context:
                struct.pack_into("<Q", contextual, 0, 0x600000)  # the vtable
            struct.pack_into("<Q", contextual, layout.context, saved_sp)
            struct.pack_into("<i", contextual, layout.context + 8, 2)  # stacktype
            struct.pack_into("<I", contextual, layout.storage + layout.stacksize, 0x20000)
            struct.pack_into("<Q", contextual, layout.storage + layout.bottom, high)
            self.put(stack, bytes(contextual))
            if i < live:
                self.expected[saved_sp] = (tid, 0x401000 + i)
        self.put(self.BLOCK, bytes(block))

    def put(self, address: int, data: bytes) -> None:
        self.regions[address] = data

    def read(self, address: int, size: int) -> bytes:
        for start, data in self.regions.items():
            if start <= address < start + len(data):
                return data[address - start : address - start + size]
        return b""


@pytest.mark.parametrize("layout", bthreads.LAYOUTS, ids=lambda layout: layout.source)
def test_each_releases_pool_is_read_with_its_own_layout(layout):
    pool = Pool(layout, live=20, freed=5)
    statics = (Pool.NGROUP, Pool.GROUPS)

    assert bthreads.choose_layout(pool, statics) == layout
    found = bthreads.bthread_ids(pool, statics, layout, 10_000)
    assert found.by_handle == pool.expected
    assert found.running_on(Pool.STACKS + 0x100000 * 3 + 0x2000) == (10 << 32 | 4)


def test_garbage_pools_choose_no_layout_and_bound_the_walk():
    pool = Pool(bthreads.LAYOUTS[0], live=0, freed=0)
    pool.put(Pool.NGROUP, struct.pack("<Q", 1 << 62))
    pool.put(Pool.GROUP, struct.pack("<Q", 1 << 62) + struct.pack("<Q", Pool.BLOCK) * 8)
    statics = (Pool.NGROUP, Pool.GROUPS)
    assert bthreads.choose_layout(pool, statics) is None
    assert bthreads.bthread_ids(pool, statics, bthreads.LAYOUTS[0], 100).by_handle == {}
