"""The objects mapped into one process, each opened once per dump and shared by the
unwinder (CFI) and the symbolizer (names).

An object that cannot be opened or parsed becomes an empty `LoadedObject`: its frames degrade
to `0x… in OBJECT+0xOFFSET`, the dump goes on.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

from stackdump.symbols.elf import PARSE_ERRORS, ElfObject, SymbolTable
from stackdump.symbols.modules import Module, ModuleMap, debug_file_candidates, open_path
from stackdump.types import MemoryMap
from stackdump.unwind.cfi import CfiRow, CfiTable

_EMPTY = SymbolTable([], [], [], b"")


class LoadedObject:
    """An object's ELF image, its debug file if any, and what is derived from them lazily."""

    def __init__(self, elf: Optional[ElfObject], debug: Optional[ElfObject]) -> None:
        self.elf = elf
        self.debug = debug
        self._symbols: Optional[SymbolTable] = None
        self._cfi: Optional[CfiTable] = None

    def vaddr(self, address: int, mapping: MemoryMap) -> Optional[int]:
        if self.elf is None:
            return None
        return self.elf.file_offset_to_vaddr(address - mapping.start + mapping.offset)

    @property
    def symbols(self) -> SymbolTable:
        if self._symbols is None:
            self._symbols = self._load_symbols()
        return self._symbols

    def cfi(self) -> Optional[CfiTable]:
        if self._cfi is None and self.elf is not None:
            self._cfi = CfiTable(self.elf, self.debug)
        return self._cfi

    def _load_symbols(self) -> SymbolTable:
        try:
            if self.debug is not None:
                table = self.debug.symbols((".symtab",))
                if len(table):
                    return table
            if self.elf is not None:
                return self.elf.symbols()
        except PARSE_ERRORS:
            pass
        return _EMPTY

    def close(self) -> None:
        for obj in (self.elf, self.debug):
            if obj is not None:
                obj.close()


class ObjectCache:
    """pc -> (module, mapping, LoadedObject) for one process during one dump."""

    def __init__(self, pid: int, maps: Sequence[MemoryMap], vdso: Optional[bytes]) -> None:
        self.pid = pid
        self.modules = ModuleMap(maps)
        self._vdso = vdso
        self._loaded: Dict[Tuple[str, int, str], LoadedObject] = {}

    def __enter__(self) -> ObjectCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for loaded in self._loaded.values():
            loaded.close()
        self._loaded.clear()

    def lookup(self, address: int) -> Optional[Tuple[Module, MemoryMap, LoadedObject]]:
        hit = self.modules.lookup(address)
        if hit is None:
            return None
        module, mapping = hit
        return module, mapping, self.load(module)

    def load(self, module: Module) -> LoadedObject:
        loaded = self._loaded.get(module.key)
        if loaded is None:
            loaded = self._open(module)
            self._loaded[module.key] = loaded
        return loaded

    def cfi_row(self, pc: int) -> Optional[CfiRow]:
        """The CFI row for an absolute pc in the target, or None."""
        hit = self.lookup(pc)
        if hit is None:
            return None
        _, mapping, loaded = hit
        vaddr = loaded.vaddr(pc, mapping)
        table = loaded.cfi() if vaddr is not None else None
        return table.row(vaddr) if table is not None else None

    def _open(self, module: Module) -> LoadedObject:
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
            return LoadedObject(None, None)
        debug = None
        if not elf.has_section(".symtab") or not elf.has_section(".debug_info"):
            debug = self._open_debug_file(elf)
        return LoadedObject(elf, debug)

    def _open_debug_file(self, elf: ElfObject) -> Optional[ElfObject]:
        for candidate in debug_file_candidates(self.pid, elf.build_id()):
            try:
                return ElfObject.open(candidate)
            except PARSE_ERRORS:
                continue
        return None
