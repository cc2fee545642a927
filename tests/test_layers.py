"""Issue 14: the packages import one way. `stackdump.unwind` (CFI, frame walks) and
`stackdump.symbols` (names, DWARF) both build on `stackdump.elf`; neither imports the other,
and neither imports the live-process modules (capture, ptrace, /proc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

LIVE = ("stackdump.capture", "stackdump.passive", "stackdump.remote", "stackdump.proc")


def _imported_by(module: str):
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "module,forbidden",
    [
        ("stackdump.unwind.unwinder", ("stackdump.symbols", *LIVE)),
        ("stackdump.unwind.cfi_source", ("stackdump.symbols", *LIVE)),
        ("stackdump.symbols.symbolizer", ("stackdump.unwind", *LIVE)),
        ("stackdump.elf.store", ("stackdump.unwind", "stackdump.symbols", *LIVE)),
    ],
)
def test_layer_imports_only_downwards(module, forbidden):
    loaded = _imported_by(module)
    assert module in loaded
    wrong = sorted(name for name in loaded if name.startswith(forbidden))
    assert wrong == []


_ANALYZE_EXITED = """
import dataclasses, json, os, signal, sys
from stackdump.engine import DumpOptions, analyze, capture_process
from stackdump.types import LocationMode

pid = int(sys.argv[1])
options = DumpOptions(pid=pid, mode=LocationMode.FAST, cache_dir=None)
snapshot = capture_process(options)
snapshot.files.close()
os.kill(pid, signal.SIGKILL)
# The process is gone; its files are resolved from this machine's paths.
snapshot = dataclasses.replace(snapshot, files=None)
opened = []
sys.addaudithook(lambda event, args: event == "open" and opened.append(str(args[0])))
report = analyze(snapshot, options)
print(json.dumps({
    "proc": [p for p in opened if p.startswith("/proc")],
    "frames": {t.tid: [f.function for f in t.frames] for t in report.threads},
}))
"""


def test_analyze_needs_no_live_process(live, threads_bin):
    """analyze() takes a snapshot, no pid: run on one whose process has exited, with files
    resolved from the host, it opens no /proc path and still names every frame."""
    import inspect
    import json

    from helpers import Target

    from stackdump.engine import analyze

    assert "pid" not in inspect.signature(analyze).parameters
    with Target(threads_bin("O2"), {"read": 1}).wait_ready() as target:
        out = subprocess.run(
            [sys.executable, "-c", _ANALYZE_EXITED, str(target.pid)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        target.proc.wait()
    result = json.loads(out)
    assert result["proc"] == []
    frames = result["frames"][str(target.tid("read"))]
    assert frames[1:3] == ["blocking_read", "read_main"], frames
