"""`--format json`: the report as one JSON document (docs/FORMAT.md "JSON", schema in
docs/json-schema.json, `"schema": 1`). Written a thread per line, so a 10,000-thread
document is never held whole as text. Text from the target (names, paths, functions) is
escaped as in the text report (docs/FORMAT.md "Escaping"): every string is printable."""

from __future__ import annotations

import bisect
import json
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

from stackdump.escape import escape
from stackdump.report import stats_fields
from stackdump.syscalls import signal_name
from stackdump.types import ModuleEntry, Report, ReportHeader, SymbolizedFrame, ThreadReport
from stackdump.views import group_keys, group_threads, stack_labels, tid_ranges

SCHEMA_VERSION = 1


def json_lines(report: Report, grouped: bool = False) -> Iterator[str]:
    yield first_line(report.header)
    modules = ModuleIndex(report.modules)
    yield from object_lines(thread_object(t, modules) for t in report.threads)
    yield "],"
    if grouped:
        yield f'"groups": {dumps(_groups(report))},'
    yield from closing_parts(report)
    if report.coroutines is not None:
        coroutines = [coroutine_object(c, modules) for c in report.coroutines]
        yield f'"coroutines": {dumps(coroutines)},'
    yield f'"deadlocks": {dumps([list(c) for c in report.deadlocks])},'
    yield f'"objects": {dumps([object_entry(m) for m in report.modules])}}}'


def first_line(h: ReportHeader) -> str:
    """The schema, the header and the opening of `threads`, on one line: then a thread per
    line (`object_lines`). merge.py reads documents laid out so without parsing them whole."""
    return f'{{"schema": {SCHEMA_VERSION}, "header": {dumps(header_object(h))}, "threads": ['


def object_lines(objects: Iterable[Dict[str, Any]]) -> Iterator[str]:
    """One JSON object per line, each but the last followed by a comma."""
    previous = None
    for entry in objects:
        if previous is not None:
            yield previous + ","
        previous = dumps(entry)
    if previous is not None:
        yield previous


def closing_parts(report: Report) -> Iterator[str]:
    """The `summary` and `stats` members, from the two closing lines of the text."""
    s = report.summary
    summary = {
        "captured": s.captured,
        "skipped": s.skipped,
        "timed_out": s.timed_out,
        "remote_signal_attempts": s.remote_signal_attempts,
    }
    yield f'"summary": {dumps(summary)},'
    yield f'"stats": {dumps(dict(stats_fields(report)))},'


def coroutine_object(c: ThreadReport, modules: ModuleIndex) -> Dict[str, Any]:
    return {
        **thread_object(c, modules),
        "coroutine": c.coroutine,
        "coroutine_id": c.coroutine_id,
        "entry": escape(c.entry_function) if c.entry_function else None,
    }


def header_object(h: ReportHeader) -> Dict[str, Any]:
    header = {
        "pid": h.pid,
        "exe": escape(h.exe),
        "cmdline": [escape(a) for a in h.cmdline] if h.cmdline is not None else None,
        "thread_count": h.thread_count,
        "timeout_ms_per_thread": h.timeout_ms,
        "dwarf_location_info_mode": h.mode.value.lower(),
        "skip_blocking_syscalls": h.skip_blocking_syscalls,
        "unwinder": h.unwinder,
        "capture": h.capture.value,
        "host": escape(h.host) if h.host else None,
    }
    if h.core is not None:
        header["core"] = {
            "path": escape(h.core.path),
            "signal": signal_name(h.core.signal) if h.core.signal else None,
            "signal_thread": h.core.signal_thread if h.core.signal else None,
            "fault_address": h.core.fault_address,
            "signal_sender_pid": h.core.sender[0] if h.core.sender else None,
            "signal_sender_uid": h.core.sender[1] if h.core.sender else None,
            "problems": [escape(p) for p in h.core.problems],
        }
    return header


def _groups(report: Report) -> List[Dict[str, Any]]:
    return [
        {
            "count": len(g.threads),
            "tids": [t.tid for t in g.threads],
            "tid_ranges": tid_ranges([t.tid for t in g.threads]),
            "names": [{"name": escape(n), "count": k} for n, k in g.names()],
            "status": g.first.status.value,
            "stack": [escape(label) for label in stack_labels(g.first.frames)],
            **({"runtime": dict(group_keys(g.first))} if group_keys(g.first) else {}),
        }
        for g in group_threads(report.threads)
    ]


def thread_object(t: ThreadReport, modules: ModuleIndex) -> Dict[str, Any]:
    c = t.context
    return {
        "tid": t.tid,
        "name": escape(t.name),
        "status": t.status.value,
        "syscall": t.syscall_name if t.syscall_name is not None else t.blocked_in,
        "syscall_number": t.syscall_number,
        "capture_method": t.capture_method.value if t.capture_method else None,
        "frame_count": t.physical_frames if t.capture_method else None,
        "fp_status": t.fp_status.value if t.fp_status else None,
        "unwind_status": t.unwind_status.value if t.unwind_status else None,
        "stack_bounds": list(t.stack_bounds) if t.stack_bounds else None,
        "pause_us": t.pause_us,
        "error": escape(t.error) if t.error else None,
        "recovered_frame_pointers": t.recovered_frame_pointers,
        "state": c.state if c else None,
        "wchan": c.wchan if c else None,
        "cpu_ms": c.cpu_ms if c else None,
        "recent_cpu_ms": c.recent_cpu_ms if c else None,
        "waits_for_mutex": t.waits_for_mutex,
        "held_by": t.mutex_holder or None,
        "kernel_stack": [escape(k) for k in c.kernel_stack]
        if c and c.kernel_stack is not None
        else None,
        "frames": [frame_object(i, f, modules) for i, f in enumerate(t.frames)],
        **({"signal": t.signal} if t.signal is not None else {}),
        **({"runtime": {k: escape(v) for k, v in t.runtime_keys}} if t.runtime_keys else {}),
    }


def frame_object(index: int, f: SymbolizedFrame, modules: ModuleIndex) -> Dict[str, Any]:
    module = modules.find(f.pc)
    return {
        "index": index,
        "pc": f.pc,
        "function": escape(f.function) if f.function is not None else None,
        "function_offset": f.function_offset,
        "file": escape(f.file) if f.file is not None else None,
        "line": f.line,
        "column": None,  # not read from DWARF line tables yet
        "object": escape(f.module) if f.module is not None else None,
        "object_offset": f.module_offset,
        "build_id": module.build_id if module is not None else None,
        "inlined": [
            {
                "function": escape(c.function) if c.function is not None else None,
                "file": escape(c.file) if c.file is not None else None,
                "line": c.line,
            }
            for c in f.inlined
        ],
    }


def object_entry(m: ModuleEntry) -> Dict[str, Any]:
    return {
        "path": escape(m.path),
        "start": m.start,
        "end": m.end,
        "offset": m.offset,
        "build_id": m.build_id,
        "symbols": m.symbols,
        "debug_file": escape(m.debug_file) if m.debug_file else None,
        "dwarf": m.dwarf,
        "frames": m.frames,
        "unknown_frames": m.unknown_frames,
        "fix": m.fix,
    }


class ModuleIndex:
    def __init__(self, modules: Sequence[ModuleEntry]) -> None:
        self._modules = list(modules)
        self._starts: List[int] = [m.start for m in self._modules]

    def find(self, pc: int) -> Optional[ModuleEntry]:
        i = bisect.bisect_right(self._starts, pc) - 1
        if i >= 0 and pc < self._modules[i].end:
            return self._modules[i]
        return None


def dumps(value: Any) -> str:
    """One JSON value as every JSON writer writes it (UTF-8 kept, `, ` and `: `)."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def json_dump(report: Report, view) -> Iterator[str]:
    """The json format of a dump (writers/registry.py)."""
    return json_lines(report, view.group)
