#!/usr/bin/env python3
"""stackdump's own CPU per sample, for one or more installs side by side (issue 31): on
tests/targets/threads.c with a few sets of thread roles (threads that have not run since the
last sample are counted again, not captured: capture/unchanged.py), and on redis-server
under redis-benchmark's load (5 threads, io-threads 0), the issue's "5-thread redis".

    python3 benchmarks/sample_cost.py --stackdump /tmp/before/bin/stackdump \
        --stackdump /tmp/now/bin/stackdump [--samples 2000] [--rounds 4] [--no-redis] \
        [--floors]

CPU per sample is (CPU of `--samples N`) - (CPU of `--samples 1`, the least of three), over
N - 1, from wait4: start-up, the first sample and the output are taken out. The installs
alternate, each round starting with the other, so that drift in the machine's speed falls
on both alike; every round's figure is printed.

`--floors` adds two columns measured the same way: benchmarks/sample_floor.c, a C sampler
doing only the listing, the schedstat reads and the captures a sample needs (the floor), and
benchmarks/sample_floor.py, the same work in Python through ctypes (what the interpreter
alone adds to it).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harm import floor_samplers, loaded_redis  # noqa: E402
from helpers import Target, compile_target  # noqa: E402

# (title, roles): one thread running and the rest asleep, as a server between requests; all
# asleep, few and many.
TARGETS = (
    ("threads.c: 4 threads, 1 spinning", {"spin": 1, "read": 1, "cond": 1}),
    ("threads.c: 3 threads, all blocked", {"read": 1, "cond": 1}),
    ("threads.c: 25 threads, all blocked", {"read": 12, "cond": 12}),
)


def cpu_of(argv: Sequence[str]) -> float:
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise RuntimeError(f"{shlex.join(argv)} failed ({status})")
    return usage.ru_utime + usage.ru_stime


def per_sample(command: Sequence[str], pid: int, samples: int, interval_ms: int) -> float:
    """Microseconds of CPU per sample after the first (see the module docstring)."""
    if command[0] == FLOOR:  # a floor sampler: PID SAMPLES INTERVAL_MS

        def argv(count: int) -> List[str]:
            return [*command[1:], str(pid), str(count), str(interval_ms)]
    else:

        def argv(count: int) -> List[str]:
            return [*command, "-p", str(pid), "--mode", "disabled", "--interval-ms",
                    str(interval_ms), "--format", "pprof", "-o", "/dev/null", "--samples",
                    str(count)]  # fmt: skip

    one = min(cpu_of(argv(1)) for _ in range(3))
    many = cpu_of(argv(samples))
    return (many - one) / (samples - 1) * 1e6


FLOOR = "floor:"  # marks a command that takes the floor samplers' arguments


def floors(build: Path) -> List[List[str]]:
    """The C floor and the same work in Python (`--floors`)."""
    return [[FLOOR, *command] for command in floor_samplers(str(build))]


def rounds(
    commands: List[List[str]], pid: int, samples: int, interval_ms: int, count: int
) -> Dict[int, List[float]]:
    found: Dict[int, List[float]] = {i: [] for i in range(len(commands))}
    order = list(range(len(commands)))
    for r in range(count):
        for i in order if r % 2 == 0 else reversed(order):
            found[i].append(per_sample(commands[i], pid, samples, interval_ms))
    return found


def row(title: str, found: Dict[int, List[float]]) -> str:
    cells = (", ".join(f"{x:.0f}" for x in found[i]) for i in sorted(found))
    return f"| {title} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stackdump", action="append", help="a command; give several")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--redis-samples", type=int, default=500, help="at 100 Hz, under load")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--floors", action="store_true", help="add the C and Python floors")
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: byte-compiled modules
    commands = [shlex.split(c) for c in args.stackdump or [f"{sys.executable} -m stackdump"]]
    build = Path(os.environ.get("TMPDIR", "/tmp")) / "stackdump-bench"
    build.mkdir(exist_ok=True)
    binary = compile_target("threads.c", build, "threads-O2", ["-O2", "-g"])
    if args.floors:
        commands += floors(build)
    lines = [
        "| target | " + " | ".join(c[-1] if c[0] == FLOOR else c[0] for c in commands) + " |",
        "|---|" + "---:|" * len(commands),
    ]
    for title, roles in TARGETS:
        with Target(binary, roles).wait_ready() as target:
            found = rounds(commands, target.pid, args.samples, 1, args.rounds)
        lines.append(row(f"{title}, `--interval-ms 1`", found))
    if not args.no_redis:
        if shutil.which("redis-server") is None or shutil.which("redis-benchmark") is None:
            sys.exit("redis-server and redis-benchmark are missing (or pass --no-redis)")
        found = redis_rounds(commands, args)
        lines.append(row("redis-server under load, `--interval-ms 10`", found))
    print("CPU per sample, us, each round's figure (installs alternating):\n")
    print("\n".join(lines))


def redis_rounds(commands: List[List[str]], args) -> Dict[int, List[float]]:
    """Samples of redis-server (io-threads 0) while redis-benchmark keeps it busy."""
    with loaded_redis() as pid:
        return rounds(commands, pid, args.redis_samples, 10, args.rounds)


if __name__ == "__main__":
    main()
