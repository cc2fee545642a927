"""CFI by absolute address in the target: the row for a pc, the start of its function, and
the code bytes the call-site checks read, over the objects of an `ObjectStore`.

Rows are memoized here, once, by absolute pc (a server's threads share most of their pcs);
each object's `CfiTable` is made on first use and kept on its `LoadedObject`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

from stackdump.elf.store import LoadedObject, ObjectStore
from stackdump.escape import quote
from stackdump.unwind.cfi import CfiRow, CfiTable, OwnRows

OwnCode = Callable[[LoadedObject], Optional[OwnRows]]


def cfi_table(loaded: LoadedObject, own_rows: OwnCode) -> Optional[CfiTable]:
    elf = loaded.elf
    if elf is None:
        return None
    return loaded.derived(
        "cfi", lambda: CfiTable(elf, loaded.debug, loaded.cache, own_rows(loaded))
    )


class CfiSource:
    """The unwinder's view of a process's objects (a `recover.CodeSource` too)."""

    def __init__(
        self,
        store: ObjectStore,
        own_rows: OwnCode,
        rows: Optional[Dict[int, Any]] = None,
        starts: Optional[Dict[int, Optional[int]]] = None,
    ) -> None:
        """`own_rows`: the runtime whose own tables give an object's rows, asked before
        its CFI (`runtimes.own_code`); `rows`, `starts`: the memos of rows and function starts
        by pc, when an earlier source over the same maps filled them (sampling)."""
        self.store = store
        self._own_rows = own_rows
        self._rows: Dict[int, Optional[CfiRow]] = rows if rows is not None else {}
        self._starts: Dict[int, Optional[int]] = starts if starts is not None else {}

    def row(self, pc: int) -> Optional[CfiRow]:
        """The CFI row for an absolute pc in the target, or None."""
        try:
            return self._rows[pc]
        except KeyError:
            pass
        found = self._table_of(pc)
        row = found[0].row(found[1]) if found is not None else None
        if row is not None and row.bad:
            where = self._object_name(pc)
            row = dataclasses.replace(row, bad=f"bad CFI for pc 0x{pc:x} in {where}: {row.bad}")
        self._rows[pc] = row
        return row

    def function_start(self, pc: int) -> Optional[int]:
        """Start of the function holding an absolute pc, by its FDE, else by its symbol
        (code built without unwind tables has no FDE). Memoized: 100,000 coroutines ask it of
        the few pcs they are parked at."""
        try:
            return self._starts[pc]
        except KeyError:
            start = self._starts[pc] = self._function_start(pc)
            return start

    def _function_start(self, pc: int) -> Optional[int]:
        resolved = self.store.resolve(pc)
        if resolved is None:
            return None
        loaded, vaddr = resolved
        table = cfi_table(loaded, self._own_rows)
        start = table.function_start(vaddr) if table is not None else None
        if start is None:
            symbol = loaded.symbols.lookup(vaddr)
            start = symbol[1] if symbol is not None else None
        return None if start is None else pc - vaddr + start

    def code(self, address: int, size: int) -> bytes:
        return self.store.code(address, size)

    def problem(self, pc: int, ending: bool = False) -> str:
        """Why no CFI describes pc ('' when nothing is known): the object's own problem;
        with `ending` (the frame pointer ended the walk there), also that the object has an
        FDE table in which no FDE covers pc (a function's code has one; a damaged FDE's
        range may no longer cover it), so that the end is not taken for a whole stack."""
        known = self.store.problem(pc)
        if known or not ending:
            return known
        found = self._table_of(pc)
        if found is not None and found[0].indexed_by_header:
            return f"{self._object_name(pc)}, whose .eh_frame_hdr has no FDE covering it"
        return ""

    def _object_name(self, pc: int) -> str:
        hit = self.store.lookup(pc)
        return quote(hit[0].path) if hit is not None else "its object"

    def _table_of(self, pc: int) -> Optional[Tuple[CfiTable, int]]:
        resolved = self.store.resolve(pc)
        if resolved is None:
            return None
        loaded, vaddr = resolved
        table = cfi_table(loaded, self._own_rows)
        return None if table is None else (table, vaddr)
