"""`--format folded`: one line per distinct stack, `THREAD_NAME;OUTERMOST;...;INNERMOST
COUNT`, what flamegraph.pl, inferno and speedscope read. Threads without a stack are left out;
kernel frames (`--kernel`) come innermost, marked `_[k]` as perf marks them."""

from __future__ import annotations

from typing import Dict, Iterator, Tuple

from stackdump.escape import escape
from stackdump.types import Report
from stackdump.views import stack_labels

# ';' separates frames; text from the target never forges one (escaped as \x3b).
_SEPARATOR = ";"


def folded_lines(report: Report) -> Iterator[str]:
    counts: Dict[Tuple[str, ...], int] = {}
    for t in (*report.threads, *(report.coroutines or ())):
        kernel = t.context.kernel_stack if t.context is not None else None
        inner_first = tuple(f"{k}_[k]" for k in kernel or ()) + stack_labels(t.frames)
        if not inner_first:
            continue
        key = (t.coroutine or t.name, *reversed(inner_first))
        counts[key] = counts.get(key, 0) + 1
    for key, count in counts.items():
        yield _SEPARATOR.join(escape(part, also=_SEPARATOR) for part in key) + f" {count}"


def folded_dump(report: Report, view) -> Iterator[str]:
    """The folded format of a dump (writers/registry.py)."""
    return folded_lines(report)
