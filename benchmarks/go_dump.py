#!/usr/bin/env python3
"""Dump a Go server's threads and goroutines with stackdump, gdb and delve, in one run.

Starts a Go binary speaking tests/targets/goserver's protocol (prints "ready go PID", keeps
15 goroutines parked), waits until every thread sleeps, then times each command R times and
prints a table of medians: wall time, its ratio to gdb's `thread apply all bt` (cold to
cold, warm to warm), and peak RSS. "cold" runs get, as root, a dropped page cache first and,
for stackdump, an empty cache directory; "warm" ones follow a run of the same command.

    python3 benchmarks/go_dump.py BINARY [--repeat 3] [--stackdump stackdump] [--dlv DLV]

BINARY: the test target (tests/test_go_releases.py builds it, e.g.
~/.cache/stackdump-tests/go-targets/goserver-1.19-dwarf-*) or a large one from
benchmarks/gen_big_go.py. DLV: Debian's delve (tests/go_toolchains.py fetches sid's).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import any_thread_running  # noqa: E402


def start(binary: str) -> subprocess.Popen:
    target = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert target.stdout.readline().startswith("ready go ")
    deadline = time.monotonic() + 30
    while any_thread_running(target.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return target


def timed(argv: List[str], stdin: str = "", env=None) -> Tuple[float, int, int]:
    """(seconds, peak RSS in MiB, exit status) of one command."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    proc.stdin.write(stdin.encode())
    proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - started, usage.ru_maxrss // 1024, os.waitstatus_to_exitcode(status)


def drop_caches() -> None:
    if os.geteuid() == 0:
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stackdump", default="stackdump")
    parser.add_argument("--dlv", default=shutil.which("dlv"))
    args = parser.parse_args()
    target = start(args.binary)
    pid = str(target.pid)
    rows: List[Tuple[str, Optional[float], int]] = []
    try:
        cache = tempfile.mkdtemp(prefix="stackdump-go-bench-")
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        commands = []
        for mode in ("disabled", "fast", "full_with_inline"):
            for extra in ([], ["--coroutines"]):
                argv = [args.stackdump, "-p", pid, "--mode", mode, *extra]
                commands.append((f"stackdump {mode} {' '.join(extra)}".strip(), argv, ""))
        commands.append(
            (
                "gdb thread apply all bt",
                ["gdb", "-q", "-batch", "-nx", "-p", pid, "-ex", "thread apply all bt"],
                "",
            )
        )
        if args.dlv:
            commands.append(
                (
                    "dlv goroutines -t",
                    [
                        args.dlv,
                        "attach",
                        pid,
                        "--allow-non-terminal-interactive=true",
                        "--check-go-version=false",
                    ],
                    "goroutines -t 100\nquit -c\n",
                )
            )
        for label, argv, stdin in commands:
            for kind in ("cold", "warm"):
                times, peaks = [], []
                for _ in range(args.repeat):
                    if kind == "cold":
                        shutil.rmtree(cache, ignore_errors=True)
                        os.makedirs(cache)
                        drop_caches()
                    else:
                        timed(argv, stdin, env)  # the run it follows
                    seconds, peak, status = timed(argv, stdin, env)
                    if status not in (0, 1) and not label.startswith("dlv"):  # quit -c: 2
                        print(f"{label}: exit {status}", file=sys.stderr)
                    times.append(seconds)
                    peaks.append(peak)
                rows.append((f"{label} ({kind})", statistics.median(times), max(peaks)))
        assert target.poll() is None, "the target died"
    finally:
        target.kill()
        target.wait()
    size = os.path.getsize(args.binary) >> 20
    gdb = {kind: next(t for label, t, _ in rows if label == f"gdb thread apply all bt ({kind})")
           for kind in ("cold", "warm")}  # fmt: skip
    print(f"{args.binary} ({size} MiB), {args.repeat} runs, medians")
    print(f"{'command':46} {'wall s':>8} {'/ gdb':>6} {'peak MiB':>9}")
    for label, seconds, peak in rows:
        kind = "cold" if label.endswith("(cold)") else "warm"
        print(f"{label:46} {seconds:8.2f} {seconds / gdb[kind]:6.2f} {peak:9d}")


if __name__ == "__main__":
    main()
