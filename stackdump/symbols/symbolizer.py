"""pc -> SymbolizedFrame for one process, memoized per pc across threads.

Most threads of a server share most of their pcs, so results are cached per (pc, kind of
frame). Objects are opened and their symbol tables built only when a pc falls in them.
"""

from __future__ import annotations

from typing import Dict, Tuple

from stackdump.symbols.demangle import Demangler
from stackdump.symbols.objects import ObjectCache
from stackdump.types import Frame, LocationMode, SymbolizedFrame


class Symbolizer:
    def __init__(self, objects: ObjectCache, mode: LocationMode = LocationMode.FAST) -> None:
        self.objects = objects
        self.mode = mode
        self._cache: Dict[Tuple[int, bool], Tuple[SymbolizedFrame, ...]] = {}
        self._demangler = Demangler()

    def symbolize(self, frame: Frame) -> Tuple[SymbolizedFrame, ...]:
        key = (frame.pc, frame.activation)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._symbolize(frame)
            self._cache[key] = cached
        return cached

    def _symbolize(self, frame: Frame) -> Tuple[SymbolizedFrame, ...]:
        pc = frame.pc
        hit = self.objects.lookup(frame.lookup_pc)
        if hit is None:
            return (SymbolizedFrame(pc=pc, function=None, module=None, module_offset=None),)
        module, mapping, loaded = hit
        vaddr = loaded.vaddr(frame.lookup_pc, mapping)
        function = None
        if vaddr is not None:
            found = loaded.symbols.lookup(vaddr)
            if found is not None:
                function = self._demangler.demangle(found[0])
        # The frame's own address (not pc-1) is what a person passes to addr2line.
        if vaddr is not None:
            offset = vaddr + (pc - frame.lookup_pc)
        else:
            offset = pc - mapping.start + mapping.offset
        return (
            SymbolizedFrame(pc=pc, function=function, module=module.path, module_offset=offset),
        )
