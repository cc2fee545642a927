#!/usr/bin/env python3
"""One DISABLED dump's CPU, two stackdumps side by side (issue 31): each command run in
turn, round after round, so that a noisy machine slows all of them alike; medians of the
rounds, after one warm-up round. Beside them, the floor no stackdump start-up can go under
(the interpreter importing only the libraries it requires) and eu-stack.

    python3 benchmarks/startup.py --before /tmp/sdold/bin/stackdump \\
        --after /tmp/sdopt/bin/stackdump --python /tmp/sdopt/bin/python [--rounds 15]

The target is tests/targets/threads.c (-O2 -g, no frame pointers) with 8 threads, one
spinning, as benchmarks/cost.py starts it.

Then what a resident stackdump would pay for the same dump (`--resident N`, default 30): N
dumps in one process of `--python` (the library's `stackdump.dump`, with the disk cache the
command uses, the text made as the command makes it), CPU of the first and the median of
the rest, DISABLED and FAST.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cost import LIBRARIES  # noqa: E402
from helpers import Target, compile_target  # noqa: E402
from run import VARIANTS, roles_for  # noqa: E402


def cpu_ms(cmd: List[str]) -> float:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return (usage.ru_utime + usage.ru_stime) * 1000


# N dumps in one process: what each costs once the modules are loaded and the objects open.
RESIDENT = """
import sys, time
import stackdump
from stackdump import cli  # what the command loads, loaded before the first dump
from stackdump.cache import default_directory
from stackdump.engine import DumpOptions
from stackdump.report import text_lines
from stackdump.types import AnalysisOptions, CaptureOptions, LocationMode
pid, count, mode = int(sys.argv[1]), int(sys.argv[2]), LocationMode[sys.argv[3]]
analysis = AnalysisOptions(mode=mode, cache_dir=default_directory())
options = DumpOptions(CaptureOptions(pid=pid), analysis)
spent = []
for _ in range(count):
    began = time.process_time()
    "\\n".join(text_lines(stackdump.dump(stackdump.Process(pid), options)))
    spent.append((time.process_time() - began) * 1000)
rest = sorted(spent[1:])
print(f"{spent[0]:.1f} {rest[len(rest) // 2]:.1f} {rest[0]:.1f}")
"""


def resident(python: str, pid: str, count: int, mode: str) -> List[float]:
    """(first, median of the rest, fastest) CPU ms of `count` dumps in one process."""
    out = subprocess.run(
        [python, "-c", RESIDENT, pid, str(count), mode],
        check=True, capture_output=True, text=True, cwd="/",
    ).stdout  # fmt: skip
    return [float(v) for v in out.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--resident", type=int, default=30, help="dumps in one process")
    args = parser.parse_args()
    build = Path(os.environ.get("TMPDIR", "/tmp")) / "stackdump-bench"
    build.mkdir(exist_ok=True)
    binary = compile_target("threads.c", build, "threads-nofp", VARIANTS["nofp"])
    with Target(binary, roles_for(8)).wait_ready() as target:
        pid = str(target.pid)
        commands = {
            "stackdump DISABLED, before": [args.before, "-p", pid, "--mode", "disabled"],
            "stackdump DISABLED, after": [args.after, "-p", pid, "--mode", "disabled"],
            "the interpreter and the required libraries alone": [args.python, "-c", LIBRARIES],
            "eu-stack": ["eu-stack", "-p", pid],
        }
        spent: Dict[str, List[float]] = {name: [] for name in commands}
        for round_ in range(args.rounds + 1):
            for name, cmd in commands.items():
                ms = cpu_ms(cmd)
                if round_:
                    spent[name].append(ms)
        in_one = {m: resident(args.python, pid, args.resident, m) for m in ("DISABLED", "FAST")}
    print(f"8 threads (1 spinning), CPU ms, medians of {args.rounds} alternating rounds\n")
    print("| command | CPU ms | fastest |\n|---|---:|---:|")
    for name, values in spent.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} |")
    where = f"one process of {args.python}"
    print(f"\n{args.resident} dumps in {where} (a resident stackdump), CPU ms\n")
    print("| mode | first | median of the rest | fastest |\n|---|---:|---:|---:|")
    for mode, (first, median, fastest) in in_one.items():
        print(f"| {mode} | {first:.1f} | {median:.1f} | {fastest:.1f} |")


if __name__ == "__main__":
    main()
