"""`--watch` as text and as JSON (docs/FORMAT.md "Watching for progress"): what did not move
first (deadlocked, blocked), then what spins, then the rest, summarised. Threads are grouped by
class, stack, blocked call and lock holder."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from stackdump.escape import escape
from stackdump.progress import (
    BLOCKED,
    CLASSES,
    DEADLOCKED,
    RUNNING,
    SPINNING,
    STUCK,
    WAITING,
    ThreadProgress,
    Watch,
)
from stackdump.report import (
    cmdline_text,
    frame_lines,
    names_text,
    runtime_key_texts,
)
from stackdump.views import group_keys, ranked, stack_labels, tid_ranges
from stackdump.writers.json_doc import (
    ModuleIndex,
    closing_parts,
    coroutine_object,
    dumps,
    first_line,
    object_entry,
    object_lines,
    thread_object,
)

# The rest (waiting, running) is summarised: this many innermost frames of each group.
_SUMMARY_FRAMES = 3


def watch_lines(watch: Watch, show_addresses: bool = False) -> Iterator[str]:
    h = watch.header
    cycles = {tid: cycle for cycle in watch.deadlocks for tid in cycle}
    yield "stackdump watch"
    yield f"pid: {h.pid}"
    yield f"exe: {escape(h.exe)}"
    if h.cmdline is not None:
        yield f"cmdline: {cmdline_text(h.cmdline)}"
    yield f"thread_count: {len(watch.threads)}"
    yield f"samples: {watch.samples_taken}"
    yield f"interval_ms: {watch.interval_ms}"
    yield f"duration_ms: {watch.duration_ns // 1_000_000}"
    yield f"dwarf_location_info_mode: {h.mode.value.lower()}"
    yield ""
    for kind, members in (("thread", watch.threads), ("coroutine", watch.coroutines or ())):
        for group in groups(members):
            yield _group_line(group, kind, watch.samples_taken, cycles)
            yield _ids_line(group)
            yield from _frames(group, show_addresses)
            yield ""
    yield summary_line(watch)
    for cycle in watch.deadlocks:
        yield "deadlock: " + " -> ".join(str(tid) for tid in (*cycle, cycle[0]))


def summary_line(watch: Watch) -> str:
    counts = watch.counts()
    keys = [f"threads={len(watch.threads)}"]
    keys += [f"{name}={counts[name]}" for name in CLASSES]
    keys.append(f"stuck_threads={watch.stuck_threads}")
    if watch.coroutines is not None:
        keys.append(f"coroutines={len(watch.coroutines)}")
        stuck = sum(1 for c in watch.coroutines if c.progress in STUCK)
        keys.append(f"stuck_coroutines={stuck}")
    keys.append(f"interrupted={1 if watch.interrupted else 0}")
    return "summary: " + " ".join(keys)


def groups(members: Sequence[ThreadProgress]) -> List[List[ThreadProgress]]:
    """By class (in CLASSES order), then biggest first; a group shares its class, stack,
    blocked call and lock holder."""
    found: Dict[tuple, List[ThreadProgress]] = {}
    for p in members:
        t = p.report
        key = (
            p.progress, stack_labels(t.frames), t.blocked_in, t.mutex_holder, t.status,
            group_keys(t),
        )  # fmt: skip
        found.setdefault(key, []).append(p)
    order = {name: i for i, name in enumerate(CLASSES)}
    return sorted(found.values(), key=lambda g: (order[g[0].progress], -len(g)))


def _group_line(
    group: List[ThreadProgress], kind: str, samples: int, cycles: Dict[int, Tuple[int, ...]]
) -> str:
    first = group[0]
    t = first.report
    count = len(group)
    noun = (t.coroutine or kind) + ("s" if count > 1 else "")
    names = _names(group)
    keys = [phrase(group, samples)]
    if t.blocked_in is not None:
        keys.append(f"syscall={t.blocked_in}")
    waits = {p.waits_on for p in group}
    if len(waits) == 1 and first.waits_on is not None:
        keys.append(f"waits_on={first.waits_on.replace(' ', ':')}")
    if t.mutex_holder:
        keys.append(f"held_by={t.mutex_holder}")
    cycle = cycles.get(t.tid) if first.progress == DEADLOCKED and not t.coroutine else None
    if cycle is not None:
        keys.append("deadlock=" + "->".join(str(tid) for tid in (*cycle, cycle[0])))
    if t.status.value != "ok":
        keys.append(f"status={t.status.value}")
    keys.extend(runtime_key_texts(group_keys(t)))
    who = f" ({names})" if names else ""
    return f"----- {first.progress}: {count} {noun}{who} {' '.join(keys)} -----"


def _names(group: List[ThreadProgress]) -> str:
    counts: Dict[str, int] = {}
    for p in group:
        if not p.report.coroutine:
            counts[p.report.name] = counts.get(p.report.name, 0) + 1
    return names_text(ranked(counts))


def phrase(group: List[ThreadProgress], samples: int) -> str:
    """What the group did, in words: how long it stayed, in how many captures, on how much CPU
    (the group's least still member, its busiest for CPU)."""
    first = group[0]
    still = min(p.still for p in group)
    seconds = min(p.still_ns for p in group) / 1e9
    cpu = _most([p.cpu_ms for p in group])
    cpu_text = f"{cpu} ms CPU" if cpu is not None else "CPU unknown"
    waited = _most([p.waited_s for p in group])
    if first.progress in (DEADLOCKED, BLOCKED, WAITING):
        verb = "waiting" if first.progress == WAITING else "blocked"
        text = f"{verb} {seconds:.1f} s+ in the same place ({still} of {samples} samples"
        if first.report.coroutine:
            text += ")" if waited is None else f", its runtime says waiting {waited} s)"
            return text
        return text + f", {cpu_text})"
    if first.progress == SPINNING:
        return (
            f"spinning {seconds:.1f} s in the same stack ({still} of {samples} samples, {cpu_text})"
        )
    assert first.progress == RUNNING
    seen = min(p.samples for p in group)
    if seen < 2:
        return f"came or went: in {seen} of {samples} samples"
    changes = min(p.changes for p in group)
    if first.report.coroutine:
        return f"moved: its stack changed {changes} time(s) in {seen} samples"
    return f"moved: its stack changed {changes} time(s) in {seen} samples, {cpu_text}"


def _most(values: List[Optional[int]]) -> Optional[int]:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _ids_line(group: List[ThreadProgress]) -> str:
    first = group[0].report
    if not first.coroutine:
        return f"tids: {tid_ranges([p.report.tid for p in group])}"
    if all(p.report.coroutine_id is not None for p in group):
        return f"ids: {tid_ranges([p.report.coroutine_id for p in group])}"
    return "handles: " + ",".join(f"0x{p.report.tid:x}" for p in group)


def _frames(group: List[ThreadProgress], show_addresses: bool) -> List[str]:
    t = group[0].report
    if not t.frames:
        return ["<no stack captured>"]
    lines = frame_lines(t.frames, show_addresses)
    if group[0].progress in STUCK or len(lines) <= _SUMMARY_FRAMES:
        return lines
    return [*lines[:_SUMMARY_FRAMES], f"    ... {len(lines) - _SUMMARY_FRAMES} more frame(s)"]


def watch_json_lines(watch: Watch) -> Iterator[str]:
    """The last capture's JSON document (schema 1), each thread with its `progress` and
    `watch` object, and a top-level `watch` with the counts."""
    report = watch.last
    modules = ModuleIndex(report.modules)
    yield first_line(watch.header)
    yield from object_lines(
        {**thread_object(p.report, modules), **progress_object(p)} for p in watch.threads
    )
    yield "],"
    yield from closing_parts(report)
    if watch.coroutines is not None:
        coroutines = [
            {**coroutine_object(p.report, modules), **progress_object(p)} for p in watch.coroutines
        ]
        yield f'"coroutines": {dumps(coroutines)},'
    yield f'"deadlocks": {dumps([list(c) for c in watch.deadlocks])},'
    yield f'"watch": {dumps(_watch_object(watch))},'
    yield f'"objects": {dumps([object_entry(m) for m in report.modules])}}}'


def progress_object(p: ThreadProgress) -> Dict[str, Any]:
    return {
        "progress": p.progress,
        "watch": {
            "samples": p.samples,
            "still_samples": p.still,
            "still_ms": p.still_ns // 1_000_000,
            "cpu_ms": p.cpu_ms,
            "wakeups": p.wakeups,
            "stack_changes": p.changes,
            "waits_on": p.waits_on,
            "waited_s": p.waited_s,
        },
    }


def _watch_object(watch: Watch) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "samples": watch.samples_taken,
        "interval_ms": watch.interval_ms,
        "duration_ms": watch.duration_ns // 1_000_000,
        "interrupted": watch.interrupted,
        "counts": watch.counts(),
        "stuck_threads": watch.stuck_threads,
    }
    if watch.coroutines is not None:
        out["coroutine_counts"] = watch.counts(coroutines=True)
    return out


def text_watch(watch: Watch, view) -> Iterator[str]:
    """The text format of a watch (writers/registry.py)."""
    return watch_lines(watch, view.show_addresses)


def json_watch(watch: Watch, view) -> Iterator[str]:
    """The json format of a watch (writers/registry.py)."""
    return watch_json_lines(watch)
