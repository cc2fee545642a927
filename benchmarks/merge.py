#!/usr/bin/env python3
"""`stackdump merge` of a fleet's dumps (issue 32): 10,000 JSON dumps of 1,000 threads each by
default. The dumps are real: three processes of tests/targets/threads.c with 1,000 threads
each (different mixes of roles), dumped by stackdump with `--format json`, their `host`
emptied so that each file's name is its host. The fleet is hard links to those three files
(no disk is spent on copies): most hosts run the first mix, a few the others (outliers).
Prints wall time, CPU and peak RSS of `stackdump merge` (text, and folded) and, as the floor,
of a Python loop that only parses each file with `json.load`, in one run.

    python3 benchmarks/merge.py [--hosts 10000] [--threads 1000] [--stackdump CMD]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import Target, compile_target  # noqa: E402

MIXES = (
    {"read": 500, "cond": 499},
    {"read": 400, "cond": 499, "sleep": 100},
    {"read": 499, "cond": 400, "epoll": 100},
)

FLOOR = """
import json, sys
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        json.load(f)
"""


def scale(mix: dict, threads: int) -> dict:
    total = sum(mix.values()) + 1
    return {role: max(1, n * threads // total) for role, n in mix.items()}


def make_dumps(work: Path, stackdump: list, threads: int) -> list:
    binary = compile_target("threads.c", work, "threads", ["-O2", "-g"])
    dumps = []
    for i, mix in enumerate(MIXES):
        with Target(binary, scale(mix, threads)).wait_ready() as target:
            out = subprocess.run(
                [*stackdump, "-p", str(target.pid), "--format", "json"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
        # As stackdump wrote it (a thread per line), the host's name taken out of the header.
        first, rest = out.split("\n", 1)
        host = json.dumps(json.loads(out)["header"]["host"])
        path = work / f"mix{i}.json"
        path.write_text(first.replace(f'"host": {host}', '"host": null', 1) + "\n" + rest)
        dumps.append(path)
    return dumps


def make_fleet(work: Path, dumps: list, hosts: int) -> Path:
    fleet = work / "fleet"
    fleet.mkdir()
    for i in range(hosts):
        source = dumps[0] if i % 1000 not in (7, 8) else dumps[1 + i % 1000 - 7]
        os.link(source, fleet / f"host{i:05d}.json")
    return fleet


def measure(command: list) -> tuple:
    """(wall s, CPU s, peak RSS MiB) of one command alone (wait4's usage of that child), its
    output discarded."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{command[:4]}... exited with {child.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--stackdump", default=f"{sys.executable} -m stackdump")
    args = parser.parse_args()
    stackdump = shlex.split(args.stackdump)
    with tempfile.TemporaryDirectory(prefix="stackdump-merge-") as tmp:
        work = Path(tmp)
        dumps = make_dumps(work, stackdump, args.threads)
        fleet = make_fleet(work, dumps, args.hosts)
        files = sorted(str(p) for p in fleet.iterdir())
        size = sum(p.stat().st_size for p in dumps) / len(dumps) / (1 << 20)
        print(f"{args.hosts} dumps of {args.threads} threads, {size:.1f} MiB each")
        print(f"{'command':<34} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13}")
        rows = (
            ("stackdump merge (text)", [*stackdump, "merge", str(fleet)]),
            (
                "stackdump merge --format folded",
                [*stackdump, "merge", "--format", "folded", str(fleet)],
            ),  # fmt: skip
            ("json.load of each file (floor)", [sys.executable, "-c", FLOOR, *files]),
        )
        for name, command in rows:
            wall, cpu, rss = measure(command)
            print(f"{name:<34} {wall:>8.1f} {cpu:>8.1f} {rss:>13.0f}")


if __name__ == "__main__":
    main()
