#!/usr/bin/env python3
"""100,000 parked goroutines (issue 31): `stackdump --coroutines` against the Go runtime's own
dump of every goroutine (SIGQUIT with GOTRACEBACK=all, which then ends the process), in one
run. Wall time and peak RSS of stackdump; for Go, the time from the signal to the end of its
dump (the process's exit).

    python3 benchmarks/goroutines.py [--goroutines 100000] [--repeat 3] [--go-release 1.19]
        [--stackdump CMD] [--before CMD]

`--before`: another stackdump (an older tree's install), run on the same target in
alternating rounds with `--stackdump` (this machine is noisy).

Builds a small program with the Go toolchain tests/go_toolchains.py provides (Debian's
golang-go 1.19 by default) into ~/.cache/stackdump-tests/.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from go_toolchains import goroot  # noqa: E402
from helpers import CACHE  # noqa: E402

PROGRAM = """package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

//go:noinline
func parked(i int) { time.Sleep(time.Duration(1e6+i) * time.Second) }

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	for i := 0; i < n; i++ {
		go parked(i)
	}
	time.Sleep(500 * time.Millisecond)
	fmt.Println("ready", os.Getpid())
	select {}
}
"""


def build(release: str) -> Path:
    out = CACHE / f"goroutines-{release}"
    binary = out / "parked"
    if not binary.exists():
        out.mkdir(parents=True, exist_ok=True)
        (out / "main.go").write_text(PROGRAM)
        go = goroot(release) / "bin" / "go"
        env = {**os.environ, "GOCACHE": str(out / "gocache"), "GO111MODULE": "off"}
        subprocess.run([str(go), "build", "-o", str(binary), "main.go"], cwd=out, env=env,
                       check=True)  # fmt: skip
    return binary


def start(binary: Path, count: int, env=None) -> subprocess.Popen:
    proc = subprocess.Popen([str(binary), str(count)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)  # fmt: skip
    line = proc.stdout.readline().decode()
    if not line.startswith("ready"):
        raise RuntimeError(f"the Go program did not start: {line!r}")
    return proc


def stackdump_run(cmd, pid: int):
    start_s = time.perf_counter()
    proc = subprocess.Popen([*cmd, "-p", str(pid), "--coroutines", "--mode", "disabled"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    # Read line by line, never held: a child's peak RSS counts its parent's at the fork
    # (Linux keeps the larger at exec), and the whole text is ~100 MB.
    found = [line.decode() for line in proc.stdout if line.startswith(b"coroutines:")]
    _, _, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start_s
    return wall, usage.ru_maxrss / 1024, found[0].strip() if found else "?"


def go_own_dump(binary: Path, count: int) -> float:
    proc = start(binary, count, {**os.environ, "GOTRACEBACK": "all"})
    began = time.perf_counter()
    proc.send_signal(signal.SIGQUIT)
    proc.stderr.read()  # the dump, until the process ends
    proc.wait()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--goroutines", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--go-release", default="1.19")
    parser.add_argument("--stackdump", default=f"{shlex.quote(sys.executable)} -m stackdump")
    parser.add_argument("--before", help="an older stackdump, run in alternating rounds")
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    binary = build(args.go_release)
    cmds = {"stackdump": shlex.split(args.stackdump)}
    if args.before:
        cmds = {"stackdump, before": shlex.split(args.before), **cmds}
    runs = {name: [] for name in cmds}
    target = start(binary, args.goroutines)
    try:
        for cmd in cmds.values():
            stackdump_run(cmd, target.pid)  # warm
        for _ in range(args.repeat):
            for name, cmd in cmds.items():
                runs[name].append(stackdump_run(cmd, target.pid))
    finally:
        target.kill()
        target.wait()
    go = [go_own_dump(binary, args.goroutines) for _ in range(args.repeat)]
    print(f"{args.goroutines:,} goroutines parked in time.Sleep, Go {args.go_release}, "
          f"medians of {args.repeat}\n")  # fmt: skip
    print("| dump | wall s | peak RSS MiB |\n|---|---:|---:|")
    for name, done in runs.items():
        print(f"| {name} --coroutines --mode disabled | "
              f"{statistics.median(r[0] for r in done):.2f} | "
              f"{statistics.median(r[1] for r in done):.0f} |")  # fmt: skip
    print(f"| Go's own (SIGQUIT, GOTRACEBACK=all) | {statistics.median(go):.2f} | - |")
    print(f"\nstackdump: {runs['stackdump'][-1][2]}")


if __name__ == "__main__":
    main()
