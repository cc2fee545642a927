"""DWARF call frame information for one object: find the FDE for a pc, compute its row.

Lookup goes through `.eh_frame_hdr`'s sorted table (found via PT_GNU_EH_FRAME, so it works
for the vDSO image too) and parses only the FDE it points at (~0.3 ms, against ~430 ms to
parse all of libc's `.eh_frame`). Without a header, or for `.debug_frame`, an index of every
FDE is built once per object and dump.

Rows are computed by our own interpreter of the CFA instructions (DWARF 5 section 6.4.2),
stopping at the target pc; the CIE and FDE bytes are parsed by `cfi_entries.py`.
"""

from __future__ import annotations

import array
import bisect
import struct
from typing import Dict, List, Optional, Protocol, Tuple

from stackdump.arch import X86_64, Arch, for_elf_machine
from stackdump.cache import DiskCache
from stackdump.elf.dwarf_sections import section_stream
from stackdump.elf.image import PARSE_ERRORS, PT_GNU_EH_FRAME, ElfObject
from stackdump.records import frozen
from stackdump.unwind.cfi_entries import CfiEntries, Cie, Fde, covering

# Rule kinds for a register (DWARF 5 section 6.4.1).
SAME = "same"
UNDEFINED = "undefined"
OFFSET = "offset"  # saved at CFA+N
VAL_OFFSET = "val_offset"  # value is CFA+N
REGISTER = "register"  # value is in register N
EXPRESSION = "expression"  # saved at the address the expression computes
VAL_EXPRESSION = "val_expression"  # value is what the expression computes

Rule = Tuple[str, object]

# CFA instruction opcodes (DWARF 5 figure 7.29): ints, so every pyelftools version matches.
ADVANCE_LOC, OFFSET_OP, RESTORE = 0x40, 0x80, 0xC0
NOP, SET_LOC, ADVANCE_LOC1, ADVANCE_LOC2, ADVANCE_LOC4 = 0x00, 0x01, 0x02, 0x03, 0x04
OFFSET_EXTENDED, RESTORE_EXTENDED, UNDEFINED_OP, SAME_VALUE_OP = 0x05, 0x06, 0x07, 0x08
REGISTER_OP, REMEMBER_STATE, RESTORE_STATE, DEF_CFA = 0x09, 0x0A, 0x0B, 0x0C
DEF_CFA_REGISTER, DEF_CFA_OFFSET, DEF_CFA_EXPRESSION, EXPRESSION_OP = 0x0D, 0x0E, 0x0F, 0x10
OFFSET_EXTENDED_SF, DEF_CFA_SF, DEF_CFA_OFFSET_SF = 0x11, 0x12, 0x13
VAL_OFFSET_OP, VAL_OFFSET_SF, VAL_EXPRESSION_OP = 0x14, 0x15, 0x16
GNU_ARGS_SIZE, GNU_NEGATIVE_OFFSET_EXTENDED = 0x2E, 0x2F
# DW_CFA_AARCH64_negate_ra_state (SPARC's GNU_window_save number): the return address is
# signed (pointer authentication) from here, or no longer.
AARCH64_NEGATE_RA_STATE = 0x2D

_MAX_STATE_DEPTH = 64


class CfiError(Exception):
    """The CFI of this pc is malformed or uses what we do not support."""


@frozen
class CfiRow:
    """How to find the caller's frame at one pc.

    `cfa` is ("reg", (regnum, offset)) or ("expr", bytes). Register rules map DWARF register
    numbers to (kind, argument); a register with no rule keeps its value (callee-saved
    convention) unless it is the return address column.
    """

    cfa: Tuple[str, object]
    rules: Tuple[Tuple[int, Rule], ...]
    ra_column: int
    signal_frame: bool
    ra_signed: bool = False  # aarch64: the saved return address carries a signature
    # Not "" when the CFI that should describe this pc is malformed (why, and where): the
    # walk stops there with unwind_status=bad_cfi instead of guessing.
    bad: str = ""
    fde: str = ""  # where the row comes from ("the FDE at .eh_frame+0x144"), for messages


def bad_row(why: str) -> CfiRow:
    return CfiRow(("reg", (0, 0)), (), 0, False, bad=why)


class _State:
    __slots__ = ("cfa", "rules", "ra_signed")

    def __init__(self, cfa, rules: Dict[int, Rule], ra_signed: bool = False) -> None:
        self.cfa = cfa
        self.rules = rules
        self.ra_signed = ra_signed

    def copy(self) -> _State:
        return _State(self.cfa, dict(self.rules), self.ra_signed)


def _execute(
    instructions,
    state: _State,
    initial: Optional[_State],
    cie: Cie,
    start: int,
    target: Optional[int],
) -> int:
    """Run instructions from `start` until the location passes `target` (None: all)."""
    caf = cie.code_alignment_factor
    daf = cie.data_alignment_factor
    loc = start
    stack: List[_State] = []
    for op, a in instructions:
        if op in (ADVANCE_LOC, ADVANCE_LOC1, ADVANCE_LOC2, ADVANCE_LOC4):
            loc += a[0] * caf
        elif op == SET_LOC:
            loc = a[0]
        else:
            _apply(op, a, state, initial, stack, daf)
            continue
        if target is not None and loc > target:
            break
    return loc


# Instructions that set one register's rule: opcode -> its rule, from (operands, data
# alignment factor). The register is the first operand.
_REGISTER_RULES = {
    OFFSET_OP: lambda a, daf: (OFFSET, a[1] * daf),
    OFFSET_EXTENDED: lambda a, daf: (OFFSET, a[1] * daf),
    OFFSET_EXTENDED_SF: lambda a, daf: (OFFSET, a[1] * daf),
    GNU_NEGATIVE_OFFSET_EXTENDED: lambda a, daf: (OFFSET, -a[1] * daf),
    VAL_OFFSET_OP: lambda a, daf: (VAL_OFFSET, a[1] * daf),
    VAL_OFFSET_SF: lambda a, daf: (VAL_OFFSET, a[1] * daf),
    UNDEFINED_OP: lambda a, daf: (UNDEFINED, None),
    SAME_VALUE_OP: lambda a, daf: (SAME, None),
    REGISTER_OP: lambda a, daf: (REGISTER, a[1]),
    EXPRESSION_OP: lambda a, daf: (EXPRESSION, bytes(a[1])),
    VAL_EXPRESSION_OP: lambda a, daf: (VAL_EXPRESSION, bytes(a[1])),
}
_CFA_OPS = (DEF_CFA, DEF_CFA_SF, DEF_CFA_REGISTER, DEF_CFA_OFFSET, DEF_CFA_OFFSET_SF,
            DEF_CFA_EXPRESSION)  # fmt: skip


def _apply(
    op: int, a, state: _State, initial: Optional[_State], stack: List[_State], daf: int
) -> None:
    rule = _REGISTER_RULES.get(op)
    if rule is not None:
        state.rules[a[0]] = rule(a, daf)
    elif op in (RESTORE, RESTORE_EXTENDED):
        if initial is not None and a[0] in initial.rules:
            state.rules[a[0]] = initial.rules[a[0]]
        else:
            state.rules.pop(a[0], None)
    elif op in _CFA_OPS:
        state.cfa = _new_cfa(op, a, state.cfa, daf)
    elif op == REMEMBER_STATE:
        if len(stack) >= _MAX_STATE_DEPTH:
            raise CfiError("remember_state nested too deep")
        stack.append(state.copy())
    elif op == RESTORE_STATE:
        if not stack:
            raise CfiError("restore_state without remember_state")
        saved = stack.pop()
        state.cfa, state.rules, state.ra_signed = saved.cfa, saved.rules, saved.ra_signed
    elif op == AARCH64_NEGATE_RA_STATE:
        state.ra_signed = not state.ra_signed
    elif op not in (NOP, GNU_ARGS_SIZE):  # args_size matters to exception handling only
        raise CfiError(f"unsupported CFA instruction 0x{op:02x}")


def _new_cfa(op: int, a, cfa, daf: int):
    """The CFA rule after one of the `_CFA_OPS`."""
    if op == DEF_CFA:
        return ("reg", (a[0], a[1]))
    if op == DEF_CFA_SF:
        return ("reg", (a[0], a[1] * daf))
    if op == DEF_CFA_REGISTER:
        return ("reg", (a[0], cfa[1][1] if cfa and cfa[0] == "reg" else 0))
    if op == DEF_CFA_EXPRESSION:
        return ("expr", bytes(a[0]))
    if not cfa or cfa[0] != "reg":
        raise CfiError("CFA offset without a CFA register")
    return ("reg", (cfa[1][0], a[0] * daf if op == DEF_CFA_OFFSET_SF else a[0]))


def row_for(fde: Fde, vaddr: int, arch: Arch, name: str = "") -> CfiRow:
    """The row at vaddr of an FDE; `name` says where the FDE is, for messages."""
    cie = fde.cie
    initial = _State(None, {})
    _execute(cie.instructions, initial, None, cie, 0, None)
    state = initial.copy()
    _execute(fde.instructions, state, initial, cie, fde.initial_location, vaddr)
    if state.cfa is None:
        raise CfiError("no CFA rule")
    return CfiRow(
        cfa=state.cfa,
        rules=tuple(sorted(state.rules.items())),
        ra_column=cie.return_address_register,
        signal_frame=b"S" in cie.augmentation,
        ra_signed=state.ra_signed,
        fde=name,
    )


class OwnRows(Protocol):
    """A runtime's own unwind tables for an object whose code it owns (`runtimes/`)."""

    def cfi_row(self, vaddr: int) -> Optional[CfiRow]: ...

    def function_start(self, vaddr: int) -> Optional[int]: ...


class CfiTable:
    """The call frame information of one ELF object, looked up by ELF virtual address."""

    def __init__(
        self,
        elf: ElfObject,
        debug: Optional[ElfObject],
        cache: Optional[DiskCache],
        own: Optional[OwnRows],
    ) -> None:
        """`cache`: where the index of an object without .eh_frame_hdr (.debug_frame-only
        binaries) is kept by the object's identity, built once. `own`: a runtime's tables,
        asked first (they describe code no FDE does)."""
        self._elf = elf
        self._debug = debug
        self._cache = cache if cache is not None else DiskCache(None)
        self._arch = for_elf_machine(elf.machine) or X86_64
        self._eh: Optional[CfiEntries] = None
        self._hdr_table = b""  # .eh_frame_hdr's sorted (initial location, FDE) pairs
        self._hdr_vaddr = 0
        self._eh_vaddr = 0
        self._full: Optional[_FdeIndex] = None
        self._full_cfi: Optional[CfiEntries] = None
        self.indexes_built = 0  # full FDE indexes built (not loaded from the cache): tests
        self._own = own
        self._setup_eh_frame()

    @property
    def indexed_by_header(self) -> bool:
        """Whether the object's FDEs are found through .eh_frame_hdr (it has CFI)."""
        return self._eh is not None and bool(self._hdr_table)

    def row(self, vaddr: int) -> Optional[CfiRow]:
        """The CFI row at vaddr, or None when nothing describes it: the owning runtime's,
        else the FDE's. Not memoized here: `cfi_source.CfiSource` keeps the one memo, by
        absolute pc."""
        own = self._own.cfi_row(vaddr) if self._own is not None else None
        return own or self.fde_row(vaddr)

    def fde_row(self, vaddr: int) -> Optional[CfiRow]:
        """The row the FDE covering vaddr gives; None when no FDE covers it; a `bad_row`
        when the FDE that should does not decode or uses what no unwinder knows."""
        try:
            fde = self._find_fde(vaddr)
        except _Malformed as e:
            return bad_row(str(e))
        except PARSE_ERRORS:
            return bad_row("the FDE for this pc does not decode")
        if fde is None:
            return None
        name = self._fde_name(fde)
        try:
            return row_for(fde, vaddr, self._arch, name)
        except (CfiError, *PARSE_ERRORS) as e:
            why = str(e) if isinstance(e, CfiError) else "its instructions do not decode"
            return bad_row(f"{name}: {why}")

    def _fde_name(self, fde: Fde) -> str:
        if self.indexed_by_header:
            section = ".eh_frame"
        else:
            section = self._full.section if self._full is not None else "CFI"
        return f"the FDE at {section}+0x{fde.offset:x}"

    def function_start(self, vaddr: int) -> Optional[int]:
        """Where the function holding vaddr begins: the owning runtime's answer, else its
        FDE's start."""
        start = self._own.function_start(vaddr) if self._own is not None else None
        if start is not None:
            return start
        try:
            fde = self._find_fde(vaddr)
        except PARSE_ERRORS:
            return None
        return fde.initial_location if fde is not None else None

    def _setup_eh_frame(self) -> None:
        try:
            hdr_vaddr, hdr = self._eh_frame_hdr()
            if hdr is None:
                return
            version, ptr_enc, count_enc, table_enc = hdr[0], hdr[1], hdr[2], hdr[3]
            if version != 1 or ptr_enc != 0x1B or count_enc != 0x03 or table_enc != 0x3B:
                return  # not the layout every linker emits: use the full index instead
            eh_frame_ptr, count = struct.unpack_from("<iI", hdr, 4)
            eh_frame_vaddr = hdr_vaddr + 4 + eh_frame_ptr
            table = hdr[12 : 12 + 8 * count]
            if len(table) < 8 * count:
                return
            eh_stream, eh_size = self._elf.vaddr_view(eh_frame_vaddr)
            if eh_stream is None:
                return
            self._eh = CfiEntries(eh_stream, eh_size, eh_frame_vaddr, eh=True)
            # The table stays packed, searched in place: a big binary has 200,000 FDEs.
            self._hdr_table = table
            self._hdr_vaddr = hdr_vaddr
            self._eh_vaddr = eh_frame_vaddr
        except PARSE_ERRORS:
            self._eh = None

    def _eh_frame_hdr(self) -> Tuple[int, Optional[bytes]]:
        for header in self._elf.program_headers:
            if header.type == PT_GNU_EH_FRAME:
                return header.vaddr, self._elf.segment_bytes(header)
        return 0, None

    def _find_fde(self, vaddr: int) -> Optional[Fde]:
        if self.indexed_by_header:
            found = _table_lookup(self._hdr_table, vaddr - self._hdr_vaddr)
            if found is not None:
                start, offset = found
                at = self._hdr_vaddr + offset - self._eh_vaddr
                try:
                    entry = self._eh.at(at)
                except PARSE_ERRORS:
                    raise _Malformed(f"the FDE at .eh_frame+0x{at:x} does not decode") from None
                if not isinstance(entry, Fde):
                    raise _Malformed(f".eh_frame+0x{at:x}, which .eh_frame_hdr names, is no FDE")
                if entry.initial_location & _MASK != (self._hdr_vaddr + start) & _MASK:
                    # The two tables disagree on where the function starts: one is damaged.
                    raise _Malformed(
                        f"the FDE at .eh_frame+0x{at:x} starts at "
                        f"0x{entry.initial_location & _MASK:x}, .eh_frame_hdr says "
                        f"0x{(self._hdr_vaddr + start) & _MASK:x}"
                    )
                if entry.covers(vaddr):
                    return entry
            return None
        return self._find_in_full_index(vaddr)

    def _find_in_full_index(self, vaddr: int) -> Optional[Fde]:
        if self._full is None:
            identity = self._elf.identity()
            key = f"{identity}/fde-index" if identity else None
            self._full = self._cache.fetch(key, _FdeIndex, self._build_full_index) or _FdeIndex()
            self._full_cfi = self._section_cfi(self._full)
        index = self._full
        i = bisect.bisect_right(index.starts, vaddr) - 1
        if i < 0 or vaddr >= index.ends[i]:
            return None
        return covering(self._full_cfi, index.offsets[i], vaddr)

    def _sources(self):
        """(ELF object, section name, is .eh_frame) in the order the index looks."""
        for number, source in enumerate((self._elf, self._debug)):
            if source is not None:
                for name, eh in ((".eh_frame", True), (".debug_frame", False)):
                    yield number, source, name, eh

    def _build_full_index(self) -> _FdeIndex:
        """Every FDE of .eh_frame, else of .debug_frame (object's, then debug file's): its
        range and its offset in the section, parsed once (pyelftools parses every entry)."""
        self.indexes_built += 1
        for number, source, name, eh in self._sources():
            cfi = _section_cfi(source, name, eh)
            if cfi is None:
                continue
            try:
                fdes = list(cfi.fdes())
            except PARSE_ERRORS:
                continue
            if fdes:
                return _FdeIndex.of(fdes, number, name)
        return _FdeIndex()

    def _section_cfi(self, index: _FdeIndex) -> Optional[CfiEntries]:
        for number, source, name, eh in self._sources():
            if number == index.source and name == index.section:
                return _section_cfi(source, name, eh)
        return None


class _FdeIndex:
    """Sorted FDE ranges and each FDE's offset in its section, in packed arrays, and which
    section they index (the disk cache holds it; the FDEs are parsed one at a time)."""

    SECTIONS = (".eh_frame", ".debug_frame")

    def __init__(self, starts=None, ends=None, offsets=None, source: int = 0, section: str = ""):
        self.starts = starts if starts is not None else array.array("Q")
        self.ends = ends if ends is not None else array.array("Q")
        self.offsets = offsets if offsets is not None else array.array("Q")
        self.source = source
        self.section = section

    @classmethod
    def of(cls, fdes: List[Fde], source: int, section: str) -> _FdeIndex:
        rows = sorted(
            (f.initial_location, f.initial_location + f.address_range, f.offset) for f in fdes
        )
        return cls(
            array.array("Q", [r[0] & _MASK for r in rows]),
            array.array("Q", [r[1] & _MASK for r in rows]),
            array.array("Q", [r[2] for r in rows]),
            source,
            section,
        )

    def to_fields(self) -> dict:
        where = array.array("Q", [self.source, self.SECTIONS.index(self.section)])
        return {"starts": self.starts, "ends": self.ends, "offsets": self.offsets, "where": where}

    @classmethod
    def from_fields(cls, f: dict) -> _FdeIndex:
        starts, ends, offsets, where = f["starts"], f["ends"], f["offsets"], f["where"]
        if not (len(starts) == len(ends) == len(offsets)) or len(where) != 2:
            raise ValueError("inconsistent cached FDE index")
        return cls(starts, ends, offsets, where[0], cls.SECTIONS[where[1]])


_MASK = 0xFFFF_FFFF_FFFF_FFFF


def _section_cfi(elf: ElfObject, name: str, for_eh_frame: bool) -> Optional[CfiEntries]:
    """The entries' reader over a map of the section (nothing copied), or None."""
    section = elf.section(name)
    if section is None:
        return None
    try:
        stream = section_stream(elf.stream, section, None)
        if stream is None:
            return None
        size = stream.seek(0, 2)
        stream.seek(0)
        return CfiEntries(stream, size, section.addr, eh=for_eh_frame)
    except PARSE_ERRORS:
        return None


_PAIR = struct.Struct("<ii")


class _Malformed(Exception):
    """The CFI that should describe a pc is damaged (the message says where)."""


def _table_lookup(table: bytes, location: int) -> Optional[Tuple[int, int]]:
    """(initial location, FDE offset) of the last pair of a sorted .eh_frame_hdr table whose
    initial location (both relative to the header) is <= location; None before the first."""
    lo, hi = 0, len(table) // 8
    while lo < hi:
        mid = (lo + hi) // 2
        if _PAIR.unpack_from(table, mid * 8)[0] <= location:
            lo = mid + 1
        else:
            hi = mid
    return _PAIR.unpack_from(table, (lo - 1) * 8) if lo else None
