#!/usr/bin/env python3
"""One DISABLED dump's CPU, two stackdumps side by side (issue 31): each command run in
turn, round after round, so that a noisy machine slows all of them alike; medians of the
rounds, after one warm-up round. Beside them, the floor no stackdump start-up can go under
(the interpreter importing only the libraries it requires) and eu-stack.

    python3 benchmarks/startup.py --before /tmp/sdold/bin/stackdump \\
        --after /tmp/sdopt/bin/stackdump --python /tmp/sdopt/bin/python [--rounds 15]

The target is tests/targets/threads.c (-O2 -g, no frame pointers) with 8 threads, one
spinning, as benchmarks/cost.py starts it.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--rounds", type=int, default=15)
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
    print(f"8 threads (1 spinning), CPU ms, medians of {args.rounds} alternating rounds\n")
    print("| command | CPU ms | fastest |\n|---|---:|---:|")
    for name, values in spent.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} |")


if __name__ == "__main__":
    main()
