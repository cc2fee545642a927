#!/usr/bin/env python3
"""What the /proc reads of a sample cost on a CPU just woken from the sleep between samples,
against the same reads back to back (issue 31): why taking one read out of a sample at
100 Hz saves less than it costs in a tight loop. CPU per operation (thread CPU time), each
operation run N times back to back, then N times each after a sleep of `--sleep-ms`.

    python3 benchmarks/cold_reads.py PID [--sleep-ms 10] [--rounds 300]

PID: any process (redis-server, tests/targets/threads.c). Also times PROCMAP_QUERY
(capture/maps_check.py) at the start of each of the process's mappings, as a sample's check
asks it, when the kernel has it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stackdump import proc  # noqa: E402
from stackdump.capture import maps_check  # noqa: E402


def cost_us(op: Callable[[], object], rounds: int, sleep_s: float) -> float:
    op()
    total = 0
    for _ in range(rounds):
        if sleep_s:
            time.sleep(sleep_s)
        began = time.thread_time_ns()
        op()
        total += time.thread_time_ns() - began
    return total / rounds / 1000


def operations(pid: int) -> List[Tuple[str, Callable[[], object]]]:
    stat = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    maps = os.open(f"/proc/{pid}/maps", os.O_RDONLY)

    def read_maps() -> None:
        offset = 0
        while True:
            chunk = os.pread(maps, 65536, offset)
            if not chunk:
                return
            offset += len(chunk)

    ops = [
        ("nothing (a call and the clock)", lambda: None),
        ("listdir /proc/PID/task", lambda: os.listdir(f"/proc/{pid}/task")),
        ("pread /proc/PID/stat", lambda: os.pread(stat, 4096, 0)),
        (f"read /proc/PID/maps whole ({len(proc.read_maps(pid))} lines)", read_maps),
    ]
    query = maps_check.MapsQuery(maps)
    try:
        query.find(0)
    except maps_check.Unsupported:
        return ops
    code = [m.start for m in proc.read_maps(pid) if m.executable][:3]
    ops.append(("PROCMAP_QUERY x3 (three code mappings)", lambda: [query.find(a) for a in code]))
    return ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pid", type=int)
    parser.add_argument("--sleep-ms", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    print(f"| operation | back to back, us | after {args.sleep_ms:g} ms asleep, us |")
    print("|---|---:|---:|")
    for name, op in operations(args.pid):
        hot = cost_us(op, args.rounds, 0)
        cold = cost_us(op, args.rounds, args.sleep_ms / 1000)
        print(f"| {name} | {hot:.1f} | {cold:.1f} |")


if __name__ == "__main__":
    main()
