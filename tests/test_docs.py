"""The documents a user reads agree with the program: every option in the man page's
SYNOPSIS and the README's usage, every stats key and exit status in docs/FORMAT.md, nothing
pointing outside the repository, and a man page that renders cleanly."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ON_CI
from test_report_text import make_report

from stackdump import cli
from stackdump.report import text_lines
from stackdump.syscalls import INTERRUPT_SENSITIVE_NAMES

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man" / "stackdump.1"
README = ROOT / "README.md"
FORMAT = ROOT / "docs" / "FORMAT.md"


def _option_names():
    for param in cli.command.params:
        yield from (name for name in param.opts if name.startswith("-"))
    yield "--version"


def _synopsis() -> str:
    text = MAN.read_text()
    section = text[text.index(".SH SYNOPSIS") : text.index(".SH DESCRIPTION")]
    return section.replace("\\-", "-")


def test_man_synopsis_lists_every_option():
    synopsis = _synopsis()
    missing = [n for n in _option_names() if not re.search(rf"(?<![\w-]){n}(?![\w-])", synopsis)]
    missing = [n for n in missing if n not in ("--pid", "--addresses", "--output", "--help")]
    assert missing == []


def test_readme_usage_lists_every_option():
    text = README.read_text()
    usage = text[text.index("## Usage") : text.index("| option | default | meaning |")]
    long_names = [n for n in _option_names() if n.startswith("--")]
    short_ok = {"--pid": "-p", "--addresses": "-a", "--output": "-o", "--help": "-h"}
    missing = [n for n in long_names if n not in usage and short_ok.get(n, n) not in usage]
    assert missing == []


def test_skip_blocking_syscalls_help_names_its_list():
    option = next(p for p in cli.command.params if p.name == "skip_blocking_syscalls")
    assert " ".join(INTERRUPT_SENSITIVE_NAMES) in option.help


def test_format_documents_every_stats_key_and_exit_status():
    text = FORMAT.read_text()
    stats = next(line for line in text_lines(make_report()) if line.startswith("stats: "))
    for key in re.findall(r"(\w+)=", stats):
        assert f"| `{key}` |" in text, key
    for code in (
        cli.EXIT_OK,
        cli.EXIT_PARTIAL,
        cli.EXIT_USAGE,
        cli.EXIT_NO_REPORT,
        cli.EXIT_OUTPUT,
    ):
        assert re.search(rf"^\| {code} \|", text, re.M), code


def test_documents_stay_inside_the_repository():
    for path in [README, MAN, *(ROOT / "docs").glob("*.md")]:
        assert "../shared" not in path.read_text(), path
    assert "docs/FORMAT.md" in README.read_text()
    assert "docs/FORMAT.md" in MAN.read_text()


def test_man_page_renders_without_warnings():
    if shutil.which("groff") is None:
        if ON_CI:
            pytest.fail("groff is missing under CI=true")
        pytest.skip("groff is not installed")
    result = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(MAN)], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
