#!/usr/bin/env python3
"""Benchmark stackdump against eu-stack (and gdb) on the same live target, in one run.

Builds tests/targets/threads.c, starts it with N threads (mixed: spinning, blocked in read,
pthread_cond_wait, nanosleep, epoll_wait), then runs each dumper R times and prints a table of
medians: wall time, peak RSS, and stackdump's per-thread pause (p50/p99/max of `pause_us`).

"cold" runs drop the kernel's page cache first (root only) and give stackdump an empty cache
directory; "warm" runs follow a run of the same command.

    python3 benchmarks/run.py --threads 100 --repeat 5
    python3 benchmarks/run.py --threads 1000 --variant nofp --gdb
    python3 benchmarks/run.py --binary /tmp/big/big_dwarf --threads 8   # see gen_big_dwarf.py
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import Target, compile_target  # noqa: E402

VARIANTS = {
    "fp": ["-O2", "-g", "-fno-omit-frame-pointer"],
    "nofp": ["-O2", "-g", "-fomit-frame-pointer"],
}


def roles_for(threads: int) -> Dict[str, int]:
    """A mix of states like a server's: one spinning, the rest blocked in common calls."""
    rest = threads - 2  # minus the spinner and the main thread
    share = {"read": 0.2, "cond": 0.4, "sleep": 0.2, "epoll": 0.2}
    roles = {role: int(rest * f) for role, f in share.items()}
    roles["cond"] += rest - sum(roles.values())
    roles["spin"] = 1
    return roles


def drop_page_cache() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def run_once(cmd: Sequence[str], env: Optional[Dict[str, str]] = None):
    """(wall seconds, peak RSS in MiB, stdout) of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    return wall, usage.ru_maxrss / 1024, out.decode(errors="replace")


def pauses(report: str) -> List[int]:
    return [int(p) for p in re.findall(r" pause_us=(\d+)", report)]


def percentile(values: List[int], q: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(name: str, cmd: Sequence[str], repeat: int, cold: bool, cache_env: bool) -> dict:
    walls, rsss, p50s, p99s, maxes = [], [], [], [], []
    for _ in range(repeat):
        env = dict(os.environ)
        cache_dir = None
        if cache_env:
            cache_dir = tempfile.mkdtemp(prefix="stackdump-bench-")
            env["XDG_CACHE_HOME"] = cache_dir
            if not cold:
                run_once(cmd, env)  # fill the cache
        if cold:
            drop_page_cache()
        else:
            run_once(cmd, env)  # warm the page cache
        wall, rss, out = run_once(cmd, env)
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
        walls.append(wall)
        rsss.append(rss)
        p = pauses(out)
        if p:
            p50s.append(percentile(p, 0.5))
            p99s.append(percentile(p, 0.99))
            maxes.append(max(p))
    row = {
        "name": name,
        "wall_ms": statistics.median(walls) * 1000,
        "rss_mb": statistics.median(rsss),
    }
    if p50s:
        row.update(
            p50=statistics.median(p50s), p99=statistics.median(p99s), max=statistics.median(maxes)
        )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=100)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="nofp")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--modes", default="DISABLED,FAST")
    parser.add_argument("--gdb", action="store_true", help="also time gdb (slow, stops all)")
    parser.add_argument(
        "--binary",
        type=Path,
        help="a prebuilt target taking `read=N` (gen_big_dwarf.py builds one)",
    )
    args = parser.parse_args()

    build = Path(tempfile.mkdtemp(prefix="stackdump-bench-build-"))
    if args.binary:
        binary, roles = args.binary, {"read": args.threads - 1}
    else:
        binary = compile_target(
            "threads.c", build, f"threads-{args.variant}", VARIANTS[args.variant]
        )
        roles = roles_for(args.threads)
    stackdump = [sys.executable, "-m", "stackdump"]
    with Target(binary, roles).wait_ready() as target:
        pid = str(target.pid)
        rows = []
        for temp in ("cold", "warm"):
            cold = temp == "cold"
            for mode in args.modes.split(","):
                rows.append(
                    measure(
                        f"stackdump {mode} ({temp})",
                        [*stackdump, "-p", pid, "--mode", mode],
                        args.repeat,
                        cold,
                        cache_env=True,
                    )
                )
            if shutil.which("eu-stack"):
                rows.append(
                    measure(
                        f"eu-stack ({temp})",
                        ["eu-stack", "-p", pid],
                        args.repeat,
                        cold,
                        cache_env=False,
                    )
                )
                rows.append(
                    measure(
                        f"eu-stack -s ({temp})",
                        ["eu-stack", "-s", "-p", pid],
                        args.repeat,
                        cold,
                        cache_env=False,
                    )
                )
            if args.gdb and shutil.which("gdb"):
                rows.append(
                    measure(
                        f"gdb thread apply all bt ({temp})",
                        ["gdb", "-p", pid, "-batch", "-nx", "-ex", "thread apply all bt"],
                        max(1, args.repeat // 2),
                        cold,
                        cache_env=False,
                    )
                )
    shutil.rmtree(build, ignore_errors=True)

    what = args.binary if args.binary else f"threads.c variant {args.variant}"
    print(f"target: {what}, {args.threads} threads, median of {args.repeat}; cpus={os.cpu_count()}")
    print(f"{'dumper':<34} {'wall ms':>9} {'peak RSS MiB':>13} {'pause p50/p99/max us':>22}")
    for r in rows:
        pause = f"{r['p50']:.0f}/{r['p99']:.0f}/{r['max']:.0f}" if "p50" in r else "-"
        print(f"{r['name']:<34} {r['wall_ms']:>9.0f} {r['rss_mb']:>13.1f} {pause:>22}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
