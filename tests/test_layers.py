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
