"""Faults (issue 5): stackdump killed, interrupted or racing a changing target never leaves
a thread stopped and never ends in a traceback."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
from helpers import (
    DEADLINE_S,
    Target,
    assert_untouched,
    churning,
    compile_target,
    finish,
    parse_report,
    run_stackdump,
    thread_states,
)

VALID_STATUSES = {
    "ok",
    "skipped_blocking_syscall",
    "thread_exited",
    "timeout",
    "attach_error",
    "skipped_running",
}


def _start_stackdump(*args: str, keep_output: bool = True) -> subprocess.Popen:
    # Unread, a big report would fill the pipe and block stackdump on its write.
    out = subprocess.PIPE if keep_output else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "stackdump", *args], stdout=out, stderr=out, text=True
    )


def _tracer_of(pid: int, tid: int) -> int:
    try:
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            return int(re.search(r"^TracerPid:\s+(\d+)", f.read(), re.M).group(1))
    except (OSError, AttributeError):
        return -1


def _wait_until_traced(pid: int, tid: int, dumper: subprocess.Popen) -> bool:
    """Until `dumper` has seized `tid` (or finished): an observable point inside capture."""
    deadline = time.monotonic() + DEADLINE_S
    while dumper.poll() is None and time.monotonic() < deadline:
        if _tracer_of(pid, tid) == dumper.pid:
            return True
        os.sched_yield()
    return False


def _assert_clean(result_stdout: str, stderr: str, returncode: int) -> None:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert returncode in (0, 1, 3), (returncode, stderr)
    if returncode in (0, 1):
        report = parse_report(result_stdout)
        for section in report.threads:
            assert section.status in VALID_STATUSES, section.keys
    else:
        assert result_stdout == ""
        assert len(stderr.strip().splitlines()) >= 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_prints_the_partial_report_and_releases_every_thread(live, threads_bin, sig):
    # Threads parked in vfork cannot stop: each costs its whole --timeout-ms, so capture lasts
    # seconds and the signal lands inside it, once the first of them is seized.
    roles = {"vfork": 6, "read": 20}
    with Target(threads_bin("O2"), roles).wait_ready() as target:
        dumper = _start_stackdump("-p", str(target.pid), "--timeout-ms", "1000")
        traced = _wait_until_traced(target.pid, target.tids["vfork"][0], dumper)
        dumper.send_signal(sig)
        out, err = finish(dumper)
        assert traced
        assert dumper.returncode == 1, err
        assert f"interrupted by {sig.name}" in err
        report = parse_report(out)
        assert report.stats["interrupted"] == 1
        total = sum(roles.values()) + 1
        # thread_count is the process's; the sections are the threads captured before it
        assert int(report.header["thread_count"]) == total
        assert 1 <= len(report.threads) < total
        assert report.stats["reported"] == len(report.threads)
        assert_untouched(target.pid)
        assert target.status()["read_returned"] == 0


def test_sigkill_at_random_points_leaves_no_thread_stopped(live, threads_bin):
    rng = random.Random(5)
    roles = {"read": 200, "sleep": 150, "cond": 149, "spin": 1}
    with Target(threads_bin("O2"), roles).wait_ready() as target:
        tids = sorted(tid for tids in target.tids.values() for tid in tids)
        for _ in range(100):
            dumper = _start_stackdump("-p", str(target.pid), keep_output=False)
            try:
                # Half the kills wait until a random thread is seized, the rest land anywhere
                # (start-up, capture, symbolization).
                if rng.random() < 0.5:
                    _wait_until_traced(target.pid, rng.choice(tids), dumper)
                else:
                    time.sleep(rng.uniform(0, 0.6))
            finally:
                dumper.kill()
                dumper.communicate()
            assert_untouched(target.pid)
            assert target.alive()
        assert target.status()["read_returned"] == 0
        # Every thread still there, none stopped: the target answers and keeps spinning.
        target.wait_spinning()
        assert len(thread_states(target.pid)) == sum(roles.values()) + 1


@pytest.fixture(scope="module")
def churn_bin(build_dir):
    return compile_target("churn.c", build_dir, "churn", ["-O2", "-g"])


def test_threads_created_and_destroyed_during_the_dump(live, build_dir):
    with churning(build_dir) as (churn, reader):
        statuses = set()
        for _ in range(100):
            result = run_stackdump("-p", str(churn.pid), "--capture", "ptrace")
            _assert_clean(result.stdout, result.stderr, result.returncode)
            assert result.returncode in (0, 1), result.stderr
            for section in parse_report(result.stdout).threads:
                statuses.add(section.status)
                # A thread born or dying during the dump is captured whole or reported
                # exited, never cut to one frame outside a stack we did not know of.
                error = section.keys.get("error", "")
                assert "outside the thread's stack mapping" not in error, section.keys
        churn.stdin.write(b"status\n")
        churn.stdin.flush()
        line = reader.readline(time.monotonic() + DEADLINE_S)
        assert int(line.split("=")[1]) > 1000  # it really churned
        assert "ok" in statuses
        assert_untouched(churn.pid)


@pytest.mark.parametrize("mode", ["exec", "exit"])
def test_target_that_execs_or_exits_mid_dump(live, churn_bin, mode):
    """exec: the process replaces itself every 20 ms; exit: it is gone 50 ms after start.
    Every dump ends in a report or a one-line error, never a traceback."""
    outcomes = set()
    for _ in range(15):
        with subprocess.Popen([str(churn_bin), "1000", mode], stdin=subprocess.PIPE) as target:
            try:
                result = run_stackdump("-p", str(target.pid))
                _assert_clean(result.stdout, result.stderr, result.returncode)
                outcomes.add(result.returncode)
            finally:
                target.kill()
    assert outcomes <= {0, 1, 3}


def test_exec_during_the_dump_is_said_and_not_exit_0(live, build_dir):
    """The process execs itself as soon as stackdump seizes its first spinner; the leader,
    asked for last, is captured in the new image: an error there, never an `ok` stack read
    with the old program's map (issue 28)."""
    binary = compile_target("exec_midway.c", build_dir, "exec_midway", ["-O1", "-g"])
    with Target(binary, {"busy": 30}).wait_ready() as target:
        order = [*target.tids["busy"], target.pid]
        result = run_stackdump(
            "-p", str(target.pid), "--thread-id", ",".join(map(str, order)), "--mode", "fast"
        )
        assert result.returncode == 1, result.stderr
        assert f"process {target.pid} called exec() during the dump" in result.stderr
        report = parse_report(result.stdout)
        assert report.header["exe"] == str(binary)
        leader = report.thread(target.pid)
        assert leader.status != "ok", leader.frames
        assert all(
            t.status in ("ok", "thread_exited", "attach_error", "timeout") for t in report.threads
        )
        for t in report.threads:
            if t.status == "ok":  # captured before the exec: the old program's spinner
                assert t.tid != target.pid
                assert any("spin" in f for f in t.frames), t.frames
