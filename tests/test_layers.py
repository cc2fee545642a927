"""Issues 14 and 29: the packages import one way. `stackdump.unwind` (CFI, frame walks) and
`stackdump.symbols` (names, DWARF) both build on `stackdump.elf`; neither imports the other,
the live-process modules (capture, ptrace, /proc) or the runtimes, which sit above them all
and below the engine."""

from __future__ import annotations

import subprocess
import sys

import pytest

RUNTIMES = "stackdump.runtimes"
ABOVE_CAPTURE = ("stackdump.engine", "stackdump.api", "stackdump.sampling", "stackdump.unwind",
                 "stackdump.symbols", "stackdump.cli")  # fmt: skip
LIVE = ("stackdump.capture", "stackdump.passive", "stackdump.remote", "stackdump.proc")
ANALYSIS = ("stackdump.engine", "stackdump.sampling", "stackdump.unwind", "stackdump.symbols",
            "stackdump.elf", "stackdump.cli")  # fmt: skip


def _imported_by(module: str):
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "module,forbidden",
    [
        ("stackdump.unwind.unwinder", ("stackdump.symbols", RUNTIMES, *LIVE)),
        ("stackdump.unwind.cfi_source", ("stackdump.symbols", RUNTIMES, *LIVE)),
        ("stackdump.symbols.symbolizer", ("stackdump.unwind", RUNTIMES, *LIVE)),
        ("stackdump.elf.store", ("stackdump.unwind", "stackdump.symbols", RUNTIMES, *LIVE)),
        # Sources know no runtime: they hand a ProcessView to the hook they are given.
        *[
            (f"stackdump.capture.{name}", (RUNTIMES, *ABOVE_CAPTURE))
            for name in ("live", "core", "ptrace", "passive", "pages", "view")
        ],
        # Runtimes sit between the sources and the engine.
        (
            "stackdump.runtimes",
            ("stackdump.engine", "stackdump.api", "stackdump.sampling", "stackdump.cli"),
        ),  # fmt: skip
        # Writers are pure: a format's module, and the table of all of them, load no capture,
        # analysis or file-reading code (issue 29).
        *[
            (f"stackdump.writers.{name}", (*ANALYSIS, *LIVE))
            for name in (
                "registry",
                "pprof",
                "profile_text",
                "trace_formats",
                "json_doc",
                "folded",
                "grouped",
            )
        ],  # fmt: skip
        ("stackdump.profiles", (*ANALYSIS, *LIVE)),
        # What goes to stderr is decided from the report alone.
        ("stackdump.outcome", (*ANALYSIS, *LIVE, RUNTIMES)),
        ("stackdump.console", (*ANALYSIS, *LIVE, RUNTIMES)),
    ],
)
def test_layer_imports_only_downwards(module, forbidden):
    loaded = _imported_by(module)
    assert module in loaded
    wrong = sorted(n for n in loaded for f in forbidden if n == f or n.startswith(f + "."))
    assert wrong == []


_ANALYZE_EXITED = """
import dataclasses, json, os, signal, sys
from stackdump.capture.live import capture_process
from stackdump.runtimes import after_capture
from stackdump.engine import Analyzer
from stackdump.types import AnalysisOptions, CaptureOptions, LocationMode

pid, binary = int(sys.argv[1]), sys.argv[2]
snapshots = []
for _ in range(2):
    snapshot = capture_process(CaptureOptions(pid=pid), after=after_capture)
    snapshot.files.close()
    snapshots.append(snapshot)
os.kill(pid, signal.SIGKILL)
opened = []
sys.addaudithook(lambda event, args: event == "open" and opened.append(str(args[0])))
with Analyzer(AnalysisOptions(mode=LocationMode.FAST)) as analyzer:
    # The process is gone; its files are resolved from this machine's paths.
    reports = [analyzer.analyze(dataclasses.replace(s, files=None)) for s in snapshots]
print(json.dumps({
    "proc": [p for p in opened if p.startswith("/proc")],
    "binary_opened": opened.count(binary),
    "frames": [{t.tid: [f.function for f in t.frames] for t in r.threads} for r in reports],
}))
"""


def test_analyzer_needs_no_live_process_and_opens_each_file_once(live, threads_bin):
    """Analysis takes a snapshot, no pid. Two snapshots of a process that has since exited,
    analyzed by one Analyzer with files resolved from the host: no /proc path is opened, the
    binary is opened once, and every frame is named both times."""
    import inspect
    import json

    from helpers import Target

    from stackdump.engine import Analyzer

    assert "pid" not in inspect.signature(Analyzer.analyze).parameters
    binary = threads_bin("O2")
    with Target(binary, {"read": 1}).wait_ready() as target:
        out = subprocess.run(
            [sys.executable, "-c", _ANALYZE_EXITED, str(target.pid), str(binary)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        target.proc.wait()
    result = json.loads(out)
    assert result["proc"] == []
    assert result["binary_opened"] == 1
    for frames_by_tid in result["frames"]:
        frames = frames_by_tid[str(target.tid("read"))]
        assert frames[1:3] == ["blocking_read", "read_main"], frames


def test_report_lists_the_modules_its_frames_point_into(live, threads_bin):
    from helpers import Target

    import stackdump

    binary = threads_bin("O2")
    with Target(binary, {"read": 1}).wait_ready() as target:
        report = stackdump.dump(stackdump.Process(target.pid))
    paths = [m.path for m in report.modules]
    assert str(binary) in paths and any(p.endswith("/libc.so.6") for p in paths)
    assert len(paths) == len(set(paths))
    for module in report.modules:
        assert module.start < module.end
        if module.path == str(binary):
            readelf = subprocess.run(["readelf", "-n", str(binary)], capture_output=True, text=True)
            assert module.build_id and module.build_id in readelf.stdout
    pcs = [f.pc for t in report.threads for f in t.frames if f.module]
    assert all(any(m.start <= pc < m.end for m in report.modules) for pc in pcs)


def test_settled_threads_keep_frames_not_stack_bytes(live, threads_bin):
    """A live dump unwinds each thread as soon as it runs again and releases its stack copy
    (memory grows with frames, not with 10,000 stack copies): the snapshot it analyzes holds
    no stack bytes, and the report is the one an unsettled snapshot of the same capture gives."""
    import dataclasses

    from helpers import Target

    from stackdump.capture.live import capture_process
    from stackdump.engine import Analyzer
    from stackdump.runtimes import after_capture
    from stackdump.types import AnalysisOptions, CaptureOptions, LocationMode, ThreadStatus

    binary = threads_bin("O2")
    options = AnalysisOptions(mode=LocationMode.DISABLED)
    with Target(binary, {"read": 2, "cond": 2, "sleep": 1}).wait_ready() as target:
        with Analyzer(options) as analyzer:
            settled = capture_process(
                CaptureOptions(pid=target.pid), settle=analyzer.settle, after=after_capture
            )
            ok = [t for t in settled.threads if t.status is ThreadStatus.OK]
            assert len(ok) == 6
            assert all(t.stack == b"" and t.unwound is not None for t in ok)
            assert all(len(t.unwound.frames) >= 3 for t in ok)
            from_settled = analyzer.analyze(settled)
        raw = capture_process(CaptureOptions(pid=target.pid), after=after_capture)
        assert all(t.stack and t.unwound is None for t in raw.threads)
        with Analyzer(options) as analyzer:
            from_raw = analyzer.analyze(raw)

    def frames(report):
        return {t.tid: [(f.pc, f.function) for f in t.frames] for t in report.threads}

    def shape(report):
        return [
            # Context is what the thread was doing at each capture: a sleep resumed after the
            # first capture's stop is in restart_syscall at the second.
            dataclasses.replace(
                t, frames=(), pause_us=None, stack_bounds=None, context=None, blocked_in=None
            )
            for t in report.threads
        ]

    assert frames(from_settled) == frames(from_raw)
    assert shape(from_settled) == shape(from_raw)


def test_the_library_entry_point_is_exported_and_loaded_on_use():
    """`import stackdump` loads no other module (the CLI imports it before it can catch a
    Ctrl-C); every name of `__all__` resolves to the library's (issue 29)."""
    loaded = {m for m in _imported_by("stackdump") if m.startswith("stackdump")}
    assert loaded == {"stackdump"}, loaded
    import stackdump
    from stackdump import api

    assert all(getattr(stackdump, name) is not None for name in stackdump.__all__)
    assert stackdump.dump is api.dump and stackdump.CoreFile is api.CoreFile


def _local_imports():
    """(file, line, module, whether a comment says why) of each import inside a function."""
    import ast
    from pathlib import Path

    root = Path(__file__).parent.parent / "stackdump"
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().split("\n")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    module = sub.module if isinstance(sub, ast.ImportFrom) else sub.names[0].name
                    yield path.relative_to(root.parent), sub.lineno, module, _said(lines, sub)


def _said(lines, node) -> bool:
    """A comment on the import, on another import of its block, or just above the block."""
    at = node.lineno - 1
    while at > 0 and lines[at - 1].strip().startswith(("from ", "import ")):
        at -= 1
    block = lines[at : node.end_lineno]
    return any("#" in line for line in block) or lines[at - 1].strip().startswith("#")


def test_imports_inside_functions_are_few_and_say_why():
    """The layer rules hold at load time only if every import is at the top (issue 29):
    a function imports only an optional or heavy dependency, with a comment saying why, and
    never one of stackdump's modules (but the entry point, which must install its signal
    handlers before the CLI's imports)."""
    found = list(_local_imports())
    ours = [f"{p} {m}" for p, _, m, _ in found if m.startswith("stackdump")]
    assert ours == ["stackdump/__main__.py stackdump"], ours
    unsaid = [f"{p}:{n} {m}" for p, n, m, said in found if not said]
    assert unsaid == [], unsaid
    allowed = ("rich", "zstandard", "elftools", "tempfile", "urllib", "shutil", "ctypes.util",
               "socket", "subprocess")  # fmt: skip
    others = [m for _, _, m, _ in found if not m.startswith(("stackdump", *allowed))]
    assert others == [], others


def test_no_function_is_longer_than_sixty_lines():
    """Issue 29: ruff checks complexity (C901) and statements (PLR0915); this checks length,
    docstring and comments included."""
    import ast
    from pathlib import Path

    root = Path(__file__).parent.parent / "stackdump"
    long = [
        f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"
        for path in sorted(root.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []


def test_only_the_go_runtime_names_go():
    """Issue 29: a runtime is one place. Outside stackdump/runtimes/, no module names Go."""
    import re
    from pathlib import Path

    root = Path(__file__).parent.parent / "stackdump"
    naming = [
        str(path.relative_to(root.parent))
        for path in sorted(root.rglob("*.py"))
        if "runtimes" not in path.relative_to(root).parts
        and re.search(r"\bGo\b|goroutine|gopclntab", path.read_text())
    ]
    assert naming == []
