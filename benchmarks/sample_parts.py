#!/usr/bin/env python3
"""Where a sample's CPU goes: runs stackdump in this process with some of its functions
wrapped, each call's CPU time (`time.process_time_ns`) summed, and prints CPU per call and
calls per function at exit (issue 31). A wrapped function's figure includes the functions it
calls, wrapped or not, and ~1 us of the wrapper's own; compare figures within one run.

    python3 benchmarks/sample_parts.py [--functions MODULE:QUALNAME,...] -- STACKDUMP ARGS
    python3 benchmarks/sample_parts.py -- -p PID --mode disabled --samples 500 \\
        --interval-ms 10 -o /dev/null

A function is wrapped where its module defines it; a module that imported it by name before
(`from m import f`) keeps calling the unwrapped one.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import functools
import importlib
import sys
import time
from typing import Counter, List

# The pieces of a sample, outermost first (stackdump/capture/live.py, engine.py, sampling.py).
DEFAULT = (
    "stackdump.capture.live:_Capture.__init__",
    "stackdump.capture.live:_Capture.threads",
    "stackdump.capture.live:_Capture._member",
    "stackdump.capture.live:_Capture.finish",
    "stackdump.capture.ptrace:Tracer.capture",
    "stackdump.capture.passive:PassiveCapturer.capture",
    "stackdump.capture.unchanged:UnchangedThreads.recall",
    "stackdump.capture.unchanged:UnchangedThreads.keep",
    "stackdump.capture.live:_context",
    "stackdump.proc:read_maps",
    "stackdump.proc:leader_state",
    "stackdump.proc:list_tids",
    "stackdump.engine:Analyzer.settle",
    "stackdump.engine:_Session.settle",
    "stackdump.engine:Analyzer.analyze",
    "stackdump.engine:_thread_reports",
    "stackdump.elf.store:ObjectStore.module_entries",
    "stackdump.engine:_summarize",
    "stackdump.sampling:_Tally.add",
    "stackdump.sampling:_wait",
)


def wrap(spec: str, spent: Counter[str], calls: Counter[str]) -> None:
    module_name, qualname = spec.split(":")
    owner = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        started = time.process_time_ns()
        try:
            return original(*args, **kwargs)
        finally:
            spent[spec] += time.process_time_ns() - started
            calls[spec] += 1

    setattr(owner, name, timed)


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", default=",".join(DEFAULT))
    parser.add_argument("stackdump_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    spent: Counter[str] = collections.Counter()
    calls: Counter[str] = collections.Counter()
    for spec in args.functions.split(","):
        wrap(spec, spent, calls)

    def report() -> None:
        print("| function | calls | CPU us per call |\n|---|---:|---:|", file=sys.stderr)
        for spec, ns in sorted(spent.items(), key=lambda item: -item[1]):
            print(f"| `{spec}` | {calls[spec]} | {ns / calls[spec] / 1000:.1f} |", file=sys.stderr)

    atexit.register(report)
    rest = args.stackdump_args[1:] if args.stackdump_args[:1] == ["--"] else args.stackdump_args
    sys.argv = ["stackdump", *rest]
    from stackdump.cli import main as stackdump_main

    stackdump_main()


if __name__ == "__main__":
    main(sys.argv[1:])
