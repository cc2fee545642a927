"""Go's own tables: function names, file:line and frame sizes from `.gopclntab`, which every
Go binary carries (also built `-ldflags=-s -w`, without symbols, DWARF or CFI), for Go 1.18
and later.

Layout (the Go runtime's runtime/symtab.go, `pcHeader` and `_func`): a header (magic
0xfffffff0 for 1.18-1.19, 0xfffffff1 for 1.20+; the pc quantum; the pointer size; the
number of functions and files; the text start, 0 since Go 1.26, so `runtime.text` or
`.text`'s address is used; offsets of the name, compilation-unit, file, pc-value and
function tables), a table of (entry offset, `_func` offset) pairs sorted by entry, and per
function a `_func` whose pc-value tables map pcs to a file index (through the function's
compilation unit), a line and the frame size (pcsp). A pc-value table is a series of (value
delta zig-zag varint, pc delta varint times the quantum) pairs, the value starting at -1.

One name per function in every mode: the runtime's own, as its tracebacks print it.
"""

from __future__ import annotations

import bisect
import struct
from typing import List, Optional, Tuple

_MAGICS = {0xFFFFFFF0: "1.18", 0xFFFFFFF1: "1.20"}
_PCDATA_INL_TREE_INDEX, _FUNCDATA_INL_TREE = 2, 3  # runtime/symtab.go
_MAX_STEPS = 1 << 20


class GoTable:
    """pc -> (function name, entry, file, line) for one Go binary."""

    def __init__(self, data: bytes, version: str, quantum: int, text: int, offsets) -> None:
        self._data = data
        self._read = None  # vaddr, size -> the binary's bytes there (inline trees)
        self._gofunc_candidates: Tuple[int, ...] = ()
        self._gofunc: Optional[int] = None  # where funcdata offsets count from; 0: unknown
        self._v120 = version == "1.20"
        self._quantum = quantum
        self._text = text
        self._names, self._cus, self._files, self._pcs, self._funcs = offsets
        nfunc = self._nfunc
        table = data[self._funcs : self._funcs + 8 * (nfunc + 1)]
        pairs = list(struct.iter_unpack("<II", table[: len(table) // 8 * 8]))
        self._entries = [text + entry for entry, _ in pairs]
        self._func_offsets = [off for _, off in pairs]

    @classmethod
    def parse(cls, data: bytes, text_start: Optional[int] = None) -> Optional[GoTable]:
        if len(data) < 72:
            return None
        magic, _, _, quantum, ptr_size = struct.unpack_from("<IBBBB", data)
        if magic not in _MAGICS or ptr_size != 8 or quantum not in (1, 2, 4):
            return None
        nfunc, _nfiles, text, names, cus, files, pcs, funcs = struct.unpack_from("<8Q", data, 8)
        if max(names, cus, files, pcs, funcs) >= len(data) or nfunc > len(data) // 8:
            return None
        if not text and text_start is not None:
            text = text_start  # Go 1.26 and later write 0 there
        return cls(data, _MAGICS[magic], quantum, text, (names, cus, files, pcs, funcs))

    @property
    def _nfunc(self) -> int:
        return struct.unpack_from("<Q", self._data, 8)[0]

    def lookup(self, pc: int) -> Optional[Tuple[str, int, Optional[str], Optional[int]]]:
        """(name, entry, file, line) of the function holding pc (file and line None when the
        tables do not say), or None outside every function."""
        func = self._func_at(pc)
        if func is None:
            return None
        try:
            entry_off, name_off = struct.unpack_from("<Ii", self._data, func)
            entry = self._text + entry_off
            return (self._string(self._names + name_off), entry, *self._location(func, entry, pc))
        except struct.error:
            return None

    def with_funcdata(self, read, candidates: Tuple[int, ...]) -> GoTable:
        """Lets inline trees be read: `read(vaddr, size)` reads the binary, `candidates` are
        the addresses `runtime.moduledata` holds, one of which is its `gofunc`."""
        self._read, self._gofunc_candidates = read, candidates
        return self

    def inline_chain(self, pc: int) -> List[Tuple[str, Optional[str], Optional[int]]]:
        """The functions inlined at pc, innermost first, each with where execution stands in
        it, then the physical function with its own line (the outermost call site): Go's
        inline tree (FUNCDATA_InlTree, indexed by PCDATA_InlTreeIndex at pc, each entry's
        parentPc the pc to look up its caller at), as the runtime's tracebacks walk it.
        Empty when nothing is inlined at pc or the tree cannot be read."""
        func = self._func_at(pc)
        gofunc = self._gofunc_base()
        if func is None or not gofunc:
            return []
        entry = self._text + struct.unpack_from("<I", self._data, func)[0]
        tree = self._funcdata(func, _FUNCDATA_INL_TREE)
        index_table = self._pcdata(func, _PCDATA_INL_TREE_INDEX)
        if tree is None or not index_table:
            return []
        size = 16 if self._v120 else 20
        chain: List[Tuple[str, Optional[str], Optional[int]]] = []
        at = pc
        for _ in range(64):  # inlining depth is bounded by the compiler far below this
            index = self._value(index_table, entry, at)
            if index is None or index < 0:
                break
            record = self._read(gofunc + tree + size * index, size)
            if len(record) != size:
                return []
            if self._v120:
                name_off, parent_pc = struct.unpack_from("<ii", record, 4)
            else:
                name_off, parent_pc = struct.unpack_from("<ii", record, 12)
            chain.append((self._string(self._names + name_off), *self._location(func, entry, at)))
            at = entry + parent_pc
        if not chain:
            return []
        name_off = struct.unpack_from("<i", self._data, func + 4)[0]
        chain.append((self._string(self._names + name_off), *self._location(func, entry, at)))
        return chain

    def _func_at(self, pc: int) -> Optional[int]:
        """Where the _func of the function holding pc is, or None outside every function."""
        i = bisect.bisect_right(self._entries, pc) - 1
        if i < 0 or i >= len(self._entries) - 1:  # the last entry only ends the text
            return None
        return self._funcs + self._func_offsets[i]

    def _location(self, func: int, entry: int, pc: int) -> Tuple[Optional[str], Optional[int]]:
        pcfile, pcln = struct.unpack_from("<II", self._data, func + 20)
        cu_offset = struct.unpack_from("<I", self._data, func + 32)[0]
        file_index = self._value(pcfile, entry, pc)
        line = self._value(pcln, entry, pc)
        file = None
        if file_index is not None and file_index >= 0:
            at = self._cus + 4 * (cu_offset + file_index)
            if at + 4 <= len(self._data):
                file_off = struct.unpack_from("<I", self._data, at)[0]
                if file_off != 0xFFFFFFFF:
                    file = self._string(self._files + file_off)
        return file, line if line and line > 0 else None

    def _tables(self, func: int) -> Tuple[int, int, int]:
        """(npcdata, nfuncdata, where the pcdata offsets start) of a _func: Go 1.20 added
        startLine before funcID, moving the rest by 4."""
        npcdata = struct.unpack_from("<I", self._data, func + 28)[0]
        tail = func + (40 if self._v120 else 36)
        return npcdata, self._data[tail + 3], tail + 4

    def _pcdata(self, func: int, index: int) -> int:
        npcdata, _, at = self._tables(func)
        if index >= npcdata or at + 4 * npcdata > len(self._data):
            return 0
        return struct.unpack_from("<I", self._data, at + 4 * index)[0]

    def _funcdata(self, func: int, index: int) -> Optional[int]:
        npcdata, nfuncdata, at = self._tables(func)
        at += 4 * npcdata
        if index >= nfuncdata or at + 4 * nfuncdata > len(self._data):
            return None
        offset = struct.unpack_from("<I", self._data, at + 4 * index)[0]
        return None if offset == 0xFFFFFFFF else offset

    def _gofunc_base(self) -> int:
        """moduledata.gofunc: of the addresses moduledata holds, the one from which the
        inline trees of sampled functions read as trees (names that start a name, parent
        pcs inside their function)."""
        if self._gofunc is not None or self._read is None:
            return self._gofunc or 0
        self._gofunc = 0
        sample = []
        step = max(1, len(self._func_offsets) // 400)
        for i in range(0, len(self._func_offsets) - 1, step):
            func = self._funcs + self._func_offsets[i]
            tree = self._funcdata(func, _FUNCDATA_INL_TREE)
            if tree is not None and self._pcdata(func, _PCDATA_INL_TREE_INDEX):
                sample.append((tree, self._entries[i + 1] - self._entries[i]))
            if len(sample) >= 16:
                break
        best = 0
        for base in self._gofunc_candidates:
            good = sum(self._plausible_call(base + tree, length) for tree, length in sample)
            if sample and good == len(sample) and good > best:
                self._gofunc, best = base, good
        return self._gofunc

    def _plausible_call(self, at: int, function_length: int) -> bool:
        size = 16 if self._v120 else 20
        record = self._read(at, size) if self._read is not None else b""
        if len(record) != size:
            return False
        name_off, parent_pc = struct.unpack_from("<ii", record, 4 if self._v120 else 12)
        name_at = self._names + name_off
        return (
            0 <= parent_pc < function_length
            and name_off >= 0
            and name_at < len(self._data)
            and self._data[name_at - 1] == 0
            and 0x21 <= self._data[name_at] < 0x7F
        )

    def frame_size(self, pc: int) -> Optional[int]:
        """How far sp is below the caller's return address slot at pc (the function's pcsp
        table: what Go's own tracebacks unwind by), or None outside every function."""
        func = self._func_at(pc)
        if func is None:
            return None
        try:
            entry_off, pcsp = struct.unpack_from("<I12xI", self._data, func)
        except struct.error:
            return None
        size = self._value(pcsp, self._text + entry_off, pc)
        return size if size is not None and 0 <= size <= 1 << 31 else None

    def _string(self, at: int) -> str:
        end = self._data.find(b"\0", at, at + 4096)
        return self._data[at : end if end >= 0 else at].decode("utf-8", "surrogateescape")

    def _value(self, table_off: int, entry: int, target: int) -> Optional[int]:
        if not table_off:
            return None
        at = self._pcs + table_off
        value, pc, first = -1, entry, True
        for _ in range(_MAX_STEPS):
            delta, at = _uvarint(self._data, at)
            if delta is None or (delta == 0 and not first):
                return None
            value += -(delta >> 1) - 1 if delta & 1 else delta >> 1
            step, at = _uvarint(self._data, at)
            if step is None:
                return None
            pc += step * self._quantum
            first = False
            if target < pc:
                return value
        return None


def _uvarint(data: bytes, at: int) -> Tuple[Optional[int], int]:
    value = shift = 0
    for _ in range(10):
        if at >= len(data):
            return None, at
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
    return None, at


def go_table(elf) -> Optional[GoTable]:
    """The `.gopclntab` of an ELF object, parsed lazily per lookup; None for a non-Go one.
    Entries are offsets from `runtime.text`: the header says where up to Go 1.25; from 1.26,
    the symbol, else the module data's lowest address inside `.text` (its minpc), not the
    start of `.text`, where a C linker puts C code first in a cgo binary."""
    data = elf.section_bytes(".gopclntab")
    if not data:
        return None
    words = _moduledata_words(elf)
    text = elf.symbol_values({"runtime.text"}).get("runtime.text")
    section = elf.section(".text")
    if text is None and section is not None:
        # moduledata's minpc (= text): the lowest address it holds inside .text.
        inside = [w for w in words if section.addr <= w < section.addr + section.size]
        text = min(inside, default=section.addr)
    table = GoTable.parse(data, text)
    if table is None:
        return None
    return table.with_funcdata(elf.read_vaddr_range, words)


def _moduledata_words(elf) -> Tuple[int, ...]:
    """The words of runtime.firstmoduledata (Go 1.27's own `.go.module` section, else the
    first place in `.noptrdata` that points at `.gopclntab`, its first field)."""
    pclntab = elf.section(".gopclntab")
    module = elf.section(".go.module")
    data = elf.section_bytes(".go.module") if module is not None else None
    if not data:
        noptr = elf.section_bytes(".noptrdata") or b""
        at = noptr.find(struct.pack("<Q", pclntab.addr)) if pclntab is not None else -1
        while at >= 0 and at % 8:
            at = noptr.find(struct.pack("<Q", pclntab.addr), at + 1)
        data = noptr[at : at + 1024] if at >= 0 else b""
    return tuple(w for (w,) in struct.iter_unpack("<Q", data[: len(data) // 8 * 8]) if w)
