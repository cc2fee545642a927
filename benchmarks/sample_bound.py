#!/usr/bin/env python3
"""How much of a sample's CPU the per-sample checks and the report take (issue 31): the
same series of samples of a live process, in one process each, three ways:

- `full`: what `--samples` does (`capture.live.capture_process`, then `Analyzer.analyze`
  and the profile's tally);
- `threads`: one `_Capture` made at the first sample and used for every later one, so no
  listing of the threads, no leader, tracer, executable or maps check, no maps check after,
  no end-of-capture checks: only each thread's recall, the capture of those that ran, and
  their unwind; then the report and the tally as in `full`;
- `bare`: `threads` without the report and the tally.

`threads` and `bare` are not correct samplers (a new thread, an exec, a changed map go
unseen); they bound what skipping that work could save. CPU per sample after the first is
`time.thread_time_ns` over the loop, `--interval-ms` apart as a profile's samples are; the
variants take turns, round after round, and the medians are printed.

    python3 benchmarks/sample_bound.py PID [--samples 300] [--rounds 6] [--interval-ms 10]

Run it with an interpreter that has stackdump's dependencies (the test virtualenv's), from
the source tree it measures; the target is any live process (redis-server under
redis-benchmark's load, for the issue's line).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("full", "threads", "bare")


def one_run(pid: int, samples: int, interval_ms: int, variant: str) -> float:
    """Microseconds of CPU per sample after the first (run in a child: see main)."""
    from stackdump import engine, runtimes, sampling
    from stackdump.capture import live
    from stackdump.capture.remote import Buffers
    from stackdump.capture.unchanged import UnchangedThreads
    from stackdump.types import AnalysisOptions, CaptureOptions, LocationMode, replaced

    options = engine.DumpOptions(
        CaptureOptions(pid=pid), AnalysisOptions(mode=LocationMode.DISABLED)
    )
    series = live.Series()
    series.target(pid, options.capture.timeout_ms)
    recall = UnchangedThreads(pid, series.kept)
    buffers = Buffers()
    after = functools.partial(runtimes.after_capture, absent=runtimes.Absent())
    tally = sampling._Tally("all")
    never = lambda: False  # noqa: E731
    with engine.Analyzer(options.analysis) as analyzer, recall, series:

        def full() -> engine.ProcessSnapshot:
            return live.capture_process(
                options.capture, None, None, analyzer.settle, after=after, recall=recall,
                buffers=buffers, series=series,
            )  # fmt: skip

        first = full()
        tally.add(0, analyzer.analyze(first), 0)
        capture = live._Capture(pid, options.capture, buffers, series, reuse_maps=True)
        started = time.thread_time_ns()
        for index in range(1, samples):
            began = time.monotonic()
            if variant == "full":
                tally.add(index, analyzer.analyze(full()), 0)
            else:
                keep = analyzer.settle(capture.files, capture.maps, first.vdso)
                threads, _ = capture.threads(keep, None, None, recall)
                capture.fresh.clear()
                if variant == "threads":
                    snapshot = replaced(first, threads=tuple(threads), files=capture.files)
                    tally.add(index, analyzer.analyze(snapshot), 0)
                else:
                    analyzer._session = None  # the next settle makes its own
            sampling._wait(began + interval_ms / 1000, never, time.monotonic, series)
        return (time.thread_time_ns() - started) / (samples - 1) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pid", type=int)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--interval-ms", type=int, default=10)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one child
    args = parser.parse_args()
    if args.variant:
        print(one_run(args.pid, args.samples, args.interval_ms, args.variant))
        return
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    found = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for variant in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
            argv = [sys.executable, __file__, str(args.pid), "--samples", str(args.samples),
                    "--interval-ms", str(args.interval_ms), "--variant", variant]  # fmt: skip
            out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
            found[variant].append(float(out.stdout))
    print(f"CPU per sample, us, {args.rounds} rounds (median: each round's figure)\n")
    print("| variant | median | rounds |\n|---|---:|---|")
    for variant, figures in found.items():
        rounds = ", ".join(f"{x:.0f}" for x in figures)
        print(f"| {variant} | {statistics.median(figures):.0f} | {rounds} |")


if __name__ == "__main__":
    main()
