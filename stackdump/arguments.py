"""Command-line values to options: each value is taken as the string typed and checked here,
so every message carries Doris's wording (docs/FORMAT.md "Standard error") and names the
option as typed; `dump_options` maps the click parameters onto the `CaptureOptions` and
`AnalysisOptions` fields by one table (`FIELDS`), checked in its order, so the first bad value
is the one reported.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from stackdump.cache import default_directory
from stackdump.elf.debuginfod import settings_from_environ
from stackdump.engine import DumpOptions
from stackdump.errors import InvalidArgument
from stackdump.escape import escape, quote
from stackdump.records import frozen
from stackdump.types import AnalysisOptions, CaptureMode, CaptureOptions, LocationMode

MAX_TID = 2**31 - 1
SORTS = ("tid", "cpu")
STATES = ("all", "running", "blocked")


def _is_decimal(text: str) -> bool:
    # str.isdigit() also accepts "²" and "١", which int() then rejects or misreads.
    return text.isascii() and text.isdigit()


def parse_thread_ids(text: str) -> Tuple[int, ...]:
    tids: List[int] = []
    for token in text.split(","):
        if token == "":
            raise InvalidArgument("invalid thread_id: empty token")
        if not _is_decimal(token) or not 1 <= int(token) <= MAX_TID:
            raise InvalidArgument(f"invalid thread_id: {escape(token)}")
        tid = int(token)
        if tid not in tids:
            tids.append(tid)
    return tuple(tids)


def parse_range(key: str, text: str, low: int, high: int) -> int:
    value = int(text) if _is_decimal(text) else None
    if value is None or not low <= value <= high:
        raise InvalidArgument(f"invalid {key}: {escape(text)}, expected range [{low}, {high}]")
    return value


def in_range(key: str, low: int, high: int) -> Callable[[str], int]:
    return lambda text: parse_range(key, text, low, high)


def parse_mode(text: str) -> LocationMode:
    try:
        return LocationMode[text.upper()]
    except KeyError:
        names = ", ".join(m.value for m in LocationMode)
        raise InvalidArgument(
            f"invalid dwarf_location_info_mode: {escape(text)}, expected one of {names}"
        ) from None


def parse_capture(text: str) -> CaptureMode:
    try:
        return CaptureMode(text.lower())
    except ValueError:
        names = ", ".join(m.value for m in CaptureMode)
        raise InvalidArgument(f"invalid capture: {escape(text)}, expected one of {names}") from None


def parse_choice(key: str, choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in choices:
            names = ", ".join(choices)
            raise InvalidArgument(f"invalid {key}: {escape(text)}, expected one of {names}")
        return text.lower()

    return parse


def parse_pid(text: str) -> int:
    if not _is_decimal(text) or not 1 <= int(text) <= MAX_TID:
        raise InvalidArgument(f"invalid pid: {escape(text)}")
    return int(text)


def checked(option: str, text: str, parse: Callable[[str], Any]):
    """parse(text), its error naming the option as typed and the whole value, quoted."""
    try:
        return parse(text)
    except InvalidArgument as e:
        raise InvalidArgument(f"{e.message} ({option} {quote(text)})") from None


def typed_option(argv: Sequence[str], names: Sequence[str]) -> str:
    """Which spelling of an option the user typed last (`-p`, `--pid`), for messages."""
    found = names[-1]
    for arg in argv:
        if arg == "--":
            break
        for name in names:
            if (
                arg == name
                or arg.startswith(name + "=")
                or (len(name) == 2 and arg.startswith(name) and not arg.startswith("--"))
            ):
                found = name
    return found


def debug_search_path(debug_dirs: Sequence[str]) -> Tuple[str, ...]:
    """--debug-dir values first, then STACKDUMP_DEBUG_PATH (colon-separated)."""
    env = os.environ.get("STACKDUMP_DEBUG_PATH", "")
    dirs = [*debug_dirs, *(d for d in env.split(":") if d)]
    return tuple(dict.fromkeys(os.path.abspath(d) for d in dirs))


def missing_debug_dirs(debug_dirs: Sequence[str]) -> List[str]:
    return [
        f"--debug-dir {quote(d)}: no such directory, ignored"
        for d in debug_dirs
        if not os.path.isdir(d)
    ]


@frozen
class Field:
    """One option's way into the options: click's parameter `param` (typed as `options`,
    the first spelling a message names when the user typed none), parsed by `parse` when
    given, into `target`'s field `name`."""

    param: str
    options: Tuple[str, ...]
    target: str  # "capture" or "analysis"
    name: str
    parse: Optional[Callable[[Any], Any]] = None  # None: the value as click gave it


_CLASH = "tid and thread_id are mutually exclusive (--tid and --thread-id)"
# In the order values are checked. Aliases (--tid, --mode) are folded in first.
FIELDS = (
    Field("thread_id", ("--thread-id",), "capture", "thread_ids", parse_thread_ids),
    Field("dwarf_mode", ("--dwarf-location-info-mode",), "analysis", "mode", parse_mode),
    Field("timeout_ms", ("--timeout-ms",), "capture", "timeout_ms",
          in_range("timeout_ms", 1, 10000)),
    Field("max_frames", ("--max-frames",), "analysis", "max_frames",
          in_range("max_frames", 1, 4096)),
    Field("stack_bytes", ("--stack-bytes",), "capture", "stack_bytes",
          in_range("stack_bytes", 4096, 67108864)),
    Field("capture", ("--capture",), "capture", "capture_mode", parse_capture),
    Field("skip_blocking_syscalls", (), "capture", "skip_blocking_syscalls"),
    Field("kernel", (), "capture", "kernel_stacks"),
    Field("coroutines", (), "capture", "coroutines"),
    Field("debug_dirs", (), "analysis", "debug_dirs", debug_search_path),
    Field("no_cache", (), "analysis", "cache_dir",
          lambda off: None if off else default_directory()),
    Field("no_debuginfod", (), "analysis", "debuginfod",
          lambda off: None if off else settings_from_environ(os.environ)),
)  # fmt: skip
# Legacy spellings: (alias, its parameter, the option it stands for, the message when both
# are given; none: the documented spelling wins).
ALIASES = (("tid", "thread_id", "--tid", _CLASH), ("mode", "dwarf_mode", "--mode", ""))


def dump_options(params: Dict[str, Any], argv: Sequence[str], cpu_window_ms: int) -> DumpOptions:
    """The dump's options from click's parameters (pops those it maps). `pid` None is a
    core file's dump: no process to check. `cpu_window_ms`: how long --sort cpu watches
    (0: no watching)."""
    typed: Dict[str, str] = {}
    for alias, param, option, clash in ALIASES:
        value = params.pop(alias)
        if value is not None and params[param] is not None and clash:
            raise InvalidArgument(clash)
        if params[param] is None and value is not None:
            params[param], typed[param] = value, option
    pid_text = params.pop("pid")
    pid_option = typed_option(argv, ("-p", "--pid"))
    pid = checked(pid_option, pid_text, parse_pid) if pid_text is not None else 0
    fields: Dict[str, Dict[str, Any]] = {"capture": {}, "analysis": {}}
    for f in FIELDS:
        value = params.pop(f.param)
        if value is None or f.parse is None:
            fields[f.target][f.name] = value
        elif f.options:
            option = typed.get(f.param, f.options[0])
            fields[f.target][f.name] = checked(option, value, f.parse)
        else:
            fields[f.target][f.name] = f.parse(value)
    analysis = fields["analysis"]
    analysis["mode"] = analysis["mode"] or LocationMode.FAST
    return DumpOptions(
        capture=CaptureOptions(
            pid=pid,
            realtime=os.environ.get("STACKDUMP_REALTIME", "1") != "0",
            cpu_window_ms=cpu_window_ms,
            **fields["capture"],
        ),
        analysis=AnalysisOptions(**analysis),
    )
