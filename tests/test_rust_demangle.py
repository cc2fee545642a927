"""Rust v0 demangling against binutils' c++filt, on real symbols rustc produced."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stackdump.symbols.demangle import Demangler
from stackdump.symbols.rust_v0 import demangle_rust_v0

SYMBOLS = [
    line
    for line in (Path(__file__).parent / "data" / "rust_v0_symbols.txt").read_text().splitlines()
    if line and not line.startswith("#")
]


def test_every_symbol_matches_cxxfilt_without_crate_hashes():
    if shutil.which("c++filt") is None:
        pytest.skip("c++filt (binutils) is not installed")
    reference = subprocess.run(
        ["c++filt"], input="\n".join(SYMBOLS), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(reference) == len(SYMBOLS)
    mismatches = []
    for symbol, theirs in zip(SYMBOLS, reference):
        expected = re.sub(r"\[[0-9a-f]+\]", "", theirs)
        ours = demangle_rust_v0(symbol)
        if ours != expected:
            mismatches.append((symbol, expected, ours))
    assert not mismatches, mismatches[:5]


def test_known_examples_from_the_v0_documentation():
    assert demangle_rust_v0("_RNvCs15kBYyAo9fc_7mycrate7example") == "mycrate::example"
    assert (
        demangle_rust_v0(
            "_RNvXCs15kBYyAo9fc_7mycrateNtB2_7ExampleNtNtCs6h1mbLU8gE3_4core3fmt5Debug3fmt"
        )
        == "<mycrate::Example as core::fmt::Debug>::fmt"
    )
    assert Demangler().demangle("_RNvCs15kBYyAo9fc_7mycrate7example") == "mycrate::example"


def test_truncated_and_garbled_symbols_never_raise():
    for symbol in SYMBOLS[:40]:
        for cut in range(2, len(symbol)):
            demangle_rust_v0(symbol[:cut])
        demangle_rust_v0(symbol.replace("B", "Bzzzzzz_"))  # forward/absurd back references
    assert demangle_rust_v0("_RNvB_") is None  # a back reference to itself
    assert demangle_rust_v0("_R" + "A" * 5000) is None  # deep nesting is bounded
