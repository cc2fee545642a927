#!/usr/bin/env python3
"""Byte-for-byte comparison of full dumps by the working tree and by an earlier commit, for
refactors that must not change the output (issue 14). Timings are masked.

    python3 tests/golden_diff.py [REV]      (REV defaults to HEAD)

Starts tests/targets/threads.c with one thread of most roles, dumps it with both versions in
every mode (ptrace capture, -a), prints "identical" or a diff per mode, and exits 1 on any
difference. The earlier commit is checked out with `git worktree` in a temporary directory.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from helpers import Target, compile_target  # noqa: E402

MASK = re.compile(r"\b(pause_us|elapsed_ms|max_pause_us|cache_hits|cus_decoded)=\d+")
# What a thread was doing depends on the dumps before (a stopped sleep resumes as
# restart_syscall): the context keys are compared by their own tests, not here.
CONTEXT = re.compile(r" state=\S+( wchan=\S+)? cpu_ms=\d+( syscall=\S+)?")
ROLES = {"read": 2, "cond": 2, "sleep": 2, "epoll": 1, "poll": 1, "recurse": 1, "sigalt": 1}
MODES = ("disabled", "fast", "full", "full_with_inline")


def dump(root: str, pid: int, mode: str) -> str:
    env = {**os.environ, "PYTHONPATH": root}
    cmd = [sys.executable, "-m", "stackdump", "-p", str(pid), "--mode", mode, "-a"]
    out = subprocess.run(
        [*cmd, "--capture", "ptrace"], capture_output=True, text=True, env=env, cwd="/"
    )
    if out.returncode not in (0, 1):
        raise SystemExit(f"stackdump from {root} failed ({out.returncode}):\n{out.stderr}")
    return CONTEXT.sub(" state=CONTEXT", MASK.sub(r"\1=N", out.stdout))


def main() -> int:
    rev = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
    different = 0
    with tempfile.TemporaryDirectory() as tmp:
        old = os.path.join(tmp, "old")
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", old, rev], check=True)
        try:
            binary = compile_target("threads.c", Path(tmp), "threads", ["-O2", "-g"])
            with Target(binary, ROLES).wait_ready() as target:
                for mode in MODES:
                    before, after = dump(old, target.pid, mode), dump(str(ROOT), target.pid, mode)
                    if before == after:
                        print(f"{mode}: identical ({len(after.splitlines())} lines)")
                        continue
                    different += 1
                    print(f"{mode}: DIFFERENT")
                    sys.stdout.writelines(
                        difflib.unified_diff(before.splitlines(True), after.splitlines(True))
                    )
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", old])
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
