#!/usr/bin/env python3
"""Harm to a real server under load: redis-server driven by redis-benchmark on 127.0.0.1,
with no dumper, and with each dumper dumping it every 200 ms (stackdump in DISABLED and FAST
mode, FAST without its real-time stop window, eu-stack, and gdb with --gdb), interleaved in
rounds so that drift in the machine's speed spreads over every dumper alike.

For each dumper it prints redis's throughput, p99 and max latency (from redis-benchmark's
own figures) as ratios to the no-dumper runs of the same round, the CPU one dump cost, and
how long each of redis's threads stayed in a ptrace stop: as the scheduler saw it (root and
tracefs: benchmarks/schedtrace.py; every dumper measured the same way) and as stackdump's
own pause_us says.

    python3 benchmarks/harm.py [--seconds 6] [--rounds 2] [--io-threads 0,4] [--gdb]
    python3 benchmarks/harm.py --profilers [...]

With --profilers, sampling profilers instead, each started a second before the load (its
start-up paid before, as when left running) and stopped after it. Beside them, two floors at
100 Hz (gcc needed): benchmarks/sample_floor.c, a C sampler doing only what a sample must
(list the threads, read their schedstat, capture those that ran; no unwinding, no report),
and benchmarks/sample_floor.py, the same in Python.

Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools) and eu-stack
(elfutils). Every connection stays on 127.0.0.1; the load is bounded by --seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import pauses, percentile  # noqa: E402
from schedtrace import TRACEFS, SchedTrace, parse  # noqa: E402

PERIOD_S = 0.2
CLIENTS = 50
SETTLE_S = 1.0  # a continuous profiler runs this long before the load starts


@dataclass
class Dumper:
    name: str
    argv: List[str]  # "PID" stands for the target's pid
    env: Dict[str, str] = field(default_factory=dict)
    period_s: float = PERIOD_S  # one run every period_s
    # Runs once for the whole load, ended by SIGINT (a sampling profiler): `dumps` then
    # counts its samples, read from its closing message.
    continuous: bool = False
    # For a continuous one: the same command taking one sample, run just before the load,
    # whose CPU (start-up, one sample, the output) is taken out of the per-sample column.
    once: List[str] = field(default_factory=list)

    def command(self, pid: int, argv: Optional[List[str]] = None) -> List[str]:
        return [str(pid) if arg == "PID" else arg for arg in (argv or self.argv)]


@dataclass
class Run:
    rps: float
    p99_ms: float
    max_ms: float
    dumps: int = 0
    cpu_s: float = 0.0
    once_cpu_s: Optional[float] = None  # Dumper.once's CPU
    stops_us: List[float] = field(default_factory=list)
    pauses_us: List[int] = field(default_factory=list)


def dumpers(with_gdb: bool) -> List[Dumper]:
    stackdump = [sys.executable, "-m", "stackdump"]
    rows = [
        Dumper("no dumper", []),
        Dumper("stackdump DISABLED", [*stackdump, "--mode", "disabled", "-p", "PID"]),
        Dumper("stackdump FAST", [*stackdump, "-p", "PID"]),
        Dumper("stackdump FAST, no RT", [*stackdump, "-p", "PID"], {"STACKDUMP_REALTIME": "0"}),
        Dumper("eu-stack", ["eu-stack", "-p", "PID"]),
    ]
    if with_gdb:
        rows.append(Dumper("gdb", ["gdb", "-batch", "-ex", "thread apply all bt", "-p", "PID"]))
    return rows


def profilers() -> List[Dumper]:
    """Issue 16: sampling profilers, each for the whole load (and issue 31: stackdump at 5 Hz,
    the rate of the dumps every 200 ms that `dumpers` times as separate runs)."""
    stackdump = [sys.executable, "-m", "stackdump", "-p", "PID", "--mode", "disabled"]
    pprof = ["--format", "pprof", "-o", "/dev/null"]
    once = [*stackdump, "--samples", "1", *pprof]

    def sampling(hz: int, nice: int = 0, idle: bool = False) -> Dumper:
        argv = [*stackdump, "--duration-s", "3600", "--hz", str(hz), *pprof]
        name = f"stackdump {hz} Hz"
        # Below the load's priority outside its stop windows (those stay real-time).
        if nice:
            argv, name = ["nice", "-n", str(nice), *argv], f"{name}, nice {nice}"
        if idle:
            argv, name = ["chrt", "--idle", "0", *argv], f"{name}, chrt --idle"
        return Dumper(name, argv, continuous=True, once=once)

    rows = [
        Dumper("no profiler", []),
        sampling(5),  # what dumping every 200 ms costs when it is one process (issue 31)
        sampling(10),
        sampling(100),
        sampling(100, nice=19),
        sampling(100, idle=True),
        Dumper(
            "gdb 1 Hz (pt-pmp)",
            ["gdb", "-batch", "-nx", "-ex", "set pagination 0", "-ex", "thread apply all bt",
             "-p", "PID"],
            period_s=1.0,
        ),
    ]  # fmt: skip
    rows += floors()
    if shutil.which("perf") and _perf_works():
        rows.append(
            Dumper(
                "perf record -g 99 Hz",
                ["perf", "record", "-q", "-g", "-F", "99", "-p", "PID", "-o", "/dev/null"],
                continuous=True,
            )
        )
    return rows


def floor_samplers(build: str) -> List[List[str]]:
    """The floor samplers' commands, benchmarks/sample_floor.c (compiled into `build`) then
    benchmarks/sample_floor.py; each takes PID SAMPLES INTERVAL_MS."""
    here = os.path.dirname(os.path.abspath(__file__))
    binary = os.path.join(build, "sample_floor")
    subprocess.run(["gcc", "-O2", os.path.join(here, "sample_floor.c"), "-o", binary], check=True)
    return [[binary], [sys.executable, os.path.join(here, "sample_floor.py")]]


def floors() -> List[Dumper]:
    """The C and Python floors of a 100 Hz sampler (module docstring), where gcc is."""
    if shutil.which("gcc") is None:
        return []
    build = os.path.join(os.environ.get("TMPDIR", "/tmp"), "stackdump-bench")
    os.makedirs(build, exist_ok=True)
    c, python = floor_samplers(build)
    once = ["PID", "1", "10"]
    forever = ["PID", str(10**9), "10"]
    return [
        Dumper("C floor 100 Hz", [*c, *forever], continuous=True, once=[*c, *once]),
        Dumper("Python floor 100 Hz", [*python, *forever], continuous=True, once=[*python, *once]),
    ]


def _perf_works() -> bool:
    done = subprocess.run(
        ["perf", "record", "-q", "-F", "99", "-o", "/dev/null", "--", "true"],
        capture_output=True,
    )
    return done.returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def loaded_redis() -> Iterator[int]:
    """A redis-server (io-threads 0) kept busy by redis-benchmark's SETs until the block
    ends: its pid (sample_cost.py, sample_work.py)."""
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        server = start_redis(port, 0, workdir)
        load = subprocess.Popen(
            ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(CLIENTS),
             "-n", str(10**9), "-t", "set", "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            yield server.pid
        finally:
            load.kill()
            load.wait()
            server.kill()
            server.wait()


def start_redis(port: int, io_threads: int, workdir: str) -> subprocess.Popen:
    args = [
        "redis-server",
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", workdir,
        "--protected-mode", "yes",
    ]  # fmt: skip
    if io_threads:
        args += ["--io-threads", str(io_threads), "--io-threads-do-reads", "yes"]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)


def benchmark(port: int, requests: int) -> Run:
    out = subprocess.run(
        [
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-c",
            str(CLIENTS),
            "-n",
            str(requests),
            "-t",
            "set",
            "--csv",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = next(csv.DictReader(io.StringIO(out)))
    return Run(float(row["rps"]), float(row["p99_latency_ms"]), float(row["max_latency_ms"]))


def dump_loop(dumper: Dumper, pid: int, stop: threading.Event, run: Run) -> None:
    env = {**os.environ, **dumper.env}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # start from byte code, as installed
    next_at = time.monotonic()
    while not stop.is_set():
        proc = subprocess.Popen(
            dumper.command(pid), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        out = proc.stdout.read()
        _, _, usage = os.wait4(proc.pid, 0)
        run.dumps += 1
        run.cpu_s += usage.ru_utime + usage.ru_stime
        run.pauses_us.extend(pauses(out.decode(errors="replace")))
        next_at += dumper.period_s
        stop.wait(max(0.0, next_at - time.monotonic()))


def thread_ids(pid: int) -> List[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def measure(
    dumper: Dumper, server: subprocess.Popen, port: int, requests: int, trace: Optional[SchedTrace]
) -> Run:
    tids = thread_ids(server.pid)
    if trace is not None:
        trace.follow(tids)
        trace.start()
    stop = threading.Event()
    holder = Run(0, 0, 0)
    loop = None
    profiler = None
    if dumper.continuous:
        env = {**os.environ, **dumper.env}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if dumper.once:
            holder.once_cpu_s = _cpu_of(dumper.command(server.pid, dumper.once), env)
        profiler = subprocess.Popen(
            dumper.command(server.pid), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        # Left running in production, a profiler's start-up is paid once, not during the
        # load: without this, its start-up (~0.1 s of CPU for stackdump or perf, on a machine
        # whose cores the load keeps busy) was most of the p99 it added at 5 Hz.
        time.sleep(SETTLE_S)
    elif dumper.argv:
        loop = threading.Thread(target=dump_loop, args=(dumper, server.pid, stop, holder))
        loop.start()
    try:
        run = benchmark(port, requests)
    finally:
        stop.set()
        if loop is not None:
            loop.join()
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            err = profiler.stderr.read().decode(errors="replace")
            _, _, usage = os.wait4(profiler.pid, 0)
            holder.cpu_s = usage.ru_utime + usage.ru_stime
            taken = re.search(r"covers the (\d+) of|^samples=(\d+)", err, re.M)
            holder.dumps = int(taken.group(1) or taken.group(2)) if taken else 1
    if trace is not None:
        run.stops_us = parse(trace.stop_raw(), set(tids)).all_stopped()
    run.dumps, run.cpu_s, run.pauses_us = holder.dumps, holder.cpu_s, holder.pauses_us
    run.once_cpu_s = holder.once_cpu_s
    return run


def _cpu_of(argv: List[str], env: Dict[str, str]) -> float:
    """CPU seconds of one run of `argv`."""
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, _, usage = os.wait4(child.pid, 0)
    return usage.ru_utime + usage.ru_stime


def open_trace() -> Optional[SchedTrace]:
    trace = SchedTrace.open("redis-server")
    if trace is None:
        print(f"(no {TRACEFS}: kernel-observed stop columns left empty)", file=sys.stderr)
    return trace


def table(results: Dict[str, List[Run]], baseline: List[Run]) -> List[str]:
    base_rps = statistics.median(r.rps for r in baseline)
    base_p99 = statistics.median(r.p99_ms for r in baseline)
    base_max = statistics.median(r.max_ms for r in baseline)
    lines = [
        "| dumper | throughput | p99 latency | max latency | dumps | CPU per dump | "
        "CPU per sample, start-up out | stop p50 / p99 / max (sched) | pause_us p50 / p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        rps = statistics.median(r.rps for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        mx = statistics.median(r.max_ms for r in runs)
        dumps = sum(r.dumps for r in runs)
        cpu = sum(r.cpu_s for r in runs) / dumps * 1000 if dumps else 0
        stops = sorted(s for r in runs for s in r.stops_us)
        own = [p for r in runs for p in r.pauses_us]
        stop_text = (
            f"{percentile(stops, 0.5):.0f} / {percentile(stops, 0.99):.0f} / {stops[-1]:.0f} us"
            if stops
            else "-"
        )
        own_text = f"{percentile(own, 0.5)} / {percentile(own, 0.99)} us" if own else "-"
        # The continuous profiler's CPU less one single-sample run's (start-up, a sample,
        # the output), over the samples after the first.
        steady = [(r.cpu_s - r.once_cpu_s, r.dumps - 1) for r in runs if r.once_cpu_s]
        steady_text = (
            f"{sum(c for c, _ in steady) / sum(n for _, n in steady) * 1e6:.0f} us"
            if steady and sum(n for _, n in steady) > 0
            else "-"
        )
        lines.append(
            f"| {name} | {rps:,.0f}/s ({rps / base_rps:.2f}x) | {p99:.2f} ms "
            f"({p99 / base_p99:.1f}x) | {mx:.1f} ms ({mx / base_max:.1f}x) | {dumps} | "
            f"{cpu:.2f} ms | {steady_text} | {stop_text} | {own_text} |"
        )
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="load per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--io-threads", default="0,4", help="redis io-threads settings")
    parser.add_argument("--gdb", action="store_true", help="also gdb (it stops every thread)")
    parser.add_argument(
        "--profilers",
        action="store_true",
        help="compare sampling profilers instead (stackdump at 10 and 100 Hz, gdb at 1 Hz "
        "as pt-pmp does, perf record -g where the kernel allows)",
    )
    args = parser.parse_args(argv)
    # The profilers are ended with SIGINT. Started from a script's background job, this
    # process inherits SIGINT ignored, and so would they: the Python floor then never ends
    # and this waits for it forever. Caught here, it is back to the default in each child.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for tool in ("redis-server", "redis-benchmark", "eu-stack"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing (apt-get install redis-server redis-tools elfutils)")
            return 2
    trace = open_trace()
    try:
        for io_threads in (int(x) for x in args.io_threads.split(",")):
            with tempfile.TemporaryDirectory() as workdir:
                port = free_port()
                server = start_redis(port, io_threads, workdir)
                try:
                    rate = benchmark(port, 20000).rps  # calibration: requests for --seconds
                    requests = max(20000, int(rate * args.seconds))
                    rows = profilers() if args.profilers else dumpers(args.gdb)
                    results: Dict[str, List[Run]] = {d.name: [] for d in rows}
                    for round_no in range(args.rounds):
                        # Interleaved: each round starts one dumper later.
                        order = rows[round_no % len(rows) :] + rows[: round_no % len(rows)]
                        for dumper in order:
                            results[dumper.name].append(
                                measure(dumper, server, port, requests, trace)
                            )
                    threads = len(thread_ids(server.pid))
                finally:
                    server.kill()
                    server.wait()
            print(
                f"\nredis-server, io-threads {io_threads} ({threads} threads), "
                f"redis-benchmark -c {CLIENTS} -t set -n {requests}, "
                + (
                    f"profilers started {SETTLE_S:.0f} s before the load and run through it"
                    if args.profilers
                    else f"one dump every {PERIOD_S * 1000:.0f} ms"
                )
                + f", {args.rounds} rounds; ratios to {rows[0].name}:"
            )
            baseline = results[rows[0].name]
            print("\n".join(table(results, baseline)))
    finally:
        if trace is not None:
            trace.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
