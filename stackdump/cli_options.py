"""The `stackdump` command's options as click declares them: spellings, metavars, defaults
and help, in the order `--help` lists them (README "Options" and stackdump(1) say the same).
Values stay strings: `arguments.py` checks them, so its messages name the option as typed.
"""

from __future__ import annotations

from typing import Callable

import click

from stackdump import runtimes
from stackdump.syscalls import INTERRUPT_SENSITIVE_NAMES
from stackdump.writers import registry as formats

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


OUTPUT = click.option(
    "-o",
    "--output",
    "output",
    metavar="FILE",
    help="Write the report to FILE instead of stdout ('-': stdout). A regular file is "
    "replaced atomically once the report is complete, keeping its mode and owner; a "
    "device, FIFO or socket is written in place.",
)


OPTIONS = (
    click.option("-p", "--pid", "pid", metavar="PID", help="The target process."),
    click.option(
        "--core",
        "core",
        metavar="FILE",
        help="Instead of a live process: a core file (the kernel's, systemd-coredump's, gcore's).",
    ),
    click.option(
        "--exe",
        "exe",
        metavar="PATH",
        help="With --core: the executable, when not at the path the core names.",
    ),
    click.option(
        "--sysroot",
        "sysroot",
        metavar="DIR",
        help="With --core: read the core's mapped files under DIR (a core from another machine).",
    ),
    click.option(
        "--thread-id",
        "thread_id",
        metavar="LIST",
        help="Comma-separated Linux TIDs to sample, in this order (default: all).",
    ),
    click.option("--tid", "tid", metavar="LIST", help="Legacy alias of --thread-id."),
    click.option("--mode", "mode", metavar="MODE", help="Alias of --dwarf-location-info-mode."),
    click.option(
        "--dwarf-location-info-mode",
        "dwarf_mode",
        metavar="MODE",
        help="DISABLED, FAST (default), FULL or FULL_WITH_INLINE; any case.",
    ),
    click.option(
        "--timeout-ms",
        "timeout_ms",
        default="100",
        show_default=True,
        metavar="N",
        help="Per-thread limit for stopping and copying one thread, 1 to 10000.",
    ),
    click.option("--skip-blocking-syscalls", is_flag=True, help=SKIP_HELP),
    click.option(
        "--max-frames",
        "max_frames",
        default="256",
        show_default=True,
        metavar="N",
        help="Frames per thread, 1 to 4096.",
    ),
    click.option(
        "--stack-bytes",
        "stack_bytes",
        default="262144",
        show_default=True,
        metavar="N",
        help="Most bytes of stack copied per thread, 4096 to 67108864.",
    ),
    click.option("-a", "--addresses", is_flag=True, help="Print every frame's pc."),
    click.option(
        "--debug-dir",
        "debug_dirs",
        multiple=True,
        metavar="DIR",
        help="Also look for separate debug files here (repeatable; by build-id under "
        "DIR/.build-id/ and by .gnu_debuglink name). See STACKDUMP_DEBUG_PATH.",
    ),
    click.option(
        "--no-cache",
        is_flag=True,
        help="Neither read nor write the symbol cache ($XDG_CACHE_HOME/stackdump).",
    ),
    click.option(
        "--no-debuginfod",
        is_flag=True,
        help="Download no debug files, even with DEBUGINFOD_URLS set.",
    ),
    click.option(
        "--capture",
        "capture",
        default="auto",
        show_default=True,
        metavar="HOW",
        help="auto: stop threads except those a stop would disturb; ptrace: stop every "
        "thread; passive: stop none (running threads are skipped).",
    ),
    OUTPUT,
    click.option(
        "--format",
        "output_format",
        default="text",
        show_default=True,
        metavar="FORMAT",
        help=formats.help_text(),
    ),
    click.option(
        "--group",
        is_flag=True,
        help="Merge threads with the same stack: one section per distinct stack, biggest first, "
        "with the TIDs and names it covers (text and json).",
    ),
    click.option(
        "--sort",
        "sort",
        default="tid",
        show_default=True,
        metavar="ORDER",
        help="tid, or cpu: busiest thread first, by the CPU each used in --cpu-window-ms "
        "measured before capture.",
    ),
    click.option(
        "--cpu-window-ms",
        "cpu_window_ms",
        default="200",
        show_default=True,
        metavar="N",
        help="How long --sort cpu watches the threads' CPU time before capture, 1 to 10000.",
    ),
    click.option(
        "--kernel",
        is_flag=True,
        help="Also print each thread's kernel stack (/proc/PID/task/TID/stack; root only), "
        "before its user frames, marked [kernel].",
    ),
    click.option(
        "--samples",
        "samples",
        metavar="N",
        help="Sample the threads N times, --interval-ms apart, and print the profile: stacks "
        "with their sample counts, busiest first (1 to 1000000).",
    ),
    click.option(
        "--interval-ms",
        "interval_ms",
        default="100",
        show_default=True,
        metavar="MS",
        help="Time from one sample's start to the next, 1 to 60000.",
    ),
    click.option(
        "--duration-s",
        "duration_s",
        metavar="S",
        help="Instead of --samples: sample for S seconds (1 to 86400) at --hz.",
    ),
    click.option(
        "--hz",
        "hz",
        default="10",
        show_default=True,
        metavar="H",
        help="With --duration-s: samples per second, 1 to 1000.",
    ),
    click.option(
        "--state",
        "state",
        default="all",
        show_default=True,
        metavar="STATE",
        help="Which thread-samples a profile counts: all, running (on CPU) or blocked (off CPU).",
    ),
    click.option(
        "--watch",
        "watch",
        metavar="SECONDS",
        help="Instead of one dump: capture the threads every --interval-ms (1000 unless "
        "given) for SECONDS (1 to 3600) and say which made progress: deadlocked, blocked, "
        "spinning, waiting or running, what did not move first (text and json).",
    ),
    click.option(
        "--coroutines",
        is_flag=True,
        help=f"Also print every suspended coroutine ({runtimes.coroutine_kinds()}), found by "
        "reading memory while every thread runs.",
    ),
    click.option(
        "--symbolize",
        "symbolize",
        metavar="ADDRS",
        help="Instead of dumping: name these addresses (0x..., separated by commas or spaces; "
        "'-' reads them from stdin, e.g. a backtrace in a log) with -p's maps or --object.",
    ),
    click.option(
        "--object",
        "object_path",
        metavar="FILE",
        help="With --symbolize and no -p: the ELF object the addresses are in.",
    ),
    click.option(
        "--load-address",
        "load_address",
        default="0",
        show_default=True,
        metavar="ADDR",
        help="With --object: where it was loaded (0: the addresses are its own, as linked).",
    ),
    click.option(
        "--backtrace",
        is_flag=True,
        help="With --symbolize: the addresses are one backtrace, innermost first: every one but "
        "the first is a return address, looked up at address-1 as a dump does.",
    ),
)


def with_options(command: Callable) -> Callable:
    """`command` with every option, as if each were a decorator above it, in order."""
    for option in reversed(OPTIONS):
        command = option(command)
    return command
