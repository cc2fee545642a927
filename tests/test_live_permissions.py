"""EPERM is explained (issue 5): which of root, CAP_SYS_PTRACE, Yama or a container applies,
exit status 3, and the target untouched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from conftest import ON_CI
from helpers import Target, assert_untouched

NOBODY = 65534


def _setpriv_problem() -> str:
    if shutil.which("setpriv") is None:
        return "setpriv(1) is not installed"
    if os.geteuid() != 0:
        return "needs root, to start a target as another user"
    return ""


@pytest.fixture
def nobody_target(live, threads_bin):
    problem = _setpriv_problem()
    if problem:
        if ON_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    directory = tempfile.mkdtemp(prefix="stackdump-perm-")
    os.chmod(directory, 0o755)
    binary = os.path.join(directory, "threads")
    shutil.copy(threads_bin("O2"), binary)
    os.chmod(binary, 0o755)
    wrap = [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "sh",
        "-c",
        "exec",
    ]
    target = Target(binary, {"read": 1, "epoll": 1}, wrap=wrap)
    try:
        yield target.wait_ready()
    finally:
        target.kill()
        shutil.rmtree(directory, ignore_errors=True)


def _run_without_cap_sys_ptrace(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "setpriv",
            "--inh-caps=-sys_ptrace",
            "--bounding-set=-sys_ptrace",
            sys.executable,
            "-m",
            "stackdump",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("capture", ["auto", "passive"])
def test_root_without_cap_sys_ptrace_is_told_so(nobody_target, capture):
    pid = nobody_target.pid
    result = _run_without_cap_sys_ptrace("-p", str(pid), "--capture", capture)
    assert result.returncode == 3, result
    assert result.stdout == ""
    first, *hints = result.stderr.strip().splitlines()
    assert first.startswith("stackdump: error: not permitted to ")
    assert str(pid) in first
    assert any("without CAP_SYS_PTRACE" in h and f"uid {NOBODY}" in h for h in hints), hints
    assert "Traceback" not in result.stderr
    assert_untouched(pid)
    assert nobody_target.status()["read_returned"] == 0
