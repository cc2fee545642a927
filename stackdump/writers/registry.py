"""Every output format in one table: its name, what it writes (one dump's `Report`, a
`Profile` over time, or both), what `--help` says of it, and its writer. The CLI's `--format`
choices, its checks and its help come from here; adding a format is one row and its module.
Every writer is pure (lines or bytes from the model), so importing this imports no capture or
analysis code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

from stackdump.profiles import Profile
from stackdump.report import text_lines
from stackdump.types import Report
from stackdump.views import sort_by_cpu
from stackdump.writers.folded import folded_lines
from stackdump.writers.grouped import grouped_lines
from stackdump.writers.json_doc import json_lines
from stackdump.writers.pprof import pprof_bytes
from stackdump.writers.profile_text import profile_folded_lines, profile_lines
from stackdump.writers.trace_formats import chrome_trace_lines, speedscope_lines


@dataclass(frozen=True)
class View:
    """How the report is written: none of it changes what is captured or analyzed."""

    format: str = "text"
    group: bool = False
    sort: str = "tid"
    show_addresses: bool = False


Output = Union[Iterator[str], bytes]  # lines, or one binary document (pprof)


@dataclass(frozen=True)
class Format:
    name: str
    summary: str  # for --help
    dump: Optional[Callable[[Report, View], Iterator[str]]] = None  # one dump's Report
    profile: Optional[Callable[[Profile, View], Output]] = None  # a Profile over time
    coloured: bool = False  # coloured when it goes to a terminal


def _text(report: Report, view: View) -> Iterator[str]:
    if view.group:
        return grouped_lines(report, view.show_addresses)
    return text_lines(report, view.show_addresses)


FORMATS: Tuple[Format, ...] = (
    Format(
        "text",
        "text (docs/FORMAT.md)",
        dump=_text,
        profile=lambda p, view: profile_lines(p, view.show_addresses),
        coloured=True,
    ),
    Format(
        "json",
        "json (one document, docs/json-schema.json)",
        dump=lambda report, view: json_lines(report, view.group),
    ),
    Format(
        "folded",
        "folded (one line per distinct stack, for flame graphs)",
        dump=lambda report, view: folded_lines(report),
        profile=lambda p, view: profile_folded_lines(p),
    ),
    Format("pprof", "pprof", profile=lambda p, view: pprof_bytes(p)),
    Format("speedscope", "speedscope", profile=lambda p, view: speedscope_lines(p)),
    Format("chrome-trace", "chrome-trace", profile=lambda p, view: chrome_trace_lines(p)),
)


def names() -> Tuple[str, ...]:
    return tuple(f.name for f in FORMATS)


def find(name: str) -> Format:
    """The format called `name` (one of `names()`, checked by the CLI)."""
    return next(f for f in FORMATS if f.name == name)


def profile_only() -> Tuple[str, ...]:
    """Formats only a profile is written in: asking for one samples (once by default)."""
    return tuple(f.name for f in FORMATS if f.dump is None)


def for_dumps() -> Tuple[str, ...]:
    return tuple(f.name for f in FORMATS if f.dump is not None)


def for_profiles() -> Tuple[str, ...]:
    return tuple(f.name for f in FORMATS if f.profile is not None)


def help_text() -> str:
    """--format's help: the formats of a dump, then those only a profile has."""
    dumps = [f.summary for f in FORMATS if f.dump is not None]
    profiles = [f.summary for f in FORMATS if f.dump is None]
    return f"{', '.join(dumps)}; for a profile also {or_list(profiles, 'and')}."


def or_list(items: Sequence[str], word: str = "or") -> str:
    """`a, b or c`."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def dump_output(report: Report, view: View) -> Iterator[str]:
    """The report's lines in the chosen view: every format from the one Report."""
    if view.sort == "cpu":
        report = sort_by_cpu(report)
    writer = find(view.format).dump
    assert writer is not None, view.format  # the CLI sends profile-only formats to sampling
    return writer(report, view)


def profile_output(profile: Profile, view: View) -> Output:
    writer = find(view.format).profile
    assert writer is not None, view.format  # the CLI refuses dump-only formats for profiles
    return writer(profile, view)
