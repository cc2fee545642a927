"""The `stackdump` command: parse and validate arguments, run the engine, print, exit.

The only module that writes to stderr or chooses an exit status (SPEC.md "Exit status").
Values are taken as strings and validated here, so every message is SPEC.md's to the letter.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from typing import List, Optional, Tuple

import click

from stackdump import __version__
from stackdump.engine import DumpOptions, dump
from stackdump.errors import InvalidArgument, StackdumpError
from stackdump.report import write_text
from stackdump.symbols.cache import default_directory
from stackdump.types import CaptureMode, LocationMode, Report

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_NO_REPORT = 0, 1, 2, 3
MAX_TID = 2**31 - 1


def parse_thread_ids(text: str) -> Tuple[int, ...]:
    tids: List[int] = []
    for token in text.split(","):
        if token == "":
            raise InvalidArgument("invalid thread_id: empty token")
        if not token.isdigit() or not 1 <= int(token) <= MAX_TID:
            raise InvalidArgument(f"invalid thread_id: {token}")
        tid = int(token)
        if tid not in tids:
            tids.append(tid)
    return tuple(tids)


def parse_range(key: str, text: str, low: int, high: int) -> int:
    value = int(text) if text.strip().isdigit() else None
    if value is None or not low <= value <= high:
        raise InvalidArgument(f"invalid {key}: {text}, expected range [{low}, {high}]")
    return value


def parse_mode(text: str) -> LocationMode:
    try:
        return LocationMode[text.upper()]
    except KeyError:
        names = ", ".join(m.value for m in LocationMode)
        raise InvalidArgument(
            f"invalid dwarf_location_info_mode: {text}, expected one of {names}"
        ) from None


def parse_capture(text: str) -> CaptureMode:
    try:
        return CaptureMode(text.lower())
    except ValueError:
        names = ", ".join(m.value for m in CaptureMode)
        raise InvalidArgument(f"invalid capture: {text}, expected one of {names}") from None


def parse_pid(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_TID:
        raise InvalidArgument(f"invalid pid: {text}")
    return int(text)


def build_options(
    pid: str,
    thread_id: Optional[str],
    tid: Optional[str],
    mode: Optional[str],
    dwarf_mode: Optional[str],
    timeout_ms: str,
    skip_blocking_syscalls: bool,
    max_frames: str,
    stack_bytes: str,
    addresses: bool,
    debug_dirs: Tuple[str, ...] = (),
    no_cache: bool = False,
    capture: str = "auto",
) -> DumpOptions:
    if thread_id is not None and tid is not None:
        raise InvalidArgument("tid and thread_id are mutually exclusive")
    tid_text = thread_id if thread_id is not None else tid
    mode_text = dwarf_mode if dwarf_mode is not None else mode
    return DumpOptions(
        pid=parse_pid(pid),
        thread_ids=parse_thread_ids(tid_text) if tid_text is not None else None,
        mode=parse_mode(mode_text) if mode_text is not None else LocationMode.FAST,
        timeout_ms=parse_range("timeout_ms", timeout_ms, 1, 10000),
        skip_blocking_syscalls=skip_blocking_syscalls,
        max_frames=parse_range("max_frames", max_frames, 1, 4096),
        stack_bytes=parse_range("stack_bytes", stack_bytes, 4096, 67108864),
        show_addresses=addresses,
        debug_dirs=debug_search_path(tuple(debug_dirs)),
        cache_dir=None if no_cache else default_directory(),
        capture=parse_capture(capture),
    )


def debug_search_path(debug_dirs: Tuple[str, ...]) -> Tuple[str, ...]:
    """--debug-dir values first, then STACKDUMP_DEBUG_PATH (colon-separated)."""
    env = os.environ.get("STACKDUMP_DEBUG_PATH", "")
    dirs = [*debug_dirs, *(d for d in env.split(":") if d)]
    return tuple(dict.fromkeys(os.path.abspath(d) for d in dirs))


def write_report(report: Report, output: Optional[str]) -> None:
    if output is None:
        write_text(report, sys.stdout)
        sys.stdout.flush()
        return
    # A runbook may poll for the file: it must appear complete or not at all.
    directory = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(prefix=".stackdump-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            write_text(report, f)
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _error(message: str, help_text: str = "") -> None:
    if sys.stderr.isatty():
        from rich.console import Console

        console = Console(stderr=True, highlight=False)
        console.print(f"[bold red]stackdump: error:[/] {message}", markup=True)
        if help_text:
            console.print(help_text, style="yellow", markup=False)
    else:
        print(f"stackdump: error: {message}", file=sys.stderr)
        if help_text:
            print(help_text, file=sys.stderr)


class StopRequest:
    """Set by SIGINT/SIGTERM: capture ends after the current thread (never while one is
    stopped) and the report covers what was captured. A second signal kills stackdump
    outright, which still leaves every thread running (PTRACE_SEIZE)."""

    def __init__(self) -> None:
        self.signal_name = ""

    def __call__(self) -> bool:
        return bool(self.signal_name)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)


def _run_with_progress(options: DumpOptions, stop: StopRequest) -> Report:
    if not sys.stderr.isatty():
        return dump(options, should_stop=stop)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("capturing threads"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("capture", total=None)
        return dump(
            options,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            should_stop=stop,
        )


HELP = """Print the native stack of every thread of the live process PID.

Each thread is stopped only while its registers and stack are copied (microseconds), one
thread at a time; unwinding and symbolization run afterwards on the copy. Threads blocked in
calls that a stop would interrupt with EINTR (epoll_wait, semop, sigtimedwait, socket calls)
are never stopped: their stacks are copied while they stay blocked (--capture)."""


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-p", "--pid", "pid", required=True, metavar="PID", help="The target process.")
@click.option(
    "--thread-id",
    "thread_id",
    metavar="LIST",
    help="Comma-separated Linux TIDs to sample, in this order (default: all).",
)
@click.option("--tid", "tid", metavar="LIST", help="Legacy alias of --thread-id.")
@click.option("--mode", "mode", metavar="MODE", help="Alias of --dwarf-location-info-mode.")
@click.option(
    "--dwarf-location-info-mode",
    "dwarf_mode",
    metavar="MODE",
    help="DISABLED, FAST (default), FULL or FULL_WITH_INLINE; any case.",
)
@click.option(
    "--timeout-ms",
    "timeout_ms",
    default="100",
    show_default=True,
    metavar="N",
    help="Per-thread limit for stopping and copying one thread, 1 to 10000.",
)
@click.option(
    "--skip-blocking-syscalls",
    is_flag=True,
    help="Do not stop threads blocked in an interrupt-sensitive syscall.",
)
@click.option(
    "--max-frames",
    "max_frames",
    default="256",
    show_default=True,
    metavar="N",
    help="Frames per thread, 1 to 4096.",
)
@click.option(
    "--stack-bytes",
    "stack_bytes",
    default="262144",
    show_default=True,
    metavar="N",
    help="Most bytes of stack copied per thread, 4096 to 67108864.",
)
@click.option("-a", "--addresses", is_flag=True, help="Print every frame's pc.")
@click.option(
    "--debug-dir",
    "debug_dirs",
    multiple=True,
    metavar="DIR",
    help="Also look for separate debug files here (repeatable; by build-id under "
    "DIR/.build-id/ and by .gnu_debuglink name). See STACKDUMP_DEBUG_PATH.",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Neither read nor write the symbol cache ($XDG_CACHE_HOME/stackdump).",
)
@click.option(
    "--capture",
    "capture",
    default="auto",
    show_default=True,
    metavar="HOW",
    help="auto: stop threads except those a stop would disturb; ptrace: stop every "
    "thread; passive: stop none (running threads are skipped).",
)
@click.option(
    "-o",
    "--output",
    "output",
    metavar="FILE",
    help="Write the report to FILE (atomically) instead of stdout.",
)
@click.version_option(__version__, "--version", prog_name="stackdump")
def command(output: Optional[str], **params) -> int:
    # click names each parameter after build_options' arguments
    options = build_options(**params)
    stop = StopRequest()
    stop.install()
    report = _run_with_progress(options, stop)
    write_report(report, output)
    if report.interrupted:
        _error(
            f"interrupted by {stop.signal_name}: the report covers the "
            f"{report.header.thread_count} thread(s) captured before it"
        )
        return EXIT_PARTIAL
    return EXIT_PARTIAL if report.partial else EXIT_OK


def main(argv: Optional[List[str]] = None) -> None:
    try:
        code = command.main(args=argv, prog_name="stackdump", standalone_mode=False)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:
        _error(e.format_message())
        code = EXIT_USAGE
    except StackdumpError as e:
        _error(e.message, e.help_text)
        code = e.exit_code
    except click.exceptions.Abort:
        _error("interrupted")
        code = EXIT_PARTIAL
    except BrokenPipeError:
        # `stackdump ... | head`: the reader left; that is not our failure.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_OK
    except OSError as e:
        _error(f"{e.filename or ''}: {e.strerror}" if e.strerror else str(e))
        code = EXIT_NO_REPORT
    except Exception as e:  # noqa: BLE001 - the last line of defence against a traceback
        if os.environ.get("STACKDUMP_DEBUG"):
            raise
        _error(f"internal error: {type(e).__name__}: {e} (STACKDUMP_DEBUG=1 shows the traceback)")
        code = EXIT_NO_REPORT
    sys.exit(code if isinstance(code, int) else EXIT_OK)
