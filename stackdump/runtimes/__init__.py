"""Runtimes as plug-ins: the registry (`RUNTIMES`, asked in this order) and the questions
the layers above ask all of them at once. What one runtime may contribute is
`base.Runtime`; each runtime is one module (`go/`, `fibers.py`, `jit.py`). To add one, write
its module and add it to `RUNTIMES` (docs/ARCHITECTURE.md, "How to add a runtime").
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, List, Optional, Sequence, Tuple

from stackdump.elf.store import LoadedObject
from stackdump.runtimes.base import Found, ProcessView, Runtime, labels_of, waited_s
from stackdump.runtimes.fibers import Fibers
from stackdump.runtimes.go import Go
from stackdump.runtimes.jit import Jit
from stackdump.types import CaptureOptions, MemoryMap, ReportHeader, ThreadReport, ThreadSnapshot

# Fibers before Go: coroutines are listed in this order.
RUNTIMES: Tuple[Runtime, ...] = (Fibers(), Go(), Jit())


def _answering(method: str) -> Tuple[Runtime, ...]:
    """The runtimes whose class answers `method` itself (in `RUNTIMES`' order): the others
    give `base.Runtime`'s nothing, and a profile asks some of these for every sample."""
    return tuple(r for r in RUNTIMES if getattr(type(r), method) is not getattr(Runtime, method))


_STACK_END = _answering("stack_end")
_HINTS = _answering("hints")
_ANONYMOUS = _answering("anonymous_code")
_OWN_CODE = _answering("own_code")
_LOCKS = _answering("waits_for_lock")

__all__ = [
    "RUNTIMES", "Absent", "ProcessView", "after_capture", "anonymous_code", "coroutine_kinds",
    "hints", "labels_of", "own_code", "stack_end", "waited_s", "waits_for_lock",
]  # fmt: skip


class Absent:
    """The runtimes not found in a process, for as long as its maps stay the same: a runtime
    is found from the mapped objects (their symbols, sections, anonymous code), so it cannot
    appear without a change of maps. Looking costs ~0.3 ms a sample (every mapped object's
    section headers are read again); a profile asks this instead."""

    def __init__(self) -> None:
        self._maps: Optional[Sequence[MemoryMap]] = None
        self._names: set = set()

    def ruled_out(self, maps: Sequence[MemoryMap], runtime: Runtime) -> bool:
        if maps is not self._maps and maps != self._maps:
            self._maps, self._names = maps, set()
        return runtime.name in self._names

    def rule_out(self, maps: Sequence[MemoryMap], runtime: Runtime) -> None:
        if maps is self._maps:
            self._names.add(runtime.name)


def coroutine_kinds() -> str:
    """What `--coroutines` lists, runtime by runtime (its help)."""
    return "; ".join(r.coroutines for r in RUNTIMES if r.coroutines)


def after_capture(
    process: ProcessView,
    threads: Sequence[ThreadSnapshot],
    options: CaptureOptions,
    keep,
    pages,
    absent: Optional[Absent] = None,
) -> Tuple[List[ThreadSnapshot], Optional[Tuple[ThreadSnapshot, ...]], bool]:
    """What the runtimes add once every thread runs again, for a live process and a core
    alike: their words for each thread and, with `--coroutines`, their suspended
    coroutines and the one each worker thread runs. `pages()`: the page-presence reader,
    made and closed only when coroutines are looked for. (threads, coroutines or None,
    whether a bound was reached). `absent`: runtimes already known not to be in a process
    with these maps (a profile's earlier samples)."""
    found: List[Found] = []
    for runtime in RUNTIMES:
        if absent is not None and absent.ruled_out(process.maps, runtime):
            continue
        here = runtime.find(process)
        if here is not None:
            found.append(here)
        elif absent is not None:
            absent.rule_out(process.maps, runtime)
    annotated = list(threads)
    for runtime in found:
        annotated = runtime.annotate(annotated)
    if not options.coroutines:
        return annotated, None, False
    snapshots: List[ThreadSnapshot] = []
    truncated = False
    running = []
    with contextlib.closing(pages()) as reader:
        for runtime in found:
            listed = runtime.coroutines(annotated, options, keep, reader)
            snapshots.extend(listed.snapshots)
            truncated = truncated or listed.truncated
            running.append(listed.running)
    return [_mark_running(t, running) for t in annotated], tuple(snapshots), truncated


def _mark_running(thread: ThreadSnapshot, running) -> ThreadSnapshot:
    """A worker thread with the coroutine it was running (its sp is in that one's stack)."""
    if thread.regs is None:
        return thread
    sp = thread.regs.sp
    coroutine = next((c for c in (r(sp) for r in running) if c is not None), None)
    return thread if coroutine is None else dataclasses.replace(thread, running_coroutine=coroutine)


def own_code(loaded: LoadedObject) -> Optional[Any]:
    """The runtime that owns an object's code (its CFI rows and frame names), if any."""
    return next((c for c in (r.own_code(loaded) for r in _OWN_CODE) if c is not None), None)


def anonymous_code(maps: Sequence[MemoryMap], pid: Optional[int]) -> Optional[Any]:
    """Names for code in no object (JIT code), if a runtime gives them."""
    found = (r.anonymous_code(maps, pid) for r in _ANONYMOUS)
    return next((c for c in found if c is not None), None)


def hints(header: ReportHeader, threads: Sequence[ThreadReport]) -> Tuple[str, ...]:
    """Every runtime's hints for this report (`base.Runtime.hints`)."""
    return tuple(h for r in _HINTS for h in r.hints(header, threads))


def waits_for_lock(runtime_keys: Sequence[Tuple[str, str]]) -> bool:
    """Whether a runtime says a coroutine with these keys waits to take a lock."""
    return any(r.waits_for_lock(runtime_keys) for r in _LOCKS)


def stack_end(functions: Sequence[Optional[str]], coroutine: str) -> Optional[int]:
    """Where the first runtime that knows ends this stack (module `base.Runtime`)."""
    return next(
        (e for e in (r.stack_end(functions, coroutine) for r in _STACK_END) if e is not None), None
    )
