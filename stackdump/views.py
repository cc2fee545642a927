"""Orders and groupings of a report's threads that several writers share: busiest first
(`--sort cpu`), and threads merged by stack (`--group`). Pure functions of the Report."""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

from stackdump.records import frozen
from stackdump.types import Report, SymbolizedFrame, ThreadReport, ThreadStatus


def sort_by_cpu(report: Report) -> Report:
    """Threads ordered by the CPU they used in the window measured before capture, busiest
    first; equal ones (and unmeasured ones, last) keep their order."""

    def used(t: ThreadReport) -> int:
        c = t.context
        return -1 if c is None or c.recent_cpu_ms is None else c.recent_cpu_ms

    ordered = sorted(report.threads, key=used, reverse=True)
    return dataclasses.replace(report, threads=tuple(ordered))


def frame_label(f: SymbolizedFrame) -> str:
    """A frame's name where known, else where it is: `OBJECT+0xOFFSET` (the same in every
    process of a build), else its pc."""
    return label_of(f.function, f.module, f.module_offset, f.pc)


def label_of(
    function: Optional[str], module: Optional[str], module_offset: Optional[int], pc: int
) -> str:
    """`frame_label` from a frame's parts (a JSON dump's frame, for `stackdump merge`)."""
    if function is not None:
        return function
    if module is not None and module_offset is not None:
        return f"{module.rsplit('/', 1)[-1]}+0x{module_offset:x}"
    return f"0x{pc:x}"


def stack_labels(frames: Sequence[SymbolizedFrame]) -> Tuple[str, ...]:
    """Frames innermost first, inlined functions included, by name."""
    labels: List[str] = []
    for frame in frames:
        labels.extend(call.function or frame_label(frame) for call in frame.inlined)
        labels.append(frame_label(frame))
    return tuple(labels)


@frozen
class ThreadGroup:
    """Threads with the same stack (status `ok`), or the same status and syscall."""

    threads: Tuple[ThreadReport, ...]

    @property
    def first(self) -> ThreadReport:
        return self.threads[0]

    def names(self) -> List[Tuple[str, int]]:
        """(thread name, how many), most common first."""
        counts: Dict[str, int] = {}
        for t in self.threads:
            counts[t.name] = counts.get(t.name, 0) + 1
        return ranked(counts)


def ranked(counts: Dict[str, int]) -> List[Tuple[str, int]]:
    """(name, count), most common first, then by name: how every listing of names orders
    them."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def group_keys(t: ThreadReport) -> Tuple[Tuple[str, str], ...]:
    """The runtime keys a group shares (the runtime says which: not ids, not times)."""
    return tuple((k, v) for k, v in t.runtime_keys if k in t.group_keys)


def group_threads(threads: Sequence[ThreadReport]) -> Tuple[ThreadGroup, ...]:
    """Biggest group first; equal sizes in the order their first thread came."""
    groups: Dict[tuple, List[ThreadReport]] = {}
    for t in threads:
        kernel = t.context.kernel_stack if t.context is not None else None
        if t.status is ThreadStatus.OK:
            key: tuple = ("ok", stack_labels(t.frames), kernel or (), group_keys(t))
        else:
            key = (t.status.value, t.syscall_name)
        groups.setdefault(key, []).append(t)
    ordered = sorted(groups.values(), key=lambda members: -len(members))
    return tuple(ThreadGroup(tuple(members)) for members in ordered)


def tid_ranges(tids: Sequence[int]) -> str:
    """101,102,103,107 -> "101-103,107"."""
    parts: List[str] = []
    ordered = sorted(tids)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)
