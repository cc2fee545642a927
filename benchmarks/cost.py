#!/usr/bin/env python3
"""What one dump and one sample cost, on an idle N-thread target, against eu-stack, in one
run (issue 31): a warm DISABLED dump's wall time and CPU (user + system, from wait4), and
the highest sampling rate (`--samples N --interval-ms 1`) with its CPU per sample; and the
floors under both: the interpreter with the libraries stackdump requires and nothing else
(`--python`: stackdump's interpreter), and, on a target whose `--spinners` threads all run
(every sample captures each), the CPU of one thread's capture as a minimal C ptrace loop
(`cloop.c`) pays it, as stackdump's stop alone (`Tracer.capture`, in this process) pays it,
and as a whole sample pays it.

    python3 benchmarks/cost.py [--threads 8] [--repeat 7] [--samples 500] [--stackdump CMD]
        [--python PYTHON] [--spinners 5]

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
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--spinners", type=int, default=5)
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
            ("python3 -c pass", [args.python, "-c", "pass"]),
            ("python3 importing click, python-ptrace, dataclasses", [args.python, "-c", LIBRARIES]),
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
    per_thread(args, build, stackdump)


# What stackdump's entry point cannot do without: the CLI, ptrace, frozen records. python-ptrace
# is handed the C library first, as stackdump.capture.ptrace does: left to itself it finds
# it with `ctypes.util.find_library`, whose `ldconfig -p` subprocess (~8 ms of CPU) no
# stackdump runs. The last line fails the floor if that ever changes.
LIBRARIES = """
import ctypes, sys, types
libc = types.ModuleType("ptrace.ctypes_libc")
libc.libc, libc.LIBC_FILENAME = ctypes.CDLL(None, use_errno=True), "libc.so.6"
sys.modules["ptrace.ctypes_libc"] = libc
import click, ptrace.binding, dataclasses, typing
assert "subprocess" not in sys.modules, "the floor ran a subprocess"
"""


def per_thread(args, build: Path, stackdump: Sequence[str]) -> None:
    """CPU per captured thread when every thread runs: the C floor, the stop alone, a sample."""
    cloop = build / "cloop"
    subprocess.run(["gcc", "-O2", str(ROOT / "benchmarks" / "cloop.c"), "-o", str(cloop)],
                   check=True)  # fmt: skip
    binary = compile_target("threads.c", build, "threads-nofp", VARIANTS["nofp"])
    with Target(binary, {"spin": args.spinners}).wait_ready() as target:
        pid = target.pid
        threads = len(os.listdir(f"/proc/{pid}/task"))
        _, c_cpu = medians([str(cloop), str(pid), "200"], args.repeat)
        stop_cpu = _stop_cpu(pid, 200)
        sampling = [*stackdump, "-p", str(pid), "--mode", "disabled", "--interval-ms", "10"]
        _, one_cpu = medians([*sampling, "--samples", "1"], args.repeat)
        _, cpu, _ = timed([*sampling, "--samples", str(args.samples)])
    per_sample = (cpu - one_cpu) / (args.samples - 1)
    print(f"\n{threads} threads, {args.spinners} of them spinning: CPU per captured thread\n")
    print("| what | us per thread |\n|---|---:|")
    print(f"| C ptrace loop (cloop.c, 200 passes) | {c_cpu / threads / 200 * 1e6:.0f} |")
    print(f"| stackdump's stop alone (Tracer.capture) | {stop_cpu * 1e6:.0f} |")
    print(f"| stackdump sample, --interval-ms 10 (CPU per sample / threads) | "
          f"{per_sample / threads * 1e6:.0f} |")  # fmt: skip


def _stop_cpu(pid: int, rounds: int) -> float:
    """CPU seconds of one `Tracer.capture` (seize, interrupt, wait, registers, stack copy,
    detach, and the real-time priority around it), measured in this process."""
    sys.path.insert(0, str(ROOT))
    from stackdump.capture.live import _Capture
    from stackdump.capture.ptrace import Tracer
    from stackdump.types import CaptureOptions

    capture = _Capture(pid, CaptureOptions(pid=pid), None)
    tids = capture.tids
    with Tracer(pid, capture.copier, 1000) as tracer:
        start = time.process_time()
        for _ in range(rounds):
            for tid in tids:
                tracer.capture(tid, "bench")
        spent = time.process_time() - start
    capture.memory.close()
    capture.files.close()
    return spent / (rounds * len(tids))


if __name__ == "__main__":
    main()
