"""`--group`: the text report with threads of the same stack merged into one section
(docs/FORMAT.md "Grouped text"). Header and closing lines are the default text's."""

from __future__ import annotations

from typing import Iterator

from stackdump.report import (
    closing_lines,
    header_lines,
    names_text,
    runtime_key_texts,
    stack_lines,
    text_lines,
)
from stackdump.types import Report
from stackdump.views import ThreadGroup, group_keys, group_threads, tid_ranges


def grouped_lines(report: Report, show_addresses: bool = False) -> Iterator[str]:
    yield from header_lines(report)
    for group in group_threads(report.threads):
        yield group_line(group)
        yield f"tids: {tid_ranges([t.tid for t in group.threads])}"
        yield from stack_lines(group.first, show_addresses)
        yield ""
    for group in group_threads(report.coroutines or ()):
        first = group.first
        count = len(group.threads)
        kind = first.coroutine + ("s" if count > 1 else "")
        keys = [f"status={first.status.value}"]
        if first.capture_method is not None:
            keys.append(f"frames={first.physical_frames}")
        keys.extend(runtime_key_texts(group_keys(first)))
        yield f"----- {count} {kind} {' '.join(keys)} -----"
        if first.ids_as_ranges:  # 100,000 of them: ids as ranges, like tids
            yield f"ids: {tid_ranges([t.coroutine_id for t in group.threads])}"
        else:
            yield "handles: " + ",".join(
                f"0x{t.tid:x}" for t in sorted(group.threads, key=lambda t: t.tid)
            )
        yield from stack_lines(first, show_addresses)
        yield ""
    yield from closing_lines(report)


def group_line(group: ThreadGroup) -> str:
    names = names_text(group.names())
    first = group.first
    keys = [f"status={first.status.value}"]
    if first.syscall_name is not None:
        keys.append(f"syscall={first.syscall_name}")
    if first.capture_method is not None:
        keys.append(f"frames={first.physical_frames}")
    keys.extend(runtime_key_texts(group_keys(first)))
    count = len(group.threads)
    noun = "thread" if count == 1 else "threads"
    return f"----- {count} {noun} ({names}) {' '.join(keys)} -----"


def text_dump(report: Report, view) -> Iterator[str]:
    """The text format of a dump (writers/registry.py): grouped by stack, or per thread."""
    if view.group:
        return grouped_lines(report, view.show_addresses)
    return text_lines(report, view.show_addresses)
