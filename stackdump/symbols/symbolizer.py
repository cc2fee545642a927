"""pc -> SymbolizedFrame for one process, caching per object and per pc across threads.

Most threads of a server share most of their pcs, so results are memoized per (pc, kind of
frame). Objects are opened and their symbol tables built only when a pc falls in them.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

from stackdump.symbols.demangle import Demangler
from stackdump.symbols.elf import PARSE_ERRORS, ElfObject, SymbolTable
from stackdump.symbols.modules import Module, ModuleMap, debug_file_candidates, open_path
from stackdump.types import Frame, LocationMode, MemoryMap, SymbolizedFrame


class LoadedModule:
    """An object's ELF image plus the symbol table that names its functions."""

    def __init__(self, elf: Optional[ElfObject], symbols: SymbolTable, debug: Optional[ElfObject]):
        self.elf = elf
        self.symbols = symbols
        self.debug = debug

    def vaddr(self, pc: int, mapping: MemoryMap) -> Optional[int]:
        if self.elf is None:
            return None
        return self.elf.file_offset_to_vaddr(pc - mapping.start + mapping.offset)

    def close(self) -> None:
        for obj in (self.elf, self.debug):
            if obj is not None:
                obj.close()


_EMPTY = SymbolTable([], [], [], b"")


class Symbolizer:
    def __init__(
        self,
        pid: int,
        maps: Sequence[MemoryMap],
        vdso: Optional[bytes],
        mode: LocationMode = LocationMode.FAST,
    ) -> None:
        self.pid = pid
        self.mode = mode
        self.modules = ModuleMap(maps)
        self._vdso = vdso
        self._loaded: Dict[Tuple[str, int, str], LoadedModule] = {}
        self._cache: Dict[Tuple[int, bool], Tuple[SymbolizedFrame, ...]] = {}
        self._demangler = Demangler()

    def __enter__(self) -> Symbolizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for loaded in self._loaded.values():
            loaded.close()
        self._loaded.clear()

    def load(self, module: Module) -> LoadedModule:
        loaded = self._loaded.get(module.key)
        if loaded is None:
            loaded = self._load(module)
            self._loaded[module.key] = loaded
        return loaded

    def symbolize(self, frame: Frame) -> Tuple[SymbolizedFrame, ...]:
        key = (frame.pc, frame.activation)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._symbolize(frame)
            self._cache[key] = cached
        return cached

    def _symbolize(self, frame: Frame) -> Tuple[SymbolizedFrame, ...]:
        pc = frame.pc
        hit = self.modules.lookup(frame.lookup_pc)
        if hit is None:
            return (SymbolizedFrame(pc=pc, function=None, module=None, module_offset=None),)
        module, mapping = hit
        loaded = self.load(module)
        vaddr = loaded.vaddr(frame.lookup_pc, mapping)
        function = None
        if vaddr is not None:
            found = loaded.symbols.lookup(vaddr)
            if found is not None:
                function = self._demangler.demangle(found[0])
        # Print the frame's own address (not pc-1), as addr2line users expect.
        if vaddr is not None:
            offset = vaddr + (pc - frame.lookup_pc)
        else:
            offset = pc - mapping.start + mapping.offset
        return (
            SymbolizedFrame(pc=pc, function=function, module=module.path, module_offset=offset),
        )

    def _load(self, module: Module) -> LoadedModule:
        elf: Optional[ElfObject] = None
        try:
            if module.is_vdso:
                if self._vdso:
                    elf = ElfObject.from_bytes(self._vdso)
            else:
                path = open_path(self.pid, module)
                if path is not None:
                    elf = ElfObject.open(path)
        except PARSE_ERRORS:
            elf = None
        if elf is None:
            return LoadedModule(None, _EMPTY, None)
        symbols = _EMPTY
        debug = None
        try:
            if not elf.has_section(".symtab"):
                debug = self._open_debug_file(elf)
            if debug is not None:
                symbols = debug.symbols((".symtab",))
            if not len(symbols):
                symbols = elf.symbols()
        except PARSE_ERRORS:
            symbols = _EMPTY
        return LoadedModule(elf, symbols, debug)

    def _open_debug_file(self, elf: ElfObject) -> Optional[ElfObject]:
        for candidate in debug_file_candidates(self.pid, elf.build_id()):
            try:
                return ElfObject.open(candidate)
            except PARSE_ERRORS:
                continue
        return None
