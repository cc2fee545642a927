"""Who holds the mutex a thread waits for, and which waits close a cycle (a deadlock).

A thread blocked in `pthread_mutex_lock` sleeps in futex(2) on the mutex's first word; capture
read that word and the three after it while the thread waited (`ThreadContext.futex`). In
glibc's `struct __pthread_mutex_s` (sysdeps/nptl/bits/struct_mutex.h, the same on x86-64 and
aarch64, and part of the ABI: `PTHREAD_MUTEX_INITIALIZER` is compiled into programs) the
third word, `__owner`, is the TID of the thread holding it. Its offset is taken from libc's
DWARF where the dump reads DWARF and libc has it (libc6-dbg), else from that layout. A futex
wait counts as a mutex wait only when the stack says so (a pthread mutex lock function in its
innermost frames): condition variables, semaphores and hand-rolled futexes wait on words that
name no owner.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from stackdump.types import ThreadReport

OWNER_OFFSET = 8
# Innermost frames looked at for the lock path (futex syscall wrapper, __lll_lock_wait,
# pthread_mutex_lock).
_LOCK_DEPTH = 6


def _is_mutex_lock(function: Optional[str]) -> bool:
    if not function:
        return False
    name = function.lstrip("_")
    if name.startswith("lll_lock_wait"):
        return "private" not in name  # glibc's internal locks are not pthread mutexes
    return name.startswith("pthread_mutex_") and "lock" in name and "unlock" not in name


def owner_offset(
    threads: Sequence[ThreadReport], member_offset: Callable[[int, str, str], Optional[int]]
) -> int:
    """Where glibc's mutex keeps its owner: as the DWARF of a thread's lock frame declares
    it (`member_offset(pc, struct, member)`), else the ABI's layout."""
    pc = lock_frame_pc(threads)
    if pc is None:
        return OWNER_OFFSET
    try:
        found = member_offset(pc, "__pthread_mutex_s", "__owner")
    except Exception:  # noqa: BLE001 - a layout we cannot read costs the DWARF answer only
        found = None
    return found if found is not None else OWNER_OFFSET


def lock_frame_pc(threads: Sequence[ThreadReport]) -> Optional[int]:
    """The lookup address of a pthread mutex lock frame (a return address, so pc-1), whose
    CU's DWARF declares the mutex layout; None when no thread waits in one."""
    for thread in threads:
        if thread.context is None or thread.context.futex is None:
            continue
        for frame in thread.frames[1:_LOCK_DEPTH]:
            if _is_mutex_lock(frame.function) and frame.function.lstrip("_").startswith("pthread"):
                return frame.pc - 1
    return None


def mutex_wait(thread: ThreadReport, owner_offset: int = OWNER_OFFSET) -> Optional[Tuple[int, int]]:
    """(mutex address, owner TID or 0) when the thread waits to lock a pthread mutex."""
    context = thread.context
    if context is None or context.futex is None:
        return None
    if not any(_is_mutex_lock(f.function) for f in thread.frames[:_LOCK_DEPTH]):
        return None
    address, words = context.futex
    if not 0 <= owner_offset <= len(words) - 4:
        return None
    owner = int.from_bytes(words[owner_offset : owner_offset + 4], "little", signed=True)
    return address, max(owner, 0)


def with_mutex_waits(
    threads: Sequence[ThreadReport],
    owner_offset: int = OWNER_OFFSET,
    known: Optional[Dict[int, tuple]] = None,
) -> Tuple[Tuple[ThreadReport, ...], Tuple[Tuple[int, ...], ...]]:
    """The threads with `waits_for_mutex`/`mutex_holder` filled in, and every cycle of
    waits (each from its lowest TID). A thread queued behind a cycle, or waiting for a holder
    that is not itself waiting for a mutex, is a wait, not a deadlock. `owner_offset`: where
    `__owner` is, from libc's DWARF when the caller found it there. `known`: each report's
    `mutex_wait` by its identity (kept with it), for this offset, filled as found: sampling
    counts most threads again from their last report."""
    out: List[ThreadReport] = []
    holder_of: Dict[int, int] = {}
    for thread in threads:
        if known is None:
            wait = mutex_wait(thread, owner_offset)
        else:
            found = known.get(id(thread))
            if found is None or found[0] is not thread:
                found = known[id(thread)] = (thread, mutex_wait(thread, owner_offset))
            wait = found[1]
        if wait is None:
            out.append(thread)
            continue
        address, owner = wait
        out.append(dataclasses.replace(thread, waits_for_mutex=address, mutex_holder=owner))
        if owner:
            holder_of[thread.tid] = owner
    return tuple(out), find_cycles(holder_of)


def find_cycles(holder_of: Dict[int, int]) -> Tuple[Tuple[int, ...], ...]:
    """Cycles in a waits-for graph where each thread waits for at most one other."""
    cycles = set()
    done: set = set()
    for start in holder_of:
        path: List[int] = []
        on_path: Dict[int, int] = {}
        tid: Optional[int] = start
        while tid is not None and tid not in done and tid not in on_path:
            on_path[tid] = len(path)
            path.append(tid)
            tid = holder_of.get(tid)
        if tid is not None and tid in on_path:
            cycle = path[on_path[tid] :]
            low = cycle.index(min(cycle))
            cycles.add(tuple(cycle[low:] + cycle[:low]))
        done.update(path)
    return tuple(sorted(cycles))
