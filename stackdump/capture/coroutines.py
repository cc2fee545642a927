"""The coroutine search over a process's memory, live or in a core: suspended boost.context
fibers and bthreads (`fcontext.py`), brpc's ids for them (`bthreads.py`), each unwound as a
snapshot of its own, and which coroutine each worker thread was running.

`memory` reads the process (`remote.RemoteMemory` live, `core.CoreMemory` from a core),
`pages` says which of its pages exist (`fcontext.Pagemap` from /proc/PID/pagemap live, the
core's dumped segments). Nothing here stops a thread.
"""

from __future__ import annotations

import contextlib
import dataclasses

from stackdump.capture import bthreads, fcontext, goroutines
from stackdump.elf.image import PARSE_ERRORS, ElfObject
from stackdump.elf.modules import ModuleMap
from stackdump.types import CaptureOptions, ThreadSnapshot

# Bounds of the fiber search (capture/fcontext.py): code scanned for calls, memory scanned
# for saved contexts, contexts kept.
_CODE_SCAN_BYTES = 256 << 20
_MEMORY_SCAN_BYTES = 1 << 30
_MAX_COROUTINES = 100_000


def mapped_paths(maps, files) -> dict:
    """Each mapped executable file's path in the maps -> where it can be opened."""
    paths = {}
    modules = ModuleMap(maps)
    for m in maps:
        if m.is_file and m.executable and m.file_path not in paths:
            hit = modules.lookup(m.start)
            path = files.path(hit[0]) if hit is not None else None
            if path is not None:
                paths[m.file_path] = path
    return paths


def after_capture(
    memory,
    maps,
    files,
    pid: int,
    tids,
    threads,
    options: CaptureOptions,
    keep,
    pages,
    now_ns=None,
):
    """What the runtimes add once every thread runs again, for a live process and a core
    alike: each Go thread's goroutine and stack (runtime keys) and, with `--coroutines`, the
    suspended coroutines and the one each worker thread runs. `pages()`: the page-presence
    reader (fcontext.Pagemap, core.CorePages), made and closed only when coroutines are
    looked for. (threads, coroutines or None, whether a bound was reached)."""
    go = go_runtime(memory, maps, files, pid, tids)
    threads = with_go_keys(memory, go, threads)
    if not options.coroutines:
        return threads, None, False
    with contextlib.closing(pages()) as reader:
        coroutines, truncated, running = find_coroutines(
            memory, maps, files, threads, options, keep, reader, go, now_ns
        )
    return [mark_running(t, running) for t in threads], coroutines, truncated


def find_coroutines(
    memory, maps, files, threads, options: CaptureOptions, keep, pages, go=None, now_ns=None
):
    """(coroutine snapshots, whether a bound was reached, which bthread a worker thread's sp
    runs). `go`: the process's Go runtime (`go_runtime`), when it is a Go program; `now_ns`:
    CLOCK_MONOTONIC when the process is live (the clock Go stamps waits with)."""
    paths = mapped_paths(maps, files)
    go = (
        goroutines.goroutines(memory, go, maps, options.stack_bytes, _MAX_COROUTINES, keep, now_ns)
        if go is not None
        else []
    )
    switches = fcontext.switch_functions(memory, maps, paths)
    if not switches:
        return tuple(go), False, _nothing_running
    by_address = {fn.address: fn for fn in switches}
    returns = fcontext.return_addresses(memory, maps, set(by_address), _CODE_SCAN_BYTES)
    if not returns:
        return tuple(go), False, _nothing_running
    skip = [(t.stack_map.start, t.stack_map.end) for t in threads if t.stack_map is not None]
    skip += [(m.start, m.end) for m in maps if m.path == "[stack]"]
    contexts, truncated = fcontext.find_saved_contexts(
        memory,
        maps,
        {ra: by_address[target] for ra, target in returns.items()},
        skip,
        _MEMORY_SCAN_BYTES,
        _MAX_COROUTINES,
        pages,
    )
    index = fcontext.MapIndex(maps)
    resident_end = pages.resident_end(index)
    pool = _bthread_ids(memory, maps, paths, switches)
    ids = pool.by_handle if pool is not None else {}
    if ids:
        # A bthread stack is reused: a saved context no live TaskMeta names is what a
        # bthread that ran on that stack before left behind (the one running there now
        # is its worker's thread section).
        contexts = [c for c in contexts if c.switch.kind != "bthread" or c.sp in ids]
    snapshots = []
    for c in contexts:
        snapshot = dataclasses.replace(
            fcontext.context_snapshot(c, memory, index, options.stack_bytes, resident_end),
            coroutine=c.switch.kind,
            coroutine_id=ids.get(c.sp, (None, None))[0],
            entry=ids.get(c.sp, (None, None))[1],
        )
        # Settled at once: 10,000 fibers' stack copies are never held together.
        snapshots.append(keep(snapshot) if keep is not None else snapshot)
    snapshots.extend(go)
    return tuple(snapshots), truncated, pool.running_on if pool is not None else _nothing_running


def go_runtime(memory, maps, files, pid: int, tids):
    """The Go runtime when the executable (the first file mapped) is a Go program (has
    `.gopclntab`), else None."""
    exe = next((m.file_path for m in maps if m.is_file), None)
    # Only the executable's path is resolved: this runs on every dump, Go or not.
    paths = mapped_paths([m for m in maps if m.file_path == exe], files)
    for elf, found in _objects_defining(maps, paths, goroutines.SYMBOLS, set(), ".gopclntab"):
        return goroutines.find_runtime(memory, elf, found.pop("", 0), found, pid, tids)
    return None


def with_go_keys(memory, runtime, threads) -> list:
    """Each Go thread with the goroutine it serves and the stack it was on (runtime keys)."""
    if runtime is None:
        return list(threads)
    keys = goroutines.thread_keys(memory, runtime, threads)
    return [
        dataclasses.replace(t, runtime_keys=t.runtime_keys + keys[t.tid]) if t.tid in keys else t
        for t in threads
    ]


def _objects_defining(maps, paths, names, required, section: str = ""):
    """(ELF object, where each of `names` it defines is in the process, and its load bias
    under "") for each mapped object that defines every one of `required` (and holds
    `section`, when given); the object is open while the caller looks at it."""
    for mapped, path in paths.items():
        try:
            elf = ElfObject.open(path)
        except (OSError, *PARSE_ERRORS):
            continue
        try:
            if section and not elf.has_section(section):
                continue
            values = elf.symbol_values(names)
            if not required <= set(values):
                continue
            first = next((m for m in maps if m.path == mapped), None)
            vaddr = elf.file_offset_to_vaddr(first.offset) if first is not None else None
            if vaddr is None:
                continue
            # The load bias: 0 for a fixed-address executable, the mapping's for a PIE/DSO.
            bias = first.start - vaddr
            yield elf, {"": bias, **{name: bias + value for name, value in values.items()}}
        finally:
            elf.close()


def _nothing_running(sp: int) -> None:
    return None


def mark_running(thread: ThreadSnapshot, running) -> ThreadSnapshot:
    """A worker thread with the coroutine it was running (its sp is in that one's stack)."""
    coroutine = running(thread.regs.sp) if thread.regs is not None else None
    if coroutine is None:
        return thread
    return dataclasses.replace(thread, running_coroutine=coroutine)


def _bthread_ids(memory, maps, paths, switches):
    """brpc's TaskMeta pool (capture/bthreads.py), when the process switches bthreads."""
    if not any(fn.kind == "bthread" for fn in switches):
        return None
    wanted = {bthreads.NGROUP, bthreads.BLOCK_GROUPS}
    for elf, found in _objects_defining(maps, paths, wanted, wanted):
        del found[""]
        statics = (found[bthreads.NGROUP], found[bthreads.BLOCK_GROUPS])
        layout = bthreads.layout_from_dwarf(elf) or bthreads.choose_layout(memory, statics)
        if layout is None:
            return None
        return bthreads.bthread_ids(memory, statics, layout, _MAX_COROUTINES * 4)
    return None
