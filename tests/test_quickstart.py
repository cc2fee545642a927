"""README Quick start, command 1, as a new user runs it on Debian 12 as root: install.sh with
the system Python (whose pip refuses to install outside a virtualenv), then `stackdump -p`
found on PATH. Command 2 is `.ci/run` itself, which makes its virtualenv the same way."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import ON_CI
from helpers import Target, parse_report

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


def _install(tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHON": SYSTEM_PYTHON,
        "STACKDUMP_PREFIX": str(tmp_path / "opt" / "stackdump"),
        "STACKDUMP_BINDIR": str(tmp_path / "bin"),
    }
    return subprocess.run(
        ["sh", str(ROOT / "install.sh")], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def system_python() -> None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        if ON_CI:
            pytest.fail(f"{SYSTEM_PYTHON} is missing under CI=true")
        pytest.skip(f"no system Python at {SYSTEM_PYTHON}")


def test_install_with_the_system_python_then_dump_from_path(
    system_python, live, threads_bin, tmp_path
):
    # GIVEN install.sh run with Debian's own python3
    result = _install(tmp_path)
    assert result.returncode == 0, result.stderr
    link = tmp_path / "bin" / "stackdump"
    prefix = tmp_path / "opt" / "stackdump"
    assert os.readlink(link) == str(prefix / "bin" / "stackdump")
    config = (prefix / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in config, config
    # WHEN `stackdump -p PID` is typed with that directory on PATH
    with Target(threads_bin("O2"), {"read": 1}).wait_ready() as target:
        dump = subprocess.run(
            ["sh", "-c", f"stackdump -p {target.pid}"],
            env={**os.environ, "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    # THEN it prints the report
    assert dump.returncode == 0, dump.stderr
    assert parse_report(dump.stdout).summary["captured"] == 2


def test_install_never_replaces_a_command_it_did_not_make(tmp_path):
    (tmp_path / "bin").mkdir()
    theirs = tmp_path / "bin" / "stackdump"
    theirs.write_text("#!/bin/sh\necho someone else's stackdump\n")
    result = _install(tmp_path)
    assert result.returncode == 1
    assert "exists and is not this installation's link" in result.stderr
    assert theirs.read_text() == "#!/bin/sh\necho someone else's stackdump\n"
    assert not (tmp_path / "opt").exists()
