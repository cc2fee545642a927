#!/usr/bin/env python3
"""What one dump and one sample cost, on an idle N-thread target, against eu-stack, in one
run (issue 31): a warm DISABLED dump's wall time and CPU (user + system, from wait4), and
the highest sampling rate (`--samples N --interval-ms 1`) with its CPU per sample.

    python3 benchmarks/cost.py [--threads 8] [--repeat 7] [--samples 500] [--stackdump CMD]

The target is tests/targets/threads.c built -O2 -g without frame pointers, with one spinning
thread and the rest blocked (read, futex, nanosleep, epoll), as benchmarks/run.py starts it.
Medians of --repeat runs, each after one warm-up run.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import Target, compile_target  # noqa: E402
from run import VARIANTS, roles_for  # noqa: E402


def timed(cmd: Sequence[str]) -> Tuple[float, float, str]:
    """(wall s, CPU s, stdout) of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()
    _, _, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime, out.decode()


def medians(cmd: Sequence[str], repeat: int) -> Tuple[float, float]:
    timed(cmd)  # warm: page cache, the disk cache, byte-compiled modules
    runs = [timed(cmd) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--stackdump", default=f"{shlex.quote(sys.executable)} -m stackdump")
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: byte-compiled modules
    build = Path(os.environ.get("TMPDIR", "/tmp")) / "stackdump-bench"
    build.mkdir(exist_ok=True)
    binary = compile_target("threads.c", build, "threads-nofp", VARIANTS["nofp"])
    stackdump = shlex.split(args.stackdump)
    with Target(binary, roles_for(args.threads)).wait_ready() as target:
        pid = str(target.pid)
        rows: List[Tuple[str, float, float]] = []
        for name, cmd in (
            ("eu-stack", ["eu-stack", "-p", pid]),
            ("stackdump DISABLED", [*stackdump, "-p", pid, "--mode", "disabled"]),
            ("stackdump FAST", [*stackdump, "-p", pid, "--mode", "fast"]),
            (
                "stackdump DISABLED --format json",
                [*stackdump, "-p", pid, "--mode", "disabled", "--format", "json"],
            ),
            ("stackdump --help (start-up and imports)", [*stackdump, "--help"]),
            ("python3 -c pass", [sys.executable, "-c", "pass"]),
        ):
            wall, cpu = medians(cmd, args.repeat)
            rows.append((name, wall, cpu))
        sampling = [*stackdump, "-p", pid, "--mode", "disabled", "--interval-ms", "1"]
        one_wall, one_cpu = medians([*sampling, "--samples", "1"], args.repeat)
        wall, cpu, out = timed([*sampling, "--samples", str(args.samples)])
    found = re.search(r"^duration_ms: (\d+)$", out, re.M)
    duration_s = int(found.group(1)) / 1000 if found else wall
    euw = rows[0][1]
    print(f"{args.threads} threads (1 spinning), warm, medians of {args.repeat}\n")
    print("| command | wall ms | x eu-stack | CPU ms |")
    print("|---|---:|---:|---:|")
    for name, w, c in rows:
        print(f"| {name} | {w * 1000:.1f} | {w / euw:.1f} | {c * 1000:.1f} |")
    per_sample = (cpu - one_cpu) / (args.samples - 1) * 1000
    print("\n| sampling | samples/s | CPU per sample ms |\n|---|---:|---:|")
    print(f"| --samples {args.samples} --interval-ms 1 | {args.samples / duration_s:.0f} | "
          f"{per_sample:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
