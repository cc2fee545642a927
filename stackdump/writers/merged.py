"""`stackdump merge` and `stackdump diff` written out (docs/FORMAT.md "Merging dumps"): text,
JSON (docs/merge-schema.json), folded stacks and pprof for a merge; text and JSON for a diff.
Text from the inputs was escaped when they were written, and is written as it is."""

from __future__ import annotations

import gzip
from typing import Any, Dict, Iterator, List, Sequence

from stackdump.escape import escape, escape_also
from stackdump.merge import THREAD, Change, Diff, Merged, MergedFrame, StackKey, StackTally
from stackdump.report import names_text
from stackdump.views import ranked
from stackdump.writers.json_doc import dumps, object_lines
from stackdump.writers.pprof import Tables, field_bytes, field_varint, packed

MERGE_SCHEMA = 1  # docs/merge-schema.json


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


def _kind_noun(kind: str, n: int) -> str:
    return _plural(n, kind).split(" ", 1)[1]


def frame_texts(frames: Sequence[MergedFrame]) -> List[str]:
    """Frame lines as a dump prints them, from merged frames."""
    out = []
    for i, (function, file, line, obj, inlined) in enumerate(frames):
        text = function
        if file is not None and line is not None:
            text += f" at {file}:{line}"
        elif obj is not None:
            text += f" in {obj}"
        if inlined:
            text += " (inlined)"
        out.append(f"    {f'{i}#':<3} {text}")
    return out


def _names(tally: StackTally) -> str:
    return names_text(ranked(tally.names), escaped=True, most=8)


def _spread(merged: Merged, tally: StackTally, kind: str) -> str:
    hosts = len(merged.hosts)
    return (
        f"x{tally.count} {_kind_noun(kind, tally.count)} on {tally.host_count} of "
        f"{_plural(hosts, 'host')}, {_plural(tally.processes, 'process')}"
    )


def merge_lines(merged: Merged) -> Iterator[str]:
    yield "stackdump merge"
    yield from _totals(merged)
    yield ""
    for (kind, frames), tally in merged.ranked():
        extra = ""
        if merged.outlier(tally):
            extra = " outlier=1 hosts=" + ",".join(merged.host_names(tally))
        yield f"----- {_spread(merged, tally, kind)} ({_names(tally)}){extra} -----"
        yield from frame_texts(frames)
        yield ""
    summary = merged.summary()
    del summary["coroutines"]  # the text says them in its header, when there are any
    yield "summary: " + " ".join(f"{k}={v}" for k, v in summary.items())


def _totals(merged: Merged) -> Iterator[str]:
    yield f"inputs: {len(merged.inputs)}"
    yield f"hosts: {len(merged.hosts)}"
    yield f"processes: {merged.processes}"
    yield f"threads: {merged.members(THREAD)}"
    coroutines = merged.members() - merged.members(THREAD)
    if coroutines:
        yield f"coroutines: {coroutines}"
    yield f"skipped_inputs: {len(merged.skipped)}"


def merge_json_lines(merged: Merged) -> Iterator[str]:
    """One stack per line, as a dump writes one thread per line."""
    yield f'{{"schema": {MERGE_SCHEMA}, "kind": "merge", "inputs": {dumps(_inputs(merged))},'
    yield f'"skipped": {dumps(_skipped(merged))},'
    yield '"stacks": ['
    yield from object_lines(_stack_object(merged, key, tally) for key, tally in merged.ranked())
    yield "],"
    yield f'"summary": {dumps(merged.summary())}}}'


def _inputs(merged: Merged) -> List[Dict[str, Any]]:
    return [
        {"file": escape(path), "host": host, "kind": kind, "members": n}
        for path, host, kind, n in merged.inputs
    ]


def _skipped(merged: Merged) -> List[Dict[str, str]]:
    return [{"file": escape(e.path), "error": e.why} for e in merged.skipped]


def _stack_object(merged: Merged, key: StackKey, tally: StackTally) -> Dict[str, Any]:
    kind, frames = key
    outlier = merged.outlier(tally)
    return {
        "kind": kind,
        "count": tally.count,
        "hosts": tally.host_count,
        "processes": tally.processes,
        "outlier": outlier,
        "outlier_hosts": merged.host_names(tally) if outlier else None,
        "names": [{"name": n, "count": k} for n, k in ranked(tally.names)],
        "frames": [_frame_object(f) for f in frames],
    }


def _frame_object(f: MergedFrame) -> Dict[str, Any]:
    function, file, line, obj, inlined = f
    return {"function": function, "file": file, "line": line, "object": obj, "inlined": inlined}


def merge_folded_lines(merged: Merged) -> Iterator[str]:
    """`NAME;OUTERMOST;...;INNERMOST COUNT`: each (thread name, stack)'s count is the sum of
    its counts in the inputs. Frames as the folded format names them."""
    for (kind, frames), tally in merged.ranked():
        if frames and frames[0][0].startswith("<no stack"):
            continue
        labels = [escape_also(f[0], ";") for f in reversed(frames)]
        for name, count in ranked(tally.names):
            who = name if kind == THREAD else kind
            yield ";".join([escape_also(who, ";"), *labels]) + f" {count}"


def merge_pprof(merged: Merged) -> bytes:
    """profile.proto, gzipped: one sample per (stack, host) with a `host` label, its value
    the threads (or, from folded profiles, thread-samples) the inputs counted; one location
    per distinct merged frame chain position (no addresses: ASLR made them per host)."""
    tables = Tables()
    s = tables.s
    out = bytearray()
    out += field_bytes(1, field_varint(1, s("samples")) + field_varint(2, s("count")))
    for (kind, frames), tally in merged.ranked():
        ids = _locations(frames, tables)
        for host, count in sorted((tally.by_host or {}).items()):
            label = tables.label("host", merged.hosts[host]) + tables.label("kind", kind)
            out += field_bytes(2, packed(1, ids) + packed(2, [count]) + label)
    return gzip.compress(bytes(out + tables.messages()), mtime=0)


def _locations(frames, tables: Tables) -> List[int]:
    """Location ids for a stack, innermost first: one location per physical frame, with its
    inlined calls as lines before it (as pprof wants them)."""
    ids: List[int] = []
    pending: List[MergedFrame] = []
    for frame in frames:
        pending.append(frame)
        if frame[4]:  # inlined: belongs to the next physical frame's location
            continue
        chain = tuple(pending)
        pending = []
        ids.append(tables.location(chain, [(f, file, line) for f, file, line, _, _ in chain]))
    return ids


def diff_lines(d: Diff) -> Iterator[str]:
    yield "stackdump diff"
    for side, merged in (("before", d.before), ("after", d.after)):
        yield (
            f"{side}: inputs={len(merged.inputs)} hosts={len(merged.hosts)} "
            f"processes={merged.processes} threads={merged.members(THREAD)}"
        )
    yield ""
    for change in d.changes:
        yield _change_line(change)
        yield from frame_texts(change.key[1])
        yield ""
    yield "summary: " + " ".join(f"{k}={v}" for k, v in d.summary().items())


def _change_line(c: Change) -> str:
    kind = c.key[0]
    word = "new" if c.before is None else "gone" if c.after is None else (
        "grew" if c.delta > 0 else "shrank"
    )  # fmt: skip
    sides = []
    for side, tally in (("before", c.before), ("after", c.after)):
        if tally is None:
            sides.append(f"{side} none")
        else:
            sides.append(f"{side} x{tally.count} on {_plural(tally.host_count, 'host')}")
    names = _names(c.after or c.before)  # type: ignore[arg-type]
    return (
        f"----- {c.delta:+.1f} {_kind_noun(kind, 2)} per process: {c.before_mean:.1f} -> "
        f"{c.after_mean:.1f} {word} ({', '.join(sides)}; {names}) -----"
    )


def diff_json_lines(d: Diff) -> Iterator[str]:
    yield f'{{"schema": {MERGE_SCHEMA}, "kind": "diff",'
    for side, merged in (("before", d.before), ("after", d.after)):
        inputs, skipped = dumps(_inputs(merged)), dumps(_skipped(merged))
        yield f'"{side}": {{"inputs": {inputs}, "skipped": {skipped}}},'
    yield '"changes": ['
    yield from object_lines(_change_object(c) for c in d.changes)
    yield "],"
    yield f'"summary": {dumps(d.summary())}}}'


def _change_object(c: Change) -> Dict[str, Any]:
    return {
        "kind": c.key[0],
        "delta_per_process": round(c.delta, 6),
        "before_per_process": round(c.before_mean, 6),
        "after_per_process": round(c.after_mean, 6),
        "before_count": c.before.count if c.before else 0,
        "after_count": c.after.count if c.after else 0,
        "before_hosts": c.before.host_count if c.before else 0,
        "after_hosts": c.after.host_count if c.after else 0,
        "frames": [_frame_object(f) for f in c.key[1]],
    }


def text_merge(merged: Merged, view) -> Iterator[str]:
    return merge_lines(merged)


def json_merge(merged: Merged, view) -> Iterator[str]:
    return merge_json_lines(merged)


def folded_merge(merged: Merged, view) -> Iterator[str]:
    return merge_folded_lines(merged)


def pprof_merge(merged: Merged, view) -> bytes:
    return merge_pprof(merged)


def text_diff(d: Diff, view) -> Iterator[str]:
    return diff_lines(d)


def json_diff(d: Diff, view) -> Iterator[str]:
    return diff_json_lines(d)
