"""The `stackdump` command: parse and validate arguments, open the output, run the engine
phase by phase, write the report, print, exit.

The only module that writes to stderr or chooses an exit status (docs/FORMAT.md "Exit
status"). Values are taken as strings and validated here, so every message carries Doris's
wording (docs/FORMAT.md "Standard error").
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, NoReturn, Optional, Sequence, Tuple, Union

import click

from stackdump import __version__, api, proc, safefs
from stackdump.addresses import address_lines, negative_address, parse_addresses
from stackdump.cache import default_directory
from stackdump.elf.debuginfod import settings_from_environ
from stackdump.engine import DumpOptions
from stackdump.errors import InvalidArgument, StackdumpError
from stackdump.escape import escape, quote
from stackdump.interrupts import Interrupted, Interrupts, die_by
from stackdump.output import Destination, open_destination
from stackdump.syscalls import INTERRUPT_SENSITIVE_NAMES
from stackdump.types import (
    AnalysisOptions,
    CaptureMode,
    CaptureOptions,
    LocationMode,
    Report,
)
from stackdump.writers import registry as formats
from stackdump.writers.colour import coloured_lines
from stackdump.writers.registry import View

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_NO_REPORT, EXIT_OUTPUT = 0, 1, 2, 3, 4
MAX_TID = 2**31 - 1


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


SORTS = ("tid", "cpu")


def parse_pid(text: str) -> int:
    if not _is_decimal(text) or not 1 <= int(text) <= MAX_TID:
        raise InvalidArgument(f"invalid pid: {escape(text)}")
    return int(text)


def _checked(option: str, text: str, parse: Callable[[str], object]):
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


@dataclass
class Run:
    """What one invocation carries between click and the phases of a dump."""

    argv: Sequence[str]
    interrupts: Interrupts
    stdout_usable: bool = True
    stage: str = "start"  # start, capture, analysis, write
    destination: Optional[Destination] = None
    warnings: List[str] = field(default_factory=list)
    profile_state: str = "all"
    core: Optional[Tuple[str, Optional[str], str]] = None  # --core FILE, --exe, --sysroot

    def set_stage(self, stage: str) -> None:
        self.stage = stage


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
    debug_dirs: Tuple[str, ...] = (),
    no_cache: bool = False,
    no_debuginfod: bool = False,
    capture: str = "auto",
    argv: Sequence[str] = (),
    kernel: bool = False,
    cpu_window_ms: int = 0,
    coroutines: bool = False,
) -> DumpOptions:
    if thread_id is not None and tid is not None:
        raise InvalidArgument("tid and thread_id are mutually exclusive (--tid and --thread-id)")
    tid_option = "--thread-id" if thread_id is not None else "--tid"
    tid_text = thread_id if thread_id is not None else tid
    mode_option = "--dwarf-location-info-mode" if dwarf_mode is not None else "--mode"
    mode_text = dwarf_mode if dwarf_mode is not None else mode
    # Checked in this order, so the first bad value is the one reported.
    # (A core file has no pid to check: its process is gone.)
    pid_value = (
        _checked(typed_option(argv, ("-p", "--pid")), pid, parse_pid) if pid is not None else 0
    )
    thread_ids = _checked(tid_option, tid_text, parse_thread_ids) if tid_text is not None else None
    location = _checked(mode_option, mode_text, parse_mode) if mode_text is not None else None
    timeout = _checked("--timeout-ms", timeout_ms, lambda t: parse_range("timeout_ms", t, 1, 10000))
    frames = _checked("--max-frames", max_frames, lambda t: parse_range("max_frames", t, 1, 4096))
    stack = _checked(
        "--stack-bytes", stack_bytes, lambda t: parse_range("stack_bytes", t, 4096, 67108864)
    )
    how = _checked("--capture", capture, parse_capture)
    return DumpOptions(
        capture=CaptureOptions(
            pid=pid_value,
            thread_ids=thread_ids,
            timeout_ms=timeout,
            skip_blocking_syscalls=skip_blocking_syscalls,
            stack_bytes=stack,
            capture_mode=how,
            realtime=os.environ.get("STACKDUMP_REALTIME", "1") != "0",
            kernel_stacks=kernel,
            cpu_window_ms=cpu_window_ms,
            coroutines=coroutines,
        ),
        analysis=AnalysisOptions(
            mode=location or LocationMode.FAST,
            max_frames=frames,
            debug_dirs=debug_search_path(tuple(debug_dirs)),
            cache_dir=None if no_cache else default_directory(),
            debuginfod=None if no_debuginfod else settings_from_environ(os.environ),
        ),
    )


def debug_search_path(debug_dirs: Tuple[str, ...]) -> Tuple[str, ...]:
    """--debug-dir values first, then STACKDUMP_DEBUG_PATH (colon-separated)."""
    env = os.environ.get("STACKDUMP_DEBUG_PATH", "")
    dirs = [*debug_dirs, *(d for d in env.split(":") if d)]
    return tuple(dict.fromkeys(os.path.abspath(d) for d in dirs))


def missing_debug_dirs(debug_dirs: Tuple[str, ...]) -> List[str]:
    return [
        f"--debug-dir {quote(d)}: no such directory, ignored"
        for d in debug_dirs
        if not os.path.isdir(d)
    ]


def _say(prefix: str, message: str, help_text: str = "", style: str = "bold red") -> None:
    stream = sys.stderr
    if stream is None:
        return
    try:
        if stream.isatty():
            # rich (~40 ms to import) only for a terminal
            from rich.console import Console
            from rich.markup import escape as markup_escape

            # Values in messages are already escaped (stackdump.escape); only rich's own
            # markup must not be read into them.
            console = Console(stderr=True, highlight=False)
            console.print(f"[{style}]stackdump: {prefix}:[/] {markup_escape(message)}")
            if help_text:
                console.print(help_text, style="yellow", markup=False)
        else:
            stream.write(f"stackdump: {prefix}: {message}\n")
            if help_text:
                stream.write(help_text + "\n")
        stream.flush()
    except OSError:
        pass  # stderr itself is gone: the exit status still tells


def _error(message: str, help_text: str = "") -> None:
    _say("error", message, help_text)


def _warn(messages: Sequence[str]) -> None:
    for message in messages:
        _say("warning", message, style="bold yellow")


class TerminalProgress:
    """A progress bar on stderr, only when it is a terminal and the dump has already taken
    half a second (a short dump, or an early error, never flashes one). Drawn from the
    engine's callbacks, which come between threads: no drawing thread runs while a thread
    of the target is stopped."""

    DELAY_S = 0.5
    PERIOD_S = 0.1
    LABELS = {
        "capture": "capturing threads",
        "symbolization": "symbolizing",
        "sampling": "sampling",
    }

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._start = time.monotonic()
        self._last = 0.0
        self._bar = None
        self._task = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._start < self.DELAY_S or (now - self._last < self.PERIOD_S and done < total):
            return
        self._last = now
        if self._bar is None:
            # rich (~40 ms to import) only for a dump long enough to show a bar
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(stderr=True),
                transient=True,
                auto_refresh=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=None)
        label = self.LABELS.get(phase, phase)
        self._bar.update(self._task, description=label, completed=done, total=total)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            with contextlib.suppress(OSError):
                bar.stop()


def _isatty(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False


def _named_file(option: str, path: str) -> None:
    """A file the user named must be a regular file we can read: anything else (a FIFO that
    would block the read forever, a device, a directory) is a usage error, exit 2."""
    try:
        os.close(safefs.open_regular(path))
    except safefs.NotRegularFile as e:
        raise InvalidArgument(f"{option} {quote(path)}: {e.strerror}") from None
    except FileNotFoundError:
        if option != "--core":  # a core that cannot be read is "no report" (exit 3)
            raise InvalidArgument(f"{option} {quote(path)}: no such file") from None
    except OSError:
        pass  # unreadable: said by whatever reads it


def _core_source(params: dict) -> Optional[Tuple[str, Optional[str], str]]:
    """(core file, --exe, --sysroot) for a dump of a core file, else None. Pops them."""
    core, exe, sysroot = params.pop("core"), params.pop("exe"), params.pop("sysroot")
    if core is None:
        if exe is not None or sysroot is not None:
            raise InvalidArgument("--exe and --sysroot need --core FILE")
        return None
    if params["pid"] is not None:
        raise InvalidArgument("pid and core are mutually exclusive (-p and --core)")
    _named_file("--core", core)
    if exe is not None:
        _named_file("--exe", exe)
    if sysroot is not None and not os.path.isdir(sysroot):
        raise InvalidArgument(f"invalid sysroot: {sysroot} (no such directory)")
    return core, exe, sysroot or ""


def _dump(options: DumpOptions, run: Run) -> Report:
    """The library's dump, with the terminal's progress bar and the run's signal phases."""
    if run.core is not None:
        path, exe, sysroot = run.core
        source: api.Source = api.CoreFile(path, exe, sysroot)
    else:
        source = api.Process(options.capture.pid)
    progress = TerminalProgress(_isatty(sys.stderr))
    try:
        return api.dump(source, options, progress, run.interrupts, run.set_stage)
    finally:
        progress.close()


def _interruption_note(report: Report, signal_name: str) -> str:
    parts = []
    # Capture was cut short exactly when fewer threads were reported than selected; both
    # phases can have been interrupted (a second signal during symbolization).
    if report.summary.reported < report.header.thread_count:
        parts.append(
            f"the report covers the {report.summary.reported} of {report.header.thread_count} "
            "thread(s) captured before it"
        )
    if report.symbolization_interrupted:
        parts.append(
            f"symbolization stopped: {report.summary.unsymbolized} frame(s) are printed "
            "unsymbolized, as 0x... in OBJECT+0xOFFSET"
        )
    return f"interrupted by {signal_name}: " + "; ".join(parts)


HELP = """Print the native stack of every thread of the live process PID.

Each thread is stopped only while its registers and stack are copied (microseconds), one
thread at a time; unwinding and symbolization run afterwards on the copy. Threads blocked in
calls that a stop would interrupt with EINTR (epoll_wait, semop, sigtimedwait, socket calls)
are never stopped: their stacks are copied while they stay blocked (--capture).
With --core FILE, the same report from a core file instead.

The output format, statuses and exit codes are described in docs/FORMAT.md and
stackdump(1)."""

SKIP_HELP = (
    "Do not stop threads blocked in an interrupt-sensitive syscall: "
    + " ".join(INTERRUPT_SENSITIVE_NAMES)
    + ", and restart_syscall (how the kernel resumes nanosleep, poll or a timed futex after "
    "any ptrace stop)."
)


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-p", "--pid", "pid", metavar="PID", help="The target process.")
@click.option(
    "--core",
    "core",
    metavar="FILE",
    help="Instead of a live process: a core file (the kernel's, systemd-coredump's, gcore's).",
)
@click.option(
    "--exe",
    "exe",
    metavar="PATH",
    help="With --core: the executable, when not at the path the core names.",
)
@click.option(
    "--sysroot",
    "sysroot",
    metavar="DIR",
    help="With --core: read the core's mapped files under DIR (a core from another machine).",
)
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
@click.option("--skip-blocking-syscalls", is_flag=True, help=SKIP_HELP)
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
    "--no-debuginfod",
    is_flag=True,
    help="Download no debug files, even with DEBUGINFOD_URLS set.",
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
    help="Write the report to FILE instead of stdout ('-': stdout). A regular file is "
    "replaced atomically once the report is complete, keeping its mode and owner; a "
    "device, FIFO or socket is written in place.",
)
@click.option(
    "--format",
    "output_format",
    default="text",
    show_default=True,
    metavar="FORMAT",
    help=formats.help_text(),
)
@click.option(
    "--group",
    is_flag=True,
    help="Merge threads with the same stack: one section per distinct stack, biggest first, "
    "with the TIDs and names it covers (text and json).",
)
@click.option(
    "--sort",
    "sort",
    default="tid",
    show_default=True,
    metavar="ORDER",
    help="tid, or cpu: busiest thread first, by the CPU each used in --cpu-window-ms "
    "measured before capture.",
)
@click.option(
    "--cpu-window-ms",
    "cpu_window_ms",
    default="200",
    show_default=True,
    metavar="N",
    help="How long --sort cpu watches the threads' CPU time before capture, 1 to 10000.",
)
@click.option(
    "--kernel",
    is_flag=True,
    help="Also print each thread's kernel stack (/proc/PID/task/TID/stack; root only), "
    "before its user frames, marked [kernel].",
)
@click.option(
    "--samples",
    "samples",
    metavar="N",
    help="Sample the threads N times, --interval-ms apart, and print the profile: stacks "
    "with their sample counts, busiest first (1 to 1000000).",
)
@click.option(
    "--interval-ms",
    "interval_ms",
    default="100",
    show_default=True,
    metavar="MS",
    help="Time from one sample's start to the next, 1 to 60000.",
)
@click.option(
    "--duration-s",
    "duration_s",
    metavar="S",
    help="Instead of --samples: sample for S seconds (1 to 86400) at --hz.",
)
@click.option(
    "--hz",
    "hz",
    default="10",
    show_default=True,
    metavar="H",
    help="With --duration-s: samples per second, 1 to 1000.",
)
@click.option(
    "--state",
    "state",
    default="all",
    show_default=True,
    metavar="STATE",
    help="Which thread-samples a profile counts: all, running (on CPU) or blocked (off CPU).",
)
@click.option(
    "--coroutines",
    is_flag=True,
    help="Also print every suspended coroutine (boost.context fibers: boost.fiber and others "
    "switching with jump_fcontext; brpc's bthreads; Go's goroutines), found by reading memory "
    "while every thread runs.",
)
@click.option(
    "--symbolize",
    "symbolize",
    metavar="ADDRS",
    help="Instead of dumping: name these addresses (0x..., separated by commas or spaces; "
    "'-' reads them from stdin, e.g. a backtrace in a log) with -p's maps or --object.",
)
@click.option(
    "--object",
    "object_path",
    metavar="FILE",
    help="With --symbolize and no -p: the ELF object the addresses are in.",
)
@click.option(
    "--load-address",
    "load_address",
    default="0",
    show_default=True,
    metavar="ADDR",
    help="With --object: where it was loaded (0: the addresses are its own, as linked).",
)
@click.option(
    "--backtrace",
    is_flag=True,
    help="With --symbolize: the addresses are one backtrace, innermost first: every one but "
    "the first is a return address, looked up at address-1 as a dump does.",
)
@click.version_option(__version__, "--version", prog_name="stackdump")
@click.pass_obj
def command(run: Run, output: Optional[str], **params) -> int:
    lookup = _address_lookup(params)
    if lookup is not None:
        return _symbolize(run, output, params, *lookup)
    run.core = _core_source(params)
    if params["pid"] is None and run.core is None:
        raise click.UsageError("Missing option '-p' / '--pid'.")
    sampling = _sampling_plan(params)
    if run.core is not None and sampling is not None:
        raise InvalidArgument("sampling needs a live process (-p), not a core file")
    run.profile_state = _checked(
        "--state", params.pop("state"), parse_choice("state", ("all", "running", "blocked"))
    )
    # click names each parameter after build_options' arguments; the rest are the writer's
    view = View(
        format=_checked(
            "--format", params.pop("output_format"), parse_choice("format", formats.names())
        ),
        group=params.pop("group"),
        sort=_checked("--sort", params.pop("sort"), parse_choice("sort", SORTS)),
        show_addresses=params.pop("addresses"),
    )
    window = _checked(
        "--cpu-window-ms",
        params.pop("cpu_window_ms"),
        lambda t: parse_range("cpu_window_ms", t, 1, 10000),
    )
    options = build_options(
        **params, argv=run.argv, cpu_window_ms=window if view.sort == "cpu" else 0
    )
    _warn(missing_debug_dirs(params["debug_dirs"]))
    if options.capture.kernel_stacks:
        refusal = proc.kernel_stack_refusal(options.capture.pid)
        if refusal is not None:
            _say("note", f"no kernel stacks: {refusal}", style="bold yellow")
    profiling = sampling is not None or view.format in formats.profile_only()
    if run.core is not None and profiling:
        raise InvalidArgument(
            f"--format {view.format} is a profile, sampled from a live process (-p): a core "
            f"file's report is {formats.or_list(formats.for_dumps())}"
        )
    if profiling:
        _check_profile_view(view, options)
        count, interval = sampling or (1, 100)
        return _profile(run, output, options, view, count, interval, run.profile_state)
    # Where the report goes is settled before the target is touched: a bad -o costs nothing.
    run.destination = open_destination(output, run.stdout_usable)
    try:
        report = _dump(options, run)
        with _writing(run):
            _write_text(run, output, view, formats.dump_output(report, view))
    except BaseException:
        run.destination.abort()
        raise
    _warn(report.warnings)
    if report.header.core is not None:
        for problem in report.header.core.problems:
            _error(f"core {quote(report.header.core.path)}: {problem}")
        if not report.threads and report.header.core.problems:
            _error("no thread could be read from the core")
        _warn(_unnamed_memory_hint(report))
    if report.summary.exec_seen:
        _error(
            f"process {report.header.pid} called exec() during the dump and now runs "
            f"{quote(report.summary.exec_seen)}: the threads captured before are reported as "
            f"{quote(report.header.exe)}'s, those captured after as attach_error"
        )
    if report.summary.process_exited:
        _error(
            f"process {report.header.pid} exited during the dump: the "
            f"{report.summary.captured} thread(s) captured before are reported in full"
        )
    if report.interrupted:
        _error(_interruption_note(report, run.interrupts.signal_name))
        return EXIT_PARTIAL
    return EXIT_PARTIAL if report.partial else EXIT_OK


def _unnamed_memory_hint(report: Report) -> Tuple[str, ...]:
    """For a core that names no files (qemu-user writes no NT_FILE), when frames fell in
    memory no object was found for: what would name them."""
    core = report.header.core
    if core is None or core.names_files:
        return ()
    lost = sum(1 for t in report.threads for f in t.frames if f.function is None)
    lost -= sum(m.unknown_frames for m in report.modules)
    if lost <= 0:
        return ()
    where = (
        f"not under --sysroot {quote(core.sysroot)}"
        if core.sysroot
        else "looked for on this machine's own root, which may not be the target's"
    )
    return (
        f"{lost} frame(s) are in memory no object was found for: the core names no mapped "
        f"files (no NT_FILE note, as qemu-user writes its cores), so the objects the "
        f"dynamic loader lists were {where}; give --sysroot DIR (the target's root "
        "filesystem) and --exe PATH (the program)",
    )


def _address_lookup(params: dict) -> Optional[Tuple[str, Optional[str], int, bool]]:
    """(addresses text, object, load address, backtrace) for --symbolize, else None. Pops
    the options build_options does not take."""
    text, path = params.pop("symbolize"), params.pop("object_path")
    load_text, backtrace = params.pop("load_address"), params.pop("backtrace")
    if text is None:
        if path is not None or backtrace:
            option = "--object" if path is not None else "--backtrace"
            raise InvalidArgument(f"{option} applies to --symbolize only")
        return None
    if (path is None) == (params["pid"] is None):
        raise InvalidArgument("--symbolize needs either -p PID or --object FILE")
    try:
        load = int(load_text, 16) if load_text.lower().startswith("0x") else int(load_text)
    except ValueError:
        load = -1
    if load < 0:
        raise InvalidArgument(f"invalid load_address: {escape(load_text)}")
    return text, path, load, backtrace


def _symbolize(
    run: Run,
    output: Optional[str],
    params: dict,
    text: str,
    path: Optional[str],
    load: int,
    backtrace: bool,
) -> int:
    if text == "-":
        text = sys.stdin.read() if sys.stdin is not None else ""
    negative = negative_address(text)
    if negative:
        raise InvalidArgument(f"invalid symbolize: {quote(negative)} is negative, not an address")
    addresses = parse_addresses(text)
    if not addresses:
        raise InvalidArgument(f"invalid symbolize: no 0x... address in {quote(text[:80])}")
    options = build_options(
        **{k: v for k, v in params.items() if k in _ANALYSIS_KEYS},
        pid=params["pid"] or "1",
        argv=run.argv,
    ).analysis
    source: Union[api.Process, api.ObjectFile]
    if path is not None:
        _named_file("--object", path)
        source = api.ObjectFile(path, load)
    else:
        source = api.Process(parse_pid(params["pid"]))
    run.destination = open_destination(output, run.stdout_usable)
    try:
        try:
            resolved, warnings = api.symbolize(addresses, source, options, backtrace)
        except InvalidArgument as e:
            if path is None:
                raise
            raise InvalidArgument(f"--object {e.message}") from None  # an unreadable ELF
        with _writing(run):
            run.destination.write_lines(address_lines(resolved))
    except BaseException:
        run.destination.abort()
        raise
    _warn(warnings)
    return EXIT_OK if all(r.frame.function for r in resolved) else EXIT_PARTIAL


_ANALYSIS_KEYS = (
    "thread_id",
    "tid",
    "mode",
    "dwarf_mode",
    "timeout_ms",
    "skip_blocking_syscalls",
    "max_frames",
    "stack_bytes",
    "debug_dirs",
    "no_cache",
    "no_debuginfod",
    "capture",
    "kernel",
    "coroutines",
)


def _sampling_plan(params: dict) -> Optional[Tuple[int, int]]:
    """(samples, interval_ms) from --samples/--interval-ms or --duration-s/--hz; None for a
    single dump. Pops the options build_options does not take."""
    samples, duration = params.pop("samples"), params.pop("duration_s")
    interval_text, hz_text = params.pop("interval_ms"), params.pop("hz")
    if samples is not None and duration is not None:
        raise InvalidArgument(
            "samples and duration_s are mutually exclusive (--samples and --duration-s)"
        )
    if samples is not None:
        count = _checked("--samples", samples, lambda t: parse_range("samples", t, 1, 1_000_000))
        interval = _checked(
            "--interval-ms", interval_text, lambda t: parse_range("interval_ms", t, 1, 60000)
        )
        return count, interval
    if duration is not None:
        seconds = _checked(
            "--duration-s", duration, lambda t: parse_range("duration_s", t, 1, 86400)
        )
        hz = _checked("--hz", hz_text, lambda t: parse_range("hz", t, 1, 1000))
        return seconds * hz, max(1, 1000 // hz)
    return None


def _check_profile_view(view: View, options: DumpOptions) -> None:
    if view.format not in formats.for_profiles():
        raise InvalidArgument(
            f"invalid format: {view.format} is one dump's document; a profile is written as "
            f"{formats.or_list(formats.for_profiles())} (--format {view.format})"
        )
    if view.sort == "cpu":
        raise InvalidArgument("--sort cpu orders one dump's threads; a profile is busiest first")
    if options.capture.kernel_stacks:
        raise InvalidArgument("--kernel applies to one dump, not to a profile")


def _profile(
    run: Run,
    output: Optional[str],
    options: DumpOptions,
    view: View,
    count: int,
    interval: int,
    state: str,
) -> int:
    run.destination = open_destination(output, run.stdout_usable)
    progress = TerminalProgress(_isatty(sys.stderr))
    try:
        try:
            run.stage = "capture"
            source = api.Process(options.capture.pid)
            profile = api.profile(source, count, interval, options, state, progress, run.interrupts)
        finally:
            progress.close()
        with _writing(run):
            written = formats.profile_output(profile, view)
            if isinstance(written, bytes):
                run.destination.write(written)
            else:
                _write_text(run, output, view, written)
    except BaseException:
        run.destination.abort()
        raise
    _warn(profile.warnings)
    if profile.ended_early:
        _error(f"{profile.ended_early}: the profile covers the samples taken before")
        return EXIT_PARTIAL
    if profile.interrupted:
        _error(
            f"interrupted by {run.interrupts.signal_name}: the profile covers the "
            f"{profile.samples_taken} of {count} sample(s) taken before it"
        )
        return EXIT_PARTIAL
    return EXIT_OK


def _write_text(run: Run, output: Optional[str], view: View, lines: Iterator[str]) -> None:
    """Lines to the destination, coloured when they go to a terminal."""
    if _colour_wanted(output, view):
        lines = coloured_lines(lines)
    run.destination.write_lines(lines)


def _colour_wanted(output: Optional[str], view: View) -> bool:
    """Colour only for text on our own stdout when it is a terminal (and not NO_COLOR)."""
    if not formats.find(view.format).coloured or output not in (None, "-"):
        return False
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return _isatty(sys.stdout)


@contextlib.contextmanager
def _writing(run: Run) -> Iterator[None]:
    """The write phase: a signal stops a report that is still going out (between chunks,
    or while the reader is slow), never one already whole; once it is committed signals
    change nothing, and the exit status is the report's."""
    run.stage = "write"
    with run.interrupts.deferred() as phase:
        run.destination.check = phase.raise_if_requested
        yield
        run.destination.commit()
        run.interrupts.ignore()


def _interrupted_message(run: Run, e: Interrupted) -> str:
    if run.stage == "write" and run.destination is not None:
        return f"interrupted by {e.name} while writing the report: {run.destination.cut_note()}"
    if run.stage in ("capture", "analysis"):
        return f"interrupted by {e.name} again: no report; every thread of the target runs on"
    return f"interrupted by {e.name}: no thread was stopped, no report written"


def main(
    argv: Optional[Sequence[str]] = None,
    interrupts: Optional[Interrupts] = None,
    stdout_usable: bool = True,
) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    if interrupts is None:
        interrupts = Interrupts()
        interrupts.install()
    run = Run(argv=args, interrupts=interrupts, stdout_usable=stdout_usable)
    try:
        code = command.main(args=args, prog_name="stackdump", standalone_mode=False, obj=run)
    except Interrupted as e:
        interrupts.ignore()
        _error(_interrupted_message(run, e))
        die_by(e.signum)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:
        _error(e.format_message())
        code = EXIT_USAGE
    except StackdumpError as e:
        _error(e.message, e.help_text)
        code = e.exit_code
    except click.exceptions.Abort:
        # click's own prompt handling; stackdump asks nothing, so this is a stray EOF.
        _error("aborted")
        code = EXIT_USAGE
    except BrokenPipeError:
        # Only click writes through sys.stdout (--help, --version); the reader left early.
        _quiet_stdout()
        code = EXIT_OUTPUT
    except OSError as e:
        name = quote(e.filename) + ": " if e.filename else ""
        _error(f"{name}{e.strerror or e}")
        code = EXIT_NO_REPORT
    except Exception as e:  # noqa: BLE001 - the last line of defence against a traceback
        if os.environ.get("STACKDUMP_DEBUG"):
            raise
        _error(f"internal error: {type(e).__name__}: {e} (STACKDUMP_DEBUG=1 shows the traceback)")
        code = EXIT_NO_REPORT
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _quiet_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
