"""ELF symbol tables parsed by stackdump agree with binutils' nm, on real objects."""

from __future__ import annotations

import subprocess

import pytest
from helpers import compile_target

from stackdump.elf.image import ElfObject, build_symbol_table
from stackdump.symbols.demangle import Demangler


def readelf_functions(path, table=".symtab"):
    """address -> names of the defined FUNC/IFUNC symbols readelf lists in `table`."""
    out = subprocess.run(
        ["readelf", "-sW", str(path)], capture_output=True, text=True, check=True
    ).stdout
    funcs = {}
    current = None
    for line in out.splitlines():
        if line.startswith("Symbol table"):
            current = line.split("'")[1]
            continue
        parts = line.split()
        if current != table or len(parts) < 8 or parts[3] not in ("FUNC", "IFUNC"):
            continue
        if parts[6] == "UND" or int(parts[1], 16) == 0:
            continue
        funcs.setdefault(int(parts[1], 16), set()).add(parts[7].split("@")[0])
    return funcs


def test_every_function_symbol_is_found_at_its_address(build_dir):
    binary = compile_target(
        "threads.c", build_dir, "threads-O0", ["-O0", "-g", "-fno-omit-frame-pointer"]
    )
    elf = ElfObject.open(str(binary))
    try:
        table = elf.symbols()
        funcs = readelf_functions(binary)
        assert {"leaf", "middle", "outer", "spin_main"} <= set().union(*funcs.values())
        for address, names in funcs.items():
            found = table.lookup(address)
            assert found is not None and found[0] in names and found[1] == address
            found_inside = table.lookup(address + 1)
            assert found_inside is None or found_inside[1] <= address + 1
        assert table.lookup(0) is None
    finally:
        elf.close()


def test_libc_dynsym_names_read_and_skips_gaps():
    libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    elf = ElfObject.open(libc)
    try:
        table = elf.symbols((".dynsym",))
        funcs = readelf_functions(libc, ".dynsym")
        assert len(funcs) > 1000
        for address, names in funcs.items():
            found = table.lookup(address)
            assert found is not None and found[0] in names, (hex(address), names, found)
        (read_addr,) = [a for a, names in funcs.items() if "read" in names]
        assert table.lookup(read_addr)[0] == "read"
    finally:
        elf.close()


def test_truncated_symbol_table_does_not_raise():
    table = build_symbol_table(b"\x01" * 30, b"")
    assert table.lookup(0x1000) is None


@pytest.mark.parametrize(
    "mangled,plain",
    [
        ("_ZN3foo3barEv", "foo::bar()"),
        (
            "_ZNSt6vectorIiSaIiEE9push_backERKi",
            "std::vector<int, std::allocator<int> >::push_back(int const&)",
        ),
        ("main", "main"),
        ("_ZN4core3ptr13drop_in_place17h0123456789abcdefE", "core::ptr::drop_in_place"),
        (
            "_ZN66_$LT$alloc..vec..Vec$LT$T$GT$$u20$as$u20$core..ops..drop..Drop$GT$4drop"
            "17h3b3b3b3b3b3b3b3bE",
            "<alloc::vec::Vec<T> as core::ops::drop::Drop>::drop",
        ),
        ("_ZN3std2rt10lang_start17h1234567890abcdefE.llvm.42", "std::rt::lang_start"),
        ("_Znot_valid", "_Znot_valid"),
    ],
)
def test_demangle(mangled, plain):
    assert Demangler().demangle(mangled) == plain
