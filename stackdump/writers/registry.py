"""Every output format in one table: its name, what `--help` says of it, and its writer for
each kind of model it writes (KINDS: one dump's `Report`, a `Profile` over time, a `Watch`,
a merge or a diff of written dumps). The CLI's `--format` choices, its checks and its help
come from here; adding a format is one row and its module.
Every writer is pure (lines or bytes from the model), so importing this imports no capture or
analysis code.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union

from stackdump import lazy
from stackdump.records import frozen
from stackdump.types import Report
from stackdump.views import sort_by_cpu


@frozen
class View:
    """How the report is written: none of it changes what is captured or analyzed."""

    format: str = "text"
    group: bool = False
    sort: str = "tid"
    show_addresses: bool = False


Output = Union[Iterator[str], bytes]  # lines, or one binary document (pprof)


@frozen
class Format:
    """A format's writers are named `module:function`, each taking (model, View), and
    imported when that format is written: a text dump loads no JSON or pprof code."""

    name: str
    summary: str  # for --help
    dump: Optional[str] = None  # writes one dump's Report
    profile: Optional[str] = None  # writes a Profile over time
    watch: Optional[str] = None  # writes a Watch (--watch: progress.py)
    merge: Optional[str] = None  # writes a merge of dumps (`stackdump merge`: merge.py)
    diff: Optional[str] = None  # writes a diff of dumps (`stackdump diff`)
    coloured: bool = False  # coloured when it goes to a terminal

    def writer_for(self, kind: str) -> Optional[str]:
        """Its writer of `kind` (one of KINDS), or None when it has none."""
        return getattr(self, kind)


KINDS = ("dump", "profile", "watch", "merge", "diff")

FORMATS: Tuple[Format, ...] = (
    Format(
        "text",
        "text (docs/FORMAT.md)",
        dump="stackdump.writers.grouped:text_dump",
        profile="stackdump.writers.profile_text:text_profile",
        watch="stackdump.writers.watch:text_watch",
        merge="stackdump.writers.merged:text_merge",
        diff="stackdump.writers.merged:text_diff",
        coloured=True,
    ),
    Format(
        "json",
        "json (one document, docs/json-schema.json)",
        dump="stackdump.writers.json_doc:json_dump",
        watch="stackdump.writers.watch:json_watch",
        merge="stackdump.writers.merged:json_merge",
        diff="stackdump.writers.merged:json_diff",
    ),
    Format(
        "folded",
        "folded (one line per distinct stack, for flame graphs)",
        dump="stackdump.writers.folded:folded_dump",
        profile="stackdump.writers.profile_text:folded_profile",
        merge="stackdump.writers.merged:folded_merge",
    ),
    Format(
        "pprof",
        "pprof",
        profile="stackdump.writers.pprof:pprof_profile",
        merge="stackdump.writers.merged:pprof_merge",
    ),
    Format(
        "flamegraph",
        "flamegraph (one self-contained HTML page)",
        dump="stackdump.writers.flamegraph:flame_dump",
        profile="stackdump.writers.flamegraph:flame_profile",
        merge="stackdump.writers.flamegraph:flame_merge",
    ),
    Format("speedscope", "speedscope", profile="stackdump.writers.trace_formats:speedscope"),
    Format("chrome-trace", "chrome-trace", profile="stackdump.writers.trace_formats:chrome_trace"),
)


def prepare(name: str, kind: str) -> None:
    """Import the writer of format `name` for a `kind` (one of KINDS) now: before capture,
    not in the writing phase, where a signal ends stackdump at once."""
    spec = find(name).writer_for(kind)
    if spec is not None:
        writer(spec)


def writer(spec: str) -> Callable[[Any, View], Output]:
    """The function a `module:function` spec of `FORMATS` names, its module imported now."""
    return lazy.load(spec)


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


def for_kind(kind: str) -> Tuple[str, ...]:
    """The formats that write a `kind` (one of KINDS)."""
    return tuple(f.name for f in FORMATS if f.writer_for(kind) is not None)


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
    spec = find(view.format).dump
    assert spec is not None, view.format  # the CLI sends profile-only formats to sampling
    return writer(spec)(report, view)


def output_of(kind: str, model: Any, view: View) -> Output:
    """A `kind` (one of KINDS) of model in the chosen view (the CLI checked the format)."""
    spec = find(view.format).writer_for(kind)
    assert spec is not None, (kind, view.format)
    return writer(spec)(model, view)
