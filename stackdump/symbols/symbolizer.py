"""pc -> SymbolizedFrame for one process, in one LocationMode, memoized per pc.

- DISABLED: the ELF symbol containing the pc; no file:line.
- FAST: adds file:line through `.debug_aranges` and the CU's line table.
- FULL: as FAST, falling back to every CU's ranges when aranges has no answer.
- FULL_WITH_INLINE: as FULL, and the functions inlined at the pc nested in the frame,
  innermost first, named from DWARF as gdb and eu-stack name them.

A function with no ELF symbol is named from DWARF in every mode but DISABLED. Most threads of
a server share most of their pcs, so results are cached per (pc, kind of frame) for the dump;
the cache belongs to one Symbolizer, hence to one mode.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from typing import Callable, Dict, Optional, Protocol, Tuple

from stackdump.elf.store import LoadedObject, ObjectStore
from stackdump.symbols.demangle import Demangler
from stackdump.types import Frame, InlinedCall, LocationMode, SymbolizedFrame

# The DWARF reader, loaded with the first location, mutex layout or runtime type asked for: a
# dump without them (DISABLED) spares its start-up ~5 ms (issue 31).
DWARF_MODULE = "stackdump.symbols.dwarf"


def dwarf_reader():
    """stackdump.symbols.dwarf, loaded on first use (DWARF_MODULE)."""
    return importlib.import_module(DWARF_MODULE)


class OwnNames(Protocol):
    """A runtime's names for the code of an object it owns (`runtimes.base.Runtime`)."""

    def frame(
        self, physical: SymbolizedFrame, frame: Frame, vaddr: int, mode: LocationMode
    ) -> Optional[SymbolizedFrame]: ...

    def call_site(self, vaddr: int) -> Optional[Tuple[str, Optional[str], Optional[int]]]: ...


class AnonymousCode(Protocol):
    """Code in no object (JIT code): which pcs, and their names where known."""

    label: str  # what such a frame names as its object

    def covers(self, pc: int) -> bool: ...

    def name(self, pc: int) -> Optional[Tuple[str, int]]: ...


class Symbolizer:
    def __init__(
        self,
        objects: ObjectStore,
        mode: LocationMode,
        anonymous: Optional[AnonymousCode],
        own_names: Callable[[LoadedObject], Optional[OwnNames]],
        cache: Optional[Dict[Tuple[int, bool], SymbolizedFrame]] = None,
        call_sites: Optional[Dict[int, tuple]] = None,
        demangler: Optional[Demangler] = None,
    ) -> None:
        """`anonymous`: names for pcs no object holds; `own_names`: the runtime that names
        an object's frames itself, asked before its symbols and DWARF (`runtimes.own_code`);
        `cache`, `call_sites`: names and call sites an earlier symbolizer in this mode gave over
        the same maps (never those of code in no object); `demangler`: one shared with earlier
        symbolizers (its names hold whatever the maps)."""
        self.objects = objects
        self.mode = mode
        self.anonymous = anonymous
        self._own_names = own_names
        self._cache = cache if cache is not None else {}
        self._call_sites = call_sites if call_sites is not None else {}
        self._demangler = demangler if demangler is not None else Demangler()

    def symbolize(self, frame: Frame) -> SymbolizedFrame:
        key = (frame.pc, frame.lookup_pc == frame.pc)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._symbolize(frame)
            # Code in no object is named afresh each time: the cache may outlive this dump
            # (sampling), and a perf map can name other code at that address a moment later.
            if self.anonymous is None or cached.module != self.anonymous.label:
                self._cache[key] = cached
        return cached

    def call_site(self, pc: int) -> Tuple[Optional[str], Optional[str], Optional[int]]:
        """(function, file, line) of the call that returns to `pc`, in the words of the
        runtime that owns the code where it has its own (a `created by` line: the physical
        function and the line of the call), else as a frame returning there is named."""
        found = self._call_sites.get(pc)
        if found is None:
            found = self._call_site(pc)
            if self.anonymous is None or not self.anonymous.covers(pc):
                self._call_sites[pc] = found
        return found

    def _call_site(self, pc: int) -> Tuple[Optional[str], Optional[str], Optional[int]]:
        frame = Frame(pc=pc)
        _, loaded, vaddr = self._locate(frame)
        own = self._own_names(loaded) if loaded is not None and vaddr is not None else None
        named = own.call_site(vaddr + (pc - frame.lookup_pc)) if own is not None else None
        if named is not None:
            return named
        found = self.symbolize(frame)
        return found.function, found.file, found.line

    def unsymbolized(self, frame: Frame) -> SymbolizedFrame:
        """The frame as `0x... in OBJECT+0xOFFSET`, reading no symbol table or DWARF (what is
        printed once symbolization was interrupted). The object is already open: unwinding
        opened it for its CFI."""
        return self._locate(frame)[0]

    def _locate(
        self, frame: Frame
    ) -> Tuple[SymbolizedFrame, Optional[LoadedObject], Optional[int]]:
        """The nameless frame, its object and the ELF address of its lookup pc."""
        hit = self.objects.lookup(frame.lookup_pc)
        if hit is None:
            code = self.anonymous
            if code is not None and code.covers(frame.lookup_pc):
                return SymbolizedFrame(frame.pc, None, code.label, None), None, None
            return SymbolizedFrame(frame.pc, None, None, None), None, None
        module, mapping, loaded = hit
        vaddr = loaded.vaddr(frame.lookup_pc, mapping)
        # The frame's own address (not pc-1) is what a person passes to addr2line.
        if vaddr is not None:
            offset = vaddr + (frame.pc - frame.lookup_pc)
        else:
            offset = frame.pc - mapping.start + mapping.offset
        return SymbolizedFrame(frame.pc, None, module.path, offset), loaded, vaddr

    def _symbolize(self, frame: Frame) -> SymbolizedFrame:
        physical, loaded, vaddr = self._locate(frame)
        code = self.anonymous
        if loaded is None and code is not None and physical.module == code.label:
            named = code.name(frame.lookup_pc)
            if named is not None:
                physical = replace(physical, function=named[0], function_offset=frame.pc - named[1])
            return physical
        if loaded is None or vaddr is None:
            return physical
        own = self._own_names(loaded)
        named_by_runtime = own.frame(physical, frame, vaddr, self.mode) if own else None
        if named_by_runtime is not None:
            return named_by_runtime
        # Not a runtime's code (or C code a runtime's binary links in): symbols and DWARF.
        found = loaded.symbols.lookup(vaddr)
        if found is not None:
            physical = replace(
                physical,
                function=self._demangler.demangle(found[0]),
                function_offset=vaddr + (frame.pc - frame.lookup_pc) - found[1],
            )
        if self.mode is LocationMode.DISABLED:
            return physical
        return self._with_locations(physical, loaded, vaddr)

    def _with_locations(
        self, physical: SymbolizedFrame, loaded: LoadedObject, vaddr: int
    ) -> SymbolizedFrame:
        dwarf = dwarf_reader().dwarf_of(loaded)
        if dwarf is None:
            return physical
        full = self.mode in (LocationMode.FULL, LocationMode.FULL_WITH_INLINE)
        cu = dwarf.cu_offset(vaddr, full)
        if cu is None:
            return physical
        if self.mode is LocationMode.FULL_WITH_INLINE:
            chain = dwarf.inline_chain(cu, vaddr)
            if chain:
                outer = chain[-1]
                return replace(
                    physical,
                    function=self._name(outer.name) or physical.function,
                    file=outer.file,
                    line=outer.line,
                    inlined=tuple(
                        InlinedCall(self._name(call.name), call.file, call.line)
                        for call in chain[:-1]
                    ),
                )
        where = dwarf.location(cu, vaddr)
        function = physical.function
        if function is None:
            function = self._name(dwarf.function_name(cu, vaddr))
        file, line = where if where else (None, None)
        return replace(physical, function=function, file=file, line=line)

    def _name(self, name: Optional[str]) -> Optional[str]:
        return self._demangler.demangle(name) if name else None
