"""ELF files as the target maps them: section tables, symbol tables, which module holds an
address, how each file is found, and the store that opens every object once.

Both `stackdump.unwind` (CFI) and `stackdump.symbols` (names, DWARF) build on this package;
neither imports the other.
"""
