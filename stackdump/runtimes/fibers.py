"""Fibers switched by boost.context's fcontext: boost.fiber and any library that calls
`jump_fcontext`/`ontop_fcontext`, and brpc's bthreads (its own copy, `bthread_jump_fcontext`).
The saved contexts are found in memory (`fcontext.py`); a bthread's id and entry function
come from brpc's TaskMeta pool (`brpc.py`), and so does which bthread a worker thread runs.
A fiber's stack begins in the trampoline `make_fcontext` set up, which has no CFI: reaching
it is the end of the stack, not a failure.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Optional, Sequence

from stackdump.capture.pages import MapIndex
from stackdump.runtimes.base import MAX_COROUTINES, Coroutines, Found, ProcessView, Runtime
from stackdump.types import CaptureOptions, ThreadSnapshot

# What sets a new context up: the first frame of every context it made returns into it (its
# `finish`), at the top of that context's stack.
START_NAMES = ("make_fcontext", "bthread_make_fcontext")

# Bounds of the search: code scanned for calls, memory scanned for saved contexts.
_CODE_SCAN_BYTES = 256 << 20
_MEMORY_SCAN_BYTES = 1 << 30


class Fibers(Runtime):
    name = "fcontext"
    coroutines = (
        "boost.context fibers: boost.fiber and others switching with jump_fcontext; brpc's bthreads"
    )

    def find(self, process: ProcessView) -> Optional[Found]:
        # Nothing is read until coroutines are asked for: every dump passes here.
        return _Fibers(process)

    def stack_end(self, functions: Sequence[Optional[str]], coroutine: str) -> Optional[int]:
        # A fiber's stack, or the stack of a thread running one, begins in the trampoline
        # the start function set up.
        if functions and functions[-1] in START_NAMES:
            return len(functions) - 1
        return None


class _Fibers(Found):
    def __init__(self, process: ProcessView) -> None:
        self._process = process

    def coroutines(
        self, threads: Sequence[ThreadSnapshot], options: CaptureOptions, keep, pages
    ) -> Coroutines:
        process, memory, maps = self._process, self._process.memory, self._process.maps
        fcontext = _loaded("fcontext")
        switches, starts = fcontext.switch_functions(memory, process.objects)
        if not switches:
            return Coroutines()
        by_address = {fn.address: fn for fn in switches}
        returns = fcontext.return_addresses(memory, maps, set(by_address), _CODE_SCAN_BYTES)
        if not returns:
            return Coroutines()
        found = fcontext.find_saved_contexts(
            memory,
            maps,
            {ra: by_address[target] for ra, target in returns.items()},
            starts,
            _MEMORY_SCAN_BYTES,
            MAX_COROUTINES,
            pages,
        )
        truncated = found.truncated
        index = MapIndex(maps)
        positions = {t.regs.sp: t.tid for t in threads if t.regs is not None}
        own_tops = {t.stack_top: t.tid for t in threads if t.stack_top}
        contexts = fcontext.live_contexts(found, index, positions, own_tops)
        resident_end = pages.resident_end(index)
        pool = _bthread_ids(process, switches)
        ids = pool.by_handle if pool is not None else {}
        if ids:
            # A bthread stack is reused: a saved context no live TaskMeta names is what a
            # bthread that ran on that stack before left behind (the one running there now
            # is its worker's thread section).
            contexts = [(c, o) for c, o in contexts if c.switch.kind != "bthread" or c.sp in ids]
        snapshots = []
        for c, owner in contexts:
            snapshot = dataclasses.replace(
                fcontext.context_snapshot(c, memory, index, options.stack_bytes, resident_end),
                coroutine=c.switch.kind,
                coroutine_id=ids.get(c.sp, (None, None))[0],
                entry=ids.get(c.sp, (None, None))[1],
                # A thread's own context, suspended while the thread runs a fiber.
                runtime_keys=(("main_context_of", str(owner)),) if owner is not None else (),
            )
            # Settled at once: 10,000 fibers' stack copies are never held together.
            snapshots.append(keep(snapshot) if keep is not None else snapshot)
        if pool is None:
            return Coroutines(tuple(snapshots), truncated)
        return Coroutines(tuple(snapshots), truncated, pool.running_on)


def _bthread_ids(process: ProcessView, switches):
    """brpc's TaskMeta pool (`brpc.py`), when the process switches bthreads."""
    if not any(fn.kind == "bthread" for fn in switches):
        return None
    brpc = _loaded("brpc")
    wanted = {brpc.NGROUP, brpc.BLOCK_GROUPS}
    for elf, found in process.objects_defining(process.objects, wanted, wanted):
        statics = (found[brpc.NGROUP], found[brpc.BLOCK_GROUPS])
        memory = process.memory
        layout = brpc.layout_from_dwarf(elf) or brpc.choose_layout(memory, statics)
        if layout is None:
            return None
        return brpc.bthread_ids(memory, statics, layout, MAX_COROUTINES * 4)
    return None


def _loaded(name: str):
    """fcontext.py or brpc.py, loaded when coroutines are asked for: with the DWARF reader
    brpc needs, they cost every dump's start-up ~10 ms (issue 31)."""
    return importlib.import_module(f"stackdump.runtimes.{name}")
