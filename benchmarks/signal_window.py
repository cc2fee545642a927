#!/usr/bin/env python3
"""How long after exec stackdump's own SIGINT/SIGTERM handler is in place (issue 12).

Before that moment only the interpreter's start-up runs, and a Ctrl-C there is Python's to
report; after it, an interrupt ends stackdump the documented way. The handler is visible
from outside: SIGTERM appears in /proc/PID/status SigCgt (the interpreter alone catches
only SIGINT). Prints the median, over --runs starts of `stackdump --version`, of the time
to that moment and of the whole run.

    python3 benchmarks/signal_window.py [--runs 20] [--command stackdump]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

SIGTERM_BIT = 1 << 14


def caught(pid: int):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return int(line.split()[1], 16)
    except OSError:
        return None
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--command", default=shutil.which("stackdump") or "stackdump")
    args = parser.parse_args()
    to_handler, whole = [], []
    for _ in range(args.runs):
        start = time.monotonic()
        proc = subprocess.Popen([args.command, "--version"], stdout=subprocess.DEVNULL)
        while True:
            mask = caught(proc.pid)
            if mask is None or mask & SIGTERM_BIT:
                break
        to_handler.append(time.monotonic() - start)
        proc.wait()
        whole.append(time.monotonic() - start)
    print(
        f"{args.command}: handler in place after {statistics.median(to_handler) * 1000:.1f} ms "
        f"(median of {args.runs}); whole --version run {statistics.median(whole) * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
