#!/usr/bin/env python3
"""Where the spinner's longest TSC gap comes from: for each command, the gap the spinner of
threads.c measured and the longest time the guest's scheduler had it switched out (any
reason, from sched_switch). A TSC gap much longer than every scheduler-visible one happened
while the vCPU itself was not running: the hypervisor, not the dumper.

    python3 benchmarks/stall_sources.py --threads 1000 --repeat 5    # root: tracefs
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import Target, compile_target  # noqa: E402
from run import VARIANTS, roles_for  # noqa: E402
from schedtrace import SchedTrace, switch_on  # noqa: E402


def longest_switched_out(text: str, tid: int) -> Optional[float]:
    """Longest interval, in microseconds, between `tid` switching out and back in."""
    out_at: Optional[float] = None
    longest: Optional[float] = None
    for line in text.splitlines():
        switch = switch_on(line)
        if not switch:
            continue
        if switch.prev == tid:
            out_at = switch.seconds
        elif switch.next == tid and out_at is not None:
            gap = (switch.seconds - out_at) * 1e6
            longest = gap if longest is None else max(longest, gap)
            out_at = None
    return longest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    build = Path(tempfile.mkdtemp(prefix="stackdump-stall-"))
    binary = compile_target("threads.c", build, "threads-nofp", VARIANTS["nofp"])
    trace = SchedTrace.open(binary.name)
    if trace is None:
        print("needs root and tracefs", file=sys.stderr)
        return 1
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with Target(binary, roles_for(args.threads)).wait_ready() as target:
        spinner, pid = target.tid("spin"), str(target.pid)
        trace.filter_switches(f"prev_pid == {spinner} || next_pid == {spinner}")
        stackdump = [sys.executable, "-m", "stackdump", "-p", pid, "--mode", "disabled"]
        commands = {
            "python3 -c pass": [sys.executable, "-c", "pass"],
            "stackdump --capture passive": [*stackdump, "--capture", "passive"],
            "stackdump": stackdump,
            "eu-stack": ["eu-stack", "-p", pid],
        }
        results: Dict[str, List[tuple]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                target.reset_stall()
                trace.start()
                subprocess.run(cmd, capture_output=True, env=env)
                text = trace.stop_raw()
                tsc = target.status()["spin_max_gap_ns"] / 1000
                results[name].append((tsc, longest_switched_out(text, spinner) or 0.0))
    trace.close()
    print(f"spinner of a {args.threads}-thread target, {args.repeat} runs each (us)")
    print(f"{'command':<30} {'TSC gap median':>15} {'max':>8} {'switched out max':>17}")
    for name, rows in results.items():
        tsc = [r[0] for r in rows]
        sched = [r[1] for r in rows]
        print(f"{name:<30} {statistics.median(tsc):>15.0f} {max(tsc):>8.0f} {max(sched):>17.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
