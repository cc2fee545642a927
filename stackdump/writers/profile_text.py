"""A profile (`--samples`) as text, or as folded stacks with counts: the distinct stacks,
busiest first, with their share of the thread-samples (docs/FORMAT.md "Profiles")."""

from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

from stackdump.escape import escape
from stackdump.profiles import Profile
from stackdump.report import cmdline_text, frame_lines, names_text
from stackdump.views import ranked, stack_labels


def profile_lines(profile: Profile, show_addresses: bool = False) -> Iterator[str]:
    h = profile.header
    yield "stackdump profile"
    yield f"pid: {h.pid}"
    yield f"exe: {escape(h.exe)}"
    if h.cmdline is not None:
        yield f"cmdline: {cmdline_text(h.cmdline)}"
    yield f"samples: {profile.samples_taken}"
    yield f"interval_ms: {profile.interval_ms}"
    yield f"duration_ms: {profile.duration_ns // 1_000_000}"
    yield f"state: {profile.state_filter}"
    yield f"dwarf_location_info_mode: {h.mode.value.lower()}"
    yield ""
    total = profile.thread_samples
    groups = _groups(profile)
    for group in groups:
        share = 100.0 * group.count / total if total else 0.0
        who = names_text(ranked(group.names))
        frames = profile.stacks[group.shown]
        yield (
            f"----- {share:.1f}% {group.count} samples ({who}) state={group.state} "
            f"frames={len(frames)} -----"
        )
        yield from frame_lines(frames, show_addresses)
        yield ""
    yield (
        f"summary: samples={profile.samples_taken} thread_samples={total} "
        f"distinct_stacks={len(groups)} interrupted={1 if profile.interrupted else 0}"
    )


class _Group:
    """Thread-samples whose stacks name the same functions, in one state; the frames shown
    are those of its most sampled exact stack (pcs differ inside a spinning function)."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.count = 0
        self.names: Dict[str, int] = {}
        self.stacks: Dict[int, int] = {}

    @property
    def shown(self) -> int:
        return max(self.stacks.items(), key=lambda item: item[1])[0]


def _groups(profile: Profile) -> List[_Group]:
    labels = [stack_labels(stack) for stack in profile.stacks]
    groups: Dict[Tuple[Tuple[str, ...], str], _Group] = {}
    for r in profile.runs:
        group = groups.get((labels[r.stack], r.state))
        if group is None:
            group = groups[(labels[r.stack], r.state)] = _Group(r.state)
        group.count += r.count
        name = profile.names.get(r.tid, "?")
        group.names[name] = group.names.get(name, 0) + r.count
        group.stacks[r.stack] = group.stacks.get(r.stack, 0) + r.count
    return sorted(groups.values(), key=lambda g: -g.count)


def profile_folded_lines(profile: Profile) -> Iterator[str]:
    """`THREAD_NAME;OUTERMOST;...;INNERMOST COUNT`, one line per (name, stack)."""
    counts: Dict[Tuple[str, ...], int] = {}
    labels = [stack_labels(stack) for stack in profile.stacks]
    for r in profile.runs:
        key = (profile.names.get(r.tid, "?"), *reversed(labels[r.stack]))
        counts[key] = counts.get(key, 0) + r.count
    for key, count in sorted(counts.items(), key=lambda item: -item[1]):
        yield ";".join(escape(part, also=";") for part in key) + f" {count}"


def text_profile(profile: Profile, view) -> Iterator[str]:
    """The text format of a profile (writers/registry.py)."""
    return profile_lines(profile, view.show_addresses)


def folded_profile(profile: Profile, view) -> Iterator[str]:
    """The folded format of a profile (writers/registry.py)."""
    return profile_folded_lines(profile)
