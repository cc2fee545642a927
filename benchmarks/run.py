#!/usr/bin/env python3
"""Benchmark stackdump against eu-stack (and gdb) on the same live target, in one run.

Builds tests/targets/threads.c, starts it with N threads (mixed: spinning, blocked in read,
pthread_cond_wait, nanosleep, epoll_wait), then runs each dumper R times and prints a table of
medians: wall time and its ratio to eu-stack (DISABLED rows), `eu-stack -s` (FAST, FULL) or
`eu-stack -s -i` (FULL_WITH_INLINE),
peak RSS, the per-thread pause (p50/p99/max of `pause_us` over the threads that were stopped,
also printed by the C floor benchmarks/cloop.c), and the longest stall the target's spinning
thread saw during the run (TSC gaps) with eu-stack's stall divided by it. A row with no dumper
gives the machine's noise level. As root, the kernel-observed columns come from the
scheduler's trace points (schedtrace.py), the same way for every dumper: how long each thread
stayed in a ptrace stop (p50/max over all threads) and the spinner's longest stop ("spin
held"), with eu-stack's divided by ours.

"cold" runs drop the kernel's page cache first (root only) and give stackdump an empty cache
directory; "warm" runs follow a run of the same command.

    python3 benchmarks/run.py --threads 8,100,1000 --variant fp,nofp --repeat 5
    python3 benchmarks/run.py --threads 1000 --variant nofp --gdb
    python3 benchmarks/run.py --threads 1000 --spinner last   # spinner visited last
    python3 benchmarks/run.py --binary /tmp/big/big_dwarf --threads 8   # see gen_big_dwarf.py
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import Target, compile_target  # noqa: E402
from schedtrace import SchedTrace  # noqa: E402

VARIANTS = {
    "fp": ["-O2", "-g", "-fno-omit-frame-pointer"],
    "nofp": ["-O2", "-g", "-fomit-frame-pointer"],
}


def roles_for(threads: int, spinner: str = "first") -> Dict[str, int]:
    """A mix of states like a server's: one spinning, the rest blocked in read, futex
    (pthread_cond_wait), nanosleep and epoll_wait. Threads are created in this order, and
    dumpers visit them in it: `spinner` puts the spinning thread first (right after main) or
    last."""
    rest = max(0, threads - 2)  # minus the spinner and the main thread
    share = {"read": 0.2, "cond": 0.4, "sleep": 0.2, "epoll": 0.2}
    roles = {role: int(rest * f) for role, f in share.items()}
    roles["cond"] += rest - sum(roles.values())
    if spinner == "first":
        return {"spin": 1, **roles}
    return {**roles, "spin": 1}


def _prepared(cmd: Sequence[str], cold: bool, cache_env: bool):
    """(environment, private cache directory or None) for one measured run: caches filled
    or not, the page cache dropped or warm, as `cold` says."""
    env = dict(os.environ)
    # As installed by pip: byte-compiled modules, not ~40 ms of compiling sources at
    # every start (some environments set this, this machine's included).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
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
    return env, cache_dir


def drop_page_cache() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# Linux carries a process's peak RSS across exec (exec_mmap keeps the old mm's high-water
# mark), so a child of this benchmark, which holds big reports, would start with this
# process's RSS as its "peak" (the C loop used to show ~20 MiB). GNU time, a small process,
# is the parent that execs the dumper instead, and reports its peak (%M, KiB).
TIME = shutil.which("time", path="/usr/bin:/bin")


def run_once(cmd: Sequence[str], env: Optional[Dict[str, str]] = None):
    """(wall seconds, peak RSS in MiB, stdout) of one run."""
    with tempfile.NamedTemporaryFile("r", prefix="stackdump-bench-rss-") as rss:
        wrapped = [TIME, "-q", "-f", "%M", "-o", rss.name, *cmd] if TIME else list(cmd)
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        peak_kib = usage.ru_maxrss
        if TIME:
            text = rss.read().strip().splitlines()
            peak_kib = int(text[-1]) if text and text[-1].isdigit() else peak_kib
    return wall, peak_kib / 1024, out.decode(errors="replace")


def pauses(report: str) -> List[int]:
    """`pause_us` of every thread that was stopped: a thread copied in place
    (capture_method=passive_syscall, pause_us=0) was not, and would drag the median down."""
    return [
        int(m.group(1))
        for line in report.splitlines()
        if "passive_syscall" not in line
        for m in [re.search(r"(?:^| )pause_us=(\d+)", line)]
        if m
    ]


def percentile(values: List[int], q: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Bench:
    """Runs dumpers against one live target and collects rows."""

    def __init__(
        self, target: Optional[Target], repeat: int, trace: Optional[SchedTrace] = None
    ) -> None:
        self.target = target
        self.repeat = repeat
        self.trace = trace
        self.rows: List[dict] = []

    def _spinner(self) -> Optional[int]:
        if self.target is None or "spin" not in self.target.tids:
            return None
        return self.target.tid("spin")

    def _stall_ms(self) -> Optional[float]:
        if self._spinner() is None:
            return None
        return self.target.status()["spin_max_gap_ns"] / 1e6

    def _reset(self) -> None:
        if self._spinner() is not None:
            self.target.reset_stall()

    def idle(self, seconds: float) -> None:
        """The spinner's longest gap with no dumper at all: the machine's noise level."""
        stalls = []
        for _ in range(self.repeat):
            self._reset()
            time.sleep(seconds)
            stalls.append(self._stall_ms())
        if stalls and stalls[0] is not None:
            self.rows.append(
                {
                    "name": f"(no dumper, {seconds * 1000:.0f} ms)",
                    "stall_ms": statistics.median(stalls),
                }
            )

    def measure(
        self,
        name: str,
        cmd: Sequence[str],
        cold: bool,
        cache_env: bool,
        baseline: Optional[str] = None,
        repeat: Optional[int] = None,
    ) -> None:
        walls, rsss, p50s, p99s, maxes, stalls = [], [], [], [], [], []
        k50s, kmaxes, helds = [], [], []
        for _ in range(repeat or self.repeat):
            env, cache_dir = _prepared(cmd, cold, cache_env)
            self._reset()
            if self.trace is not None:
                self.trace.start()
            wall, rss, out = run_once(cmd, env)
            if self.trace is not None:
                stops = self.trace.stop()
                kernel = stops.all_stopped()
                if kernel:
                    k50s.append(statistics.median(kernel))
                    kmaxes.append(max(kernel))
                spinner = self._spinner()
                held = stops.longest(spinner) if spinner else None
                if held is not None:
                    helds.append(held)
            stall = self._stall_ms()
            if cache_dir:
                shutil.rmtree(cache_dir, ignore_errors=True)
            walls.append(wall)
            rsss.append(rss)
            if stall is not None:
                stalls.append(stall)
            p = pauses(out)
            if p:
                p50s.append(percentile(p, 0.5))
                p99s.append(percentile(p, 0.99))
                maxes.append(max(p))
        row = {
            "name": name,
            "wall_ms": statistics.median(walls) * 1000,
            "rss_mb": statistics.median(rsss),
            "baseline": baseline,
        }
        if stalls:
            row["stall_ms"] = statistics.median(stalls)
        if k50s:
            row.update(k50=statistics.median(k50s), kmax=statistics.median(kmaxes))
        if helds:
            row["held_us"] = statistics.median(helds)
        if p50s:
            row.update(
                p50=statistics.median(p50s),
                p99=statistics.median(p99s),
                max=statistics.median(maxes),
            )
        self.rows.append(row)

    def print(self, title: str) -> None:
        by_name = {r["name"]: r for r in self.rows}
        print(title)
        print(
            f"{'dumper':<28} {'wall ms':>8} {'x base':>6} {'RSS MiB':>7} "
            f"{'pause p50/p99/max us':>20} {'stall ms':>8} {'base /':>6} "
            f"{'kernel stop p50/max us':>22} {'spin held us':>12} {'base /':>6}"
        )
        for r in self.rows:
            base = by_name.get(r.get("baseline") or "")
            wall = f"{r['wall_ms']:.0f}" if "wall_ms" in r else "-"
            ratio = f"{r['wall_ms'] / base['wall_ms']:.2f}" if base and "wall_ms" in r else "-"
            rss = f"{r['rss_mb']:.1f}" if "rss_mb" in r else "-"
            pause = f"{r['p50']:.0f}/{r['p99']:.0f}/{r['max']:.0f}" if "p50" in r else "-"
            stall = f"{r['stall_ms']:.2f}" if "stall_ms" in r else "-"
            stall_ratio = "-"
            if base and r.get("stall_ms") and base.get("stall_ms"):
                stall_ratio = f"{base['stall_ms'] / r['stall_ms']:.1f}"
            kernel = f"{r['k50']:.0f}/{r['kmax']:.0f}" if "k50" in r else "-"
            held = f"{r['held_us']:.0f}" if "held_us" in r else "-"
            held_ratio = "-"
            if base and r.get("held_us") and base.get("held_us"):
                held_ratio = f"{base['held_us'] / r['held_us']:.1f}"
            print(
                f"{r['name']:<28} {wall:>8} {ratio:>6} {rss:>7} {pause:>20} {stall:>8} "
                f"{stall_ratio:>6} {kernel:>22} {held:>12} {held_ratio:>6}"
            )
        print()


def bench_target(
    args, binary: Path, roles: Dict[str, int], cloop: Optional[Path], title: str
) -> None:
    stackdump = (
        shlex.split(args.stackdump) if args.stackdump else [sys.executable, "-m", "stackdump"]
    )
    trace = None if args.no_trace else SchedTrace.open(binary.name)
    with Target(binary, roles).wait_ready() as target:
        pid = str(target.pid)
        bench = Bench(target, args.repeat, trace)
        bench.idle(0.5)
        if cloop is not None:
            bench.measure("C loop (floor)", [str(cloop), pid], False, False)
        for temp in ("cold", "warm"):
            cold = temp == "cold"
            has_eu = shutil.which("eu-stack") is not None
            modes = [m.upper() for m in args.modes.split(",")]
            if has_eu:
                bench.measure(f"eu-stack ({temp})", ["eu-stack", "-p", pid], cold, False)
                bench.measure(f"eu-stack -s ({temp})", ["eu-stack", "-s", "-p", pid], cold, False)
                if "FULL_WITH_INLINE" in modes:
                    bench.measure(
                        f"eu-stack -s -i ({temp})", ["eu-stack", "-s", "-i", "-p", pid], cold, False
                    )
            for mode in modes:
                # Each mode against the eu-stack run that does the same work.
                base = {"DISABLED": "eu-stack", "FULL_WITH_INLINE": "eu-stack -s -i"}.get(
                    mode, "eu-stack -s"
                )
                base = f"{base} ({temp})"
                bench.measure(
                    f"stackdump {mode} ({temp})",
                    [*stackdump, "-p", pid, "--mode", mode],
                    cold,
                    cache_env=True,
                    baseline=base if has_eu else None,
                )
            if args.gdb and shutil.which("gdb"):
                bench.measure(
                    f"gdb thread apply all bt ({temp})",
                    ["gdb", "-p", pid, "-batch", "-nx", "-ex", "thread apply all bt"],
                    cold,
                    False,
                    baseline=f"eu-stack -s ({temp})" if has_eu else None,
                    repeat=max(1, args.repeat // 2),
                )
    if trace is not None:
        trace.close()
    bench.print(title)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="100", help="comma-separated counts: 8,100,1000")
    parser.add_argument("--variant", default="nofp", help="comma-separated: fp,nofp")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--modes", default="DISABLED,FAST")
    parser.add_argument("--gdb", action="store_true", help="also time gdb (slow, stops all)")
    parser.add_argument(
        "--binary",
        type=Path,
        help="a prebuilt target taking `read=N` (gen_big_dwarf.py builds one)",
    )
    parser.add_argument(
        "--spinner",
        choices=("first", "last"),
        default="first",
        help="where the spinning thread is in the order dumpers visit threads (default: first)",
    )
    parser.add_argument(
        "--stackdump",
        help="the stackdump command to time, e.g. an install.sh install's "
        "/opt/stackdump/bin/stackdump (default: this Python's -m stackdump, which in a "
        "development checkout also pays for the editable install's import hook)",
    )
    parser.add_argument(
        "--no-trace",
        action="store_true",
        help="skip the kernel-observed columns (sched_switch tracing through tracefs)",
    )
    args = parser.parse_args()

    build = Path(tempfile.mkdtemp(prefix="stackdump-bench-build-"))
    cloop: Optional[Path] = build / "cloop"
    try:
        subprocess.run(
            ["gcc", "-O2", str(Path(__file__).parent / "cloop.c"), "-o", str(cloop)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError):
        cloop = None
    print(f"cpus={os.cpu_count()} python={sys.version.split()[0]} median of {args.repeat}\n")
    try:
        for count in (int(t) for t in args.threads.split(",")):
            if args.binary:
                roles = {"read": count - 1}
                bench_target(args, args.binary, roles, cloop, f"{args.binary}, {count} threads")
                continue
            for variant in args.variant.split(","):
                binary = compile_target("threads.c", build, f"threads-{variant}", VARIANTS[variant])
                roles = roles_for(count, args.spinner)
                title = f"threads.c {variant}, {count} threads ({roles_text(roles)})"
                bench_target(args, binary, roles, cloop, title)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return 0


def roles_text(roles: Dict[str, int]) -> str:
    return ", ".join(f"{n} {role}" for role, n in roles.items())


if __name__ == "__main__":
    sys.exit(main())
