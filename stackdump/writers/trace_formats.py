"""A profile (`--samples`) in two viewers' formats, both JSON:

- speedscope's file format (https://www.speedscope.app/file-format-schema.json): the frames
  shared, one sampled profile per thread, each sample a stack (outermost first) weighted by
  the interval in milliseconds;
- the Trace Event Format that chrome://tracing and Perfetto open: one track per thread
  (thread_name metadata), one complete event ("ph": "X") per sampled stack, as long as the
  interval, named after its innermost function, its whole stack in `args`.

Frames are named as in the text; strings from the target are escaped (docs/FORMAT.md
"Escaping")."""

from __future__ import annotations

import json
from typing import Dict, Iterator, List, Tuple

from stackdump.escape import escape
from stackdump.profiles import Profile
from stackdump.views import frame_label

_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def _frames_of(profile: Profile) -> Tuple[List[dict], List[List[int]]]:
    """speedscope's shared frames, and each stack as indexes into them, outermost first."""
    index: Dict[Tuple[str, str, int], int] = {}
    frames: List[dict] = []
    stacks: List[List[int]] = []
    for stack in profile.stacks:
        ids: List[int] = []
        for frame in stack:
            calls = [(c.function, c.file, c.line) for c in frame.inlined]
            calls.append((frame.function, frame.file, frame.line))
            for function, file, line in calls:
                key = (function or frame_label(frame), file or "", line or 0)
                if key not in index:
                    index[key] = len(frames)
                    entry = {"name": escape(key[0])}
                    if file:
                        entry["file"] = escape(file)
                    if line:
                        entry["line"] = line
                    frames.append(entry)
                ids.append(index[key])
        stacks.append(list(reversed(ids)))
    return frames, stacks


def speedscope_lines(profile: Profile) -> Iterator[str]:
    frames, stacks = _frames_of(profile)
    interval = float(profile.interval_ms)
    per_thread: Dict[int, List[int]] = {}
    for r in profile.runs:
        per_thread.setdefault(r.tid, []).extend([r.stack] * r.count)
    profiles = []
    for tid in sorted(per_thread):
        samples = [stacks[i] for i in per_thread[tid]]
        profiles.append(
            {
                "type": "sampled",
                "name": f"{escape(profile.names.get(tid, '?'))} ({tid})",
                "unit": "milliseconds",
                "startValue": 0,
                "endValue": interval * len(samples),
                "samples": samples,
                "weights": [interval] * len(samples),
            }
        )
    document = {
        "$schema": _SCHEMA,
        "name": f"stackdump -p {profile.header.pid}: {profile.samples_taken} samples",
        "activeProfileIndex": 0,
        "exporter": "stackdump",
        "shared": {"frames": frames},
        "profiles": profiles,
    }
    yield json.dumps(document, ensure_ascii=False)


def chrome_trace_lines(profile: Profile) -> Iterator[str]:
    frames, stacks = _frames_of(profile)
    pid = profile.header.pid
    dur = profile.interval_ms * 1000  # microseconds
    yield '{"displayTimeUnit": "ms", "traceEvents": ['
    events = [
        {
            "ph": "M",
            "name": "process_name",
            "pid": pid,
            "tid": pid,
            "args": {"name": escape(profile.header.exe)},
        },
    ]
    for tid in sorted(profile.names):
        events.append(
            {
                "ph": "M",
                "name": "thread_name",
                "pid": pid,
                "tid": tid,
                "args": {"name": f"{escape(profile.names[tid])} ({tid})"},
            }
        )
    # One slice per thread per sample, sample by sample (a run is as many slices).
    slices = sorted(
        (r.sample + k, order) for order, r in enumerate(profile.runs) for k in range(r.count)
    )
    for sample, order in slices:
        r = profile.runs[order]
        ids = stacks[r.stack]
        args = {"stack": [frames[i]["name"] for i in ids], "state": r.state}
        if r.syscall:
            args["syscall"] = r.syscall
        events.append(
            {
                "ph": "X",
                "name": frames[ids[-1]]["name"] if ids else "?",
                "cat": r.state,
                "pid": pid,
                "tid": r.tid,
                "ts": profile.sample_offsets_ns[sample] / 1000,
                "dur": dur,
                "args": args,
            }
        )
    last = len(events) - 1
    for i, event in enumerate(events):
        yield json.dumps(event, ensure_ascii=False) + ("," if i < last else "")
    yield "]}"


def speedscope(profile: Profile, view) -> Iterator[str]:
    """The speedscope format of a profile (writers/registry.py)."""
    return speedscope_lines(profile)


def chrome_trace(profile: Profile, view) -> Iterator[str]:
    """The chrome-trace format of a profile (writers/registry.py)."""
    return chrome_trace_lines(profile)
