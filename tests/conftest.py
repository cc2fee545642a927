"""Fixtures for live tests: targets compiled at test time, and a ptrace permission gate.

A live test that cannot run here skips with the reason, except under CI=true, where it
fails: a green CI must mean the real thing ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import compile_target

ON_CI = os.environ.get("CI") == "true"


def need_tool(tool: str, package: str) -> str:
    """The tool's path; when it is missing, the test skips saying which package .ci/run
    installs, and under CI=true fails instead."""
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} is not installed (.ci/run installs {package})"
        if ON_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return path


VARIANTS = {
    "O0": ["-O0", "-g", "-fno-omit-frame-pointer"],
    "O2": ["-O2", "-g", "-fno-omit-frame-pointer"],
    # No frame pointers: only DWARF CFI can unwind the target's own code.
    "nofp": ["-O2", "-g", "-fomit-frame-pointer"],
    # Frame pointers but no unwind tables: the target's code must be walked by frame pointer,
    # libc's by CFI, in one stack.
    "nocfi": [
        "-O2",
        "-g",
        "-fno-omit-frame-pointer",
        "-fno-asynchronous-unwind-tables",
        "-fno-unwind-tables",
    ],
}

_PROBE = """
import ctypes, os, sys, signal
libc = ctypes.CDLL(None, use_errno=True)
pid = int(sys.argv[1])
if libc.ptrace(0x4206, pid, 0, 0) != 0:
    print(os.strerror(ctypes.get_errno())); sys.exit(1)
"""


def _ptrace_problem() -> str:
    """'' when this machine lets a non-parent process PTRACE_SEIZE a process."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, str(victim.pid)], capture_output=True, text=True
        )
        return "" if probe.returncode == 0 else f"PTRACE_SEIZE refused: {probe.stdout.strip()}"
    finally:
        victim.kill()
        victim.wait()


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """Every stackdump the tests run caches under a fresh directory, never the user's."""
    directory = tmp_path_factory.mktemp("xdg-cache")
    os.environ["XDG_CACHE_HOME"] = str(directory)
    return directory / "stackdump"


@pytest.fixture(scope="session")
def live() -> None:
    problem = _ptrace_problem()
    if problem:
        if ON_CI:
            pytest.fail(f"live tests cannot run under CI=true: {problem}")
        pytest.skip(f"no ptrace permission here: {problem} (run as root or with CAP_SYS_PTRACE)")


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("targets")


@pytest.fixture(scope="session")
def threads_bin(build_dir):
    """Builds tests/targets/threads.c in a variant: threads_bin('O0')."""

    def build(variant: str = "O0") -> Path:
        return compile_target("threads.c", build_dir, f"threads-{variant}", VARIANTS[variant])

    return build


@pytest.fixture(scope="session")
def tracer_bin(build_dir) -> Path:
    return compile_target("tracer.c", build_dir, "tracer", ["-O1"])


def pytest_sessionfinish(session, exitstatus):
    """Under CI=true a skipped test is a failed run: green must mean everything ran."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if ON_CI and skipped and exitstatus == 0:
        session.exitstatus = 1
        if reporter:
            reporter.write_line(f"CI=true: {skipped} test(s) skipped; failing the run", red=True)
