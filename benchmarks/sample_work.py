#!/usr/bin/env python3
"""The work a sample does, counted rather than timed (issue 31): system calls (`strace -f
-c`), Python function calls (`sys.setprofile`, Python and C functions alike) and the
distinct Python functions a sample runs (its code's footprint, which a CPU whose caches the
target's work emptied since the last sample loads again), per sample, for one or more
source trees side by side. Counts do not move with the machine's load, so a
change that saves 5% of a sample shows here where the CPU time of one run cannot (this VM's
CPU per sample varies by +-15% from run to run; docs/PERFORMANCE.md).

    python3 benchmarks/sample_work.py --tree /tmp/before --tree . [--samples 200] \\
        [--python VENV/bin/python] [--redis]

Each figure is (count of `--samples N`) - (count of `--samples 1`), over N - 1: start-up,
the first sample and the output are taken out. Targets: tests/targets/threads.c with one
thread spinning and two blocked (one capture and three threads counted again each sample),
at `--interval-ms 1`; with `--redis`, redis-server (io-threads 0) under redis-benchmark's
load at `--interval-ms 10`, where how many threads ran since the last sample varies.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harm import loaded_redis  # noqa: E402
from helpers import Target, compile_target  # noqa: E402

# Run in a child with the tree first on sys.path: Python and C calls of `api.profile`, and
# the distinct Python functions each sample runs (between two of `sampling._wait`'s calls).
_COUNT_CALLS = """
import collections, sys
from stackdump import api, sampling
from stackdump.engine import DumpOptions
from stackdump.types import AnalysisOptions, CaptureOptions, LocationMode
pid, samples, interval = (int(a) for a in sys.argv[1:4])
options = DumpOptions(CaptureOptions(pid=pid), AnalysisOptions(mode=LocationMode.DISABLED))
api.profile(api.Process(pid), 1, interval, options)  # every module imported
def calls(count):
    seen = collections.Counter()
    def count_call(frame, event, arg):
        if event in ("call", "c_call"):
            seen[event] += 1
    sys.setprofile(count_call)
    try:
        api.profile(api.Process(pid), count, interval, options)
    finally:
        sys.setprofile(None)
    return seen
one, many = calls(1), calls(samples)
for event in ("call", "c_call"):
    print(event, (many[event] - one[event]) / (samples - 1))
distinct, ran = [], set()
wait = sampling._wait
def waiting(*args):
    distinct.append(len(ran))
    ran.clear()
    return wait(*args)
def note(frame, event, arg):
    if event == "call":
        ran.add(frame.f_code)
sampling._wait = waiting
sys.setprofile(note)
try:
    api.profile(api.Process(pid), samples, interval, options)
finally:
    sys.setprofile(None)
later = distinct[1:]  # the first sample loads what the others reuse
print("distinct", sum(later) / len(later))
"""


def python_calls(
    python: str, tree: str, pid: int, samples: int, interval: int
) -> Tuple[float, float, float]:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run(
        [python, "-c", _COUNT_CALLS, str(pid), str(samples), str(interval)],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    found = dict(line.split() for line in out.splitlines())
    return float(found["call"]), float(found["c_call"]), float(found["distinct"])


def syscalls(python: str, tree: str, pid: int, samples: int, interval: int) -> Dict[str, float]:
    """System calls per sample, by name, and "total"."""

    def counted(count: int) -> Dict[str, int]:
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
            argv = [
                "strace", "-f", "-c", "-o", out.name, python, "-m", "stackdump", "-p", str(pid),
                "--mode", "disabled", "--interval-ms", str(interval), "--format", "pprof",
                "-o", "/dev/null", "--samples", str(count),
            ]  # fmt: skip
            subprocess.run(argv, env=dict(os.environ, PYTHONPATH=tree), check=True)
            found: Dict[str, int] = {}
            for line in out.read().splitlines():
                fields = line.split()
                # % time, seconds, usecs/call, calls, [errors,] name
                if len(fields) >= 5 and re.fullmatch(r"[\d.]+", fields[0]):
                    found[fields[-1]] = int(fields[3])
            return found

    counted(1)  # a tree run for the first time writes its byte code: not a sample's work
    one, many = counted(1), counted(samples)
    return {name: (many[name] - one.get(name, 0)) / (samples - 1) for name in many}


def measure(args, pid: int, interval: int, samples: int) -> List[Tuple[str, dict, tuple]]:
    rows = []
    for tree in args.tree:
        counts = syscalls(args.python, tree, pid, samples, interval)
        rows.append((tree, counts, python_calls(args.python, tree, pid, samples, interval)))
    return rows


def table(title: str, rows) -> List[str]:
    lines = [
        f"\n{title}\n",
        "| tree | system calls | Python calls | C calls | distinct Python functions |",
        "|---|---:|---:|---:|---:|",
    ]
    for tree, counts, (calls, c_calls, distinct) in rows:
        cells = f"{counts['total']:.1f} | {calls:.0f} | {c_calls:.0f} | {distinct:.0f}"
        lines.append(f"| {tree} | {cells} |")
    names = collections.Counter()
    for _, counts, _ in rows:
        for name, n in counts.items():
            if name != "total":
                names[name] = max(names[name], n)
    shown = [name for name, n in names.most_common() if n >= 0.5]
    lines += ["", "| system call | " + " | ".join(t for t, _, _ in rows) + " |"]
    lines.append("|---|" + "---:|" * len(rows))
    for name in shown:
        cells = " | ".join(f"{counts.get(name, 0):.1f}" for _, counts, _ in rows)
        lines.append(f"| {name} | {cells} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tree", action="append", required=True, help="a source tree; give several"
    )
    parser.add_argument(
        "--python", default=sys.executable, help="with click, python-ptrace, pyelftools"
    )
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--redis", action="store_true")
    args = parser.parse_args()
    if shutil.which("strace") is None:
        sys.exit("strace is missing")
    args.tree = [str(Path(t).resolve()) for t in args.tree]
    build = Path(os.environ.get("TMPDIR", "/tmp")) / "stackdump-bench"
    build.mkdir(exist_ok=True)
    binary = compile_target("threads.c", build, "threads-O2", ["-O2", "-g"])
    lines = ["Per sample, after the first (counts, not times):"]
    with Target(binary, {"spin": 1, "read": 1, "cond": 1}).wait_ready() as target:
        rows = measure(args, target.pid, 1, args.samples)
    lines += table("threads.c: 4 threads, 1 spinning, `--interval-ms 1`", rows)
    if args.redis:
        lines += table("redis-server under load, `--interval-ms 10`", redis_rows(args))
    print("\n".join(lines))


def redis_rows(args):
    with loaded_redis() as pid:
        return measure(args, pid, 10, args.samples)


if __name__ == "__main__":
    main()
