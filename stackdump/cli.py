"""The `stackdump` command: parse and validate arguments, open the output, run the library
(`api`) phase by phase, write the report, print, exit.

The only module that writes to stderr or chooses an exit status (docs/FORMAT.md "Exit
status"), through `console.py` and `outcome.py`. The options are declared in
`cli_options.py` and checked in `arguments.py`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, NoReturn, Optional, Sequence, Tuple, Union

import click

from stackdump import __version__, api, collector, lazy, outcome, proc, safefs
from stackdump.addresses import address_lines, negative_address, parse_addresses
from stackdump.arguments import (
    SORTS,
    STATES,
    checked,
    dump_options,
    in_range,
    missing_debug_dirs,
    parse_choice,
    parse_pid,
)
from stackdump.cli_options import HELP, with_options
from stackdump.cli_run import Run, produce, write_text, writing
from stackdump.console import TerminalProgress, error, isatty, say, warn
from stackdump.engine import DumpOptions
from stackdump.errors import InvalidArgument, StackdumpError
from stackdump.escape import escape, quote
from stackdump.interrupts import Interrupted, Interrupts, die_by
from stackdump.outcome import EXIT_NO_REPORT, EXIT_OK, EXIT_OUTPUT, EXIT_PARTIAL, EXIT_USAGE
from stackdump.output import open_destination
from stackdump.types import Report
from stackdump.writers import registry as formats
from stackdump.writers.registry import View

__all__ = [
    "EXIT_NO_REPORT",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "command",
    "main",
]


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


def _core_source(params: dict) -> Optional[api.CoreFile]:
    """The core file (--core, --exe, --sysroot) for a dump of a core file, else None. Pops
    them."""
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
    return api.CoreFile(core, exe, sysroot or "")


def _dump(options: DumpOptions, run: Run) -> Report:
    """The library's dump, with the terminal's progress bar and the run's signal phases."""
    source: api.Source = run.core or api.Process(options.capture.pid)
    progress = TerminalProgress(isatty(sys.stderr))
    try:
        return api.dump(source, options, progress, run.interrupts, run.set_stage)
    finally:
        progress.close()


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@with_options
@click.version_option(__version__, "--version", prog_name="stackdump")
@click.pass_obj
def command(run: Run, output: Optional[str], **params) -> int:
    lookup = _address_lookup(params)
    if lookup is not None:
        return _symbolize(run, output, params, *lookup)
    run.core = _core_source(params)
    if params["pid"] is None and run.core is None:
        raise click.UsageError("Missing option '-p' / '--pid'.")
    watch = _watch_plan(params, run.core is not None)
    sampling = _sampling_plan(params)
    if run.core is not None and sampling is not None:
        raise InvalidArgument("sampling needs a live process (-p), not a core file")
    state = checked("--state", params.pop("state"), parse_choice("state", STATES))
    view = _view(params)
    window = checked(
        "--cpu-window-ms", params.pop("cpu_window_ms"), in_range("cpu_window_ms", 1, 10000)
    )
    debug_dirs = params["debug_dirs"]
    options = dump_options(params, run.argv, window if view.sort == "cpu" else 0)
    warn(missing_debug_dirs(debug_dirs))
    if options.capture.kernel_stacks:
        refusal = proc.kernel_stack_refusal(options.capture.pid)
        if refusal is not None:
            say("note", f"no kernel stacks: {refusal}", style="bold yellow")
    if watch is not None:
        return _watch(run, output, options, view, *watch)
    profiling = sampling is not None or view.format in formats.profile_only()
    with run.interrupts.held():  # a signal inside an import is lost: see Interrupts.held
        formats.prepare(view.format, "profile" if profiling else "dump")
    if run.core is not None and profiling:
        raise InvalidArgument(
            f"--format {view.format} is a profile, sampled from a live process (-p): a core "
            f"file's report is {formats.or_list(formats.for_dumps())}"
        )
    if profiling:
        note = f"{view.format} is one dump's document; "
        _check_series_view(view, options, "profile", formats.for_profiles(), note)
        count, interval = sampling or (1, 100)
        return _profile(run, output, options, view, count, interval, state)
    return _single_dump(run, output, options, view)


def _view(params: dict) -> View:
    """How the report is written, from --format, --group, --sort and -a. Pops them."""
    return View(
        format=checked(
            "--format", params.pop("output_format"), parse_choice("format", formats.names())
        ),
        group=params.pop("group"),
        sort=checked("--sort", params.pop("sort"), parse_choice("sort", SORTS)),
        show_addresses=params.pop("addresses"),
    )


def _single_dump(run: Run, output: Optional[str], options: DumpOptions, view: View) -> int:
    # Where the report goes is settled before the target is touched: a bad -o costs nothing.
    run.destination = open_destination(output, run.stdout_usable)
    try:
        # One dump, then the process ends. What a dump allocates lives until it is written
        # and forms no cycles to free; the cyclic collector would only scan it again and
        # again as it grows (100,000 coroutines: ~0.3 s, a tenth of the dump).
        with collector.paused():
            report = _dump(options, run)
            with writing(run):
                write_text(run, output, view, formats.dump_output(report, view))
    except BaseException:
        run.destination.abort()
        raise
    result = outcome.of_dump(report, run.interrupts.signal_name)
    for kind, message in result.messages:
        if kind == "error":
            error(message)
        else:
            warn([message])
    return result.exit_status


def _address_lookup(params: dict) -> Optional[Tuple[str, Optional[str], int, bool]]:
    """(addresses text, object, load address, backtrace) for --symbolize, else None. Pops
    the options dump_options does not take."""
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
    pid_text = params["pid"]
    options = dump_options(params, run.argv, 0).analysis
    source: Union[api.Process, api.ObjectFile]
    if path is not None:
        _named_file("--object", path)
        source = api.ObjectFile(path, load)
    else:
        source = api.Process(parse_pid(pid_text))
    run.destination = open_destination(output, run.stdout_usable)
    try:
        try:
            resolved, warnings = api.symbolize(addresses, source, options, backtrace)
        except InvalidArgument as e:
            if path is None:
                raise
            raise InvalidArgument(f"--object {e.message}") from None  # an unreadable ELF
        with writing(run):
            run.destination.write_lines(address_lines(resolved))
    except BaseException:
        run.destination.abort()
        raise
    warn(warnings)
    return EXIT_OK if all(r.frame.function for r in resolved) else EXIT_PARTIAL


def _sampling_plan(params: dict) -> Optional[Tuple[int, int]]:
    """(samples, interval_ms) from --samples/--interval-ms or --duration-s/--hz; None for a
    single dump. Pops the options dump_options does not take."""
    samples, duration = params.pop("samples"), params.pop("duration_s")
    interval_text, hz_text = params.pop("interval_ms"), params.pop("hz")
    if samples is not None and duration is not None:
        raise InvalidArgument(
            "samples and duration_s are mutually exclusive (--samples and --duration-s)"
        )
    if samples is not None:
        count = checked("--samples", samples, in_range("samples", 1, 1_000_000))
        interval = checked("--interval-ms", interval_text, in_range("interval_ms", 1, 60000))
        return count, interval
    if duration is not None:
        seconds = checked("--duration-s", duration, in_range("duration_s", 1, 86400))
        hz = checked("--hz", hz_text, in_range("hz", 1, 1000))
        return seconds * hz, max(1, 1000 // hz)
    return None


def _watch_plan(params: dict, core: bool) -> Optional[Tuple[int, int]]:
    """(seconds, interval_ms) for --watch, else None: captures a second apart unless
    --interval-ms was given. Pops --watch."""
    text = params.pop("watch")
    if text is None:
        return None
    if params["samples"] is not None or params["duration_s"] is not None:
        raise InvalidArgument("--watch and --samples/--duration-s are mutually exclusive")
    if core:
        raise InvalidArgument("--watch needs a live process (-p), not a core file")
    seconds = checked("--watch", text, in_range("watch", 1, 3600))
    interval_text = params["interval_ms"]
    source = click.get_current_context().get_parameter_source("interval_ms")
    if source is click.core.ParameterSource.DEFAULT:
        interval_text = "1000"
    interval = checked("--interval-ms", interval_text, in_range("interval_ms", 1, 60000))
    if interval > seconds * 1000:
        raise InvalidArgument(
            f"--interval-ms {interval} is longer than the watch (--watch {seconds}): "
            "a watch needs two captures at least"
        )
    return seconds, interval


def _check_series_view(view: View, options: DumpOptions, kind: str, allowed, note: str) -> None:
    """Checks a profile's or a watch's view (`kind`): formats `allowed` for it, and
    neither --sort cpu nor --kernel (`note` says what it writes instead)."""
    if view.format not in allowed:
        raise InvalidArgument(
            f"invalid format: {note}a {kind} is written as {formats.or_list(allowed)} "
            f"(--format {view.format})"
        )
    if view.sort == "cpu":
        order = "is busiest first" if kind == "profile" else "orders by progress"
        raise InvalidArgument(f"--sort cpu orders one dump's threads; a {kind} {order}")
    if options.capture.kernel_stacks:
        raise InvalidArgument(f"--kernel applies to one dump, not to a {kind}")


def _watch(
    run: Run, output: Optional[str], options: DumpOptions, view: View, seconds: int, interval: int
) -> int:
    _check_series_view(view, options, "watch", formats.for_kind("watch"), "")
    with run.interrupts.held():  # a signal inside an import is lost: see Interrupts.held
        formats.prepare(view.format, "watch")
    source = api.Process(options.capture.pid)
    watched = _series(
        run, output, view, "watch",
        lambda progress: api.watch(source, seconds, interval, options, progress, run.interrupts),
    )  # fmt: skip
    return _series_outcome(run, "watch", watched, f"{watched.samples_taken} sample(s)")


def _profile(
    run: Run,
    output: Optional[str],
    options: DumpOptions,
    view: View,
    count: int,
    interval: int,
    state: str,
) -> int:
    source = api.Process(options.capture.pid)
    profile = _series(
        run, output, view, "profile",
        lambda progress: api.profile(
            source, count, interval, options, state, progress, run.interrupts
        ),
    )  # fmt: skip
    return _series_outcome(run, "profile", profile, f"{profile.samples_taken} of {count} sample(s)")


def _series(run: Run, output: Optional[str], view: View, kind: str, take: Callable) -> Any:
    """A profile or a watch (`kind`), `take(progress)` run with the terminal's progress bar,
    written; returns it."""

    def make() -> Any:
        progress = TerminalProgress(isatty(sys.stderr))
        try:
            run.stage = "capture"
            return take(progress)
        finally:
            progress.close()

    return produce(run, output, view, kind, make)


def _series_outcome(run: Run, kind: str, series, taken: str) -> int:
    """The warnings and exit status of a profile or a watch (`series`) once written."""
    warn(series.warnings)
    if series.ended_early:
        error(f"{series.ended_early}: the {kind} covers the samples taken before")
        return EXIT_PARTIAL
    if series.interrupted:
        error(
            f"interrupted by {run.interrupts.signal_name}: the {kind} covers the {taken} "
            "taken before it"
        )
        return EXIT_PARTIAL
    return EXIT_OK


# Commands beside the dump (cli_merge.py), as `module:name`: imported only when used, so a
# dump pays nothing for them at start-up.
SUBCOMMANDS = {
    "merge": "stackdump.cli_merge:merge_command",
    "diff": "stackdump.cli_merge:diff_command",
}


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
        chosen, prog = command, "stackdump"
        if args and args[0] in SUBCOMMANDS:  # `stackdump merge ...`: a word, never an option
            with interrupts.held():  # a signal inside an import is lost: see Interrupts.held
                chosen = lazy.load(SUBCOMMANDS[args[0]])
            prog, args = f"stackdump {args[0]}", args[1:]
        code = chosen.main(args=args, prog_name=prog, standalone_mode=False, obj=run)
    except Interrupted as e:
        interrupts.ignore()
        error(_interrupted_message(run, e))
        die_by(e.signum)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:
        error(e.format_message())
        code = EXIT_USAGE
    except StackdumpError as e:
        error(e.message, e.help_text)
        code = e.exit_code
    except click.exceptions.Abort:
        # click's own prompt handling; stackdump asks nothing, so this is a stray EOF.
        error("aborted")
        code = EXIT_USAGE
    except BrokenPipeError:
        # Only click writes through sys.stdout (--help, --version); the reader left early.
        _quiet_stdout()
        code = EXIT_OUTPUT
    except OSError as e:
        name = quote(e.filename) + ": " if e.filename else ""
        error(f"{name}{e.strerror or e}")
        code = EXIT_NO_REPORT
    except Exception as e:  # noqa: BLE001 - the last line of defence against a traceback
        if os.environ.get("STACKDUMP_DEBUG"):
            raise
        error(f"internal error: {type(e).__name__}: {e} (STACKDUMP_DEBUG=1 shows the traceback)")
        code = EXIT_NO_REPORT
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _quiet_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
