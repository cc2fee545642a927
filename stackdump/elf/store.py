"""The objects mapped into one process, each opened once and shared by the unwinder (CFI,
`stackdump.unwind.cfi_source`) and the symbolizer (names and DWARF, `stackdump.symbols`).

What those layers derive from an object (its CFI table, its DWARF index) is kept on the
`LoadedObject` through `derived()`, so this package needs neither of them. An object that
cannot be opened or parsed becomes an empty `LoadedObject`: its frames degrade to
`0x… in OBJECT+0xOFFSET`, the dump goes on.
"""

from __future__ import annotations

import lzma
import operator
import os
import re
import zlib
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

from stackdump.cache import DiskCache
from stackdump.elf.debuginfod import Debuginfod
from stackdump.elf.dwarf_sections import supplement_candidates
from stackdump.elf.image import ElfObject, SymbolTable, parse_errors
from stackdump.elf.modules import (
    Module,
    ModuleMap,
    build_id_candidates,
    debug_roots,
    debuglink_candidates,
)
from stackdump.escape import quote
from stackdump.notes import Notes
from stackdump.safefs import NotRegularFile
from stackdump.types import FileSource, MemoryMap, ModuleEntry, SymbolizedFrame, replaced

_EMPTY = SymbolTable([], [], [], b"")
_LATER = object()  # a pending download not allowed yet
_START = operator.attrgetter("start")
T = TypeVar("T")

# An object's key -> [its Module, frames in it, of which unnamed] (`frames_by_module`).
ModuleCounts = Dict[Tuple[str, int, str], List[Any]]


class LoadedObject:
    """An object's ELF image, its debug file if any, and what is derived from them lazily."""

    def __init__(
        self,
        elf: Optional[ElfObject],
        debug: Optional[ElfObject],
        cache: DiskCache,
        problem: str = "",
        supplements: Optional[Callable[[Optional[str], str, str], Optional[ElfObject]]] = None,
        open_found: Optional[Callable[[str], Optional[ElfObject]]] = None,
    ) -> None:
        """`supplements(debug path, name, build_id)`: the store's search for a dwz
        supplementary file. `open_found(path)`: how a file found beside this one (a .dwo,
        a .dwp) is opened: None when it is missing or unusable, skipped with a warning when
        it is not a regular file."""
        self.elf = elf
        self.open_found = open_found or try_open
        self._debug = debug
        self.origin: Optional[str] = None  # the object's path in the target's file system
        # Asked once downloads are allowed (after capture): a debug file from debuginfod.
        # (build-id, label) of the debug file still to download, and how (the store's).
        self.wanted: Optional[Tuple[str, str]] = None
        self._download: Callable[[str, str], Any] = lambda build_id, label: None
        self.warn: Callable[[str], None] = lambda message: None  # damage found in its files
        self.shown = ""  # its path as the target names it, for messages
        self._supplements = supplements
        self._opened: List[ElfObject] = []
        # Why the file cannot describe what the process mapped ('' when nothing is known).
        self.problem = problem
        self.cache = cache
        self._symbols: Optional[SymbolTable] = None
        self._source = "none"
        self._derived: Dict[str, Any] = {}

    @property
    def debug(self) -> Optional[ElfObject]:
        """The separate debug file: found locally when the object was opened, else fetched
        from debuginfod on first use once the store allows downloads."""
        if self.wanted is not None:
            found = self._download(*self.wanted)
            if found is not _LATER:
                self.wanted = None
                self._debug = found
                if found is not None:
                    self._symbols = None  # named again, from the debug file's .symtab
        return self._debug

    @property
    def debug_found(self) -> Optional[ElfObject]:
        """The debug file if one was found so far, downloading nothing."""
        return self._debug

    def vaddr(self, address: int, mapping: MemoryMap) -> Optional[int]:
        if self.elf is None:
            return None
        return self.elf.file_offset_to_vaddr(address - mapping.start + mapping.offset)

    @property
    def symbols(self) -> SymbolTable:
        if self._symbols is None:
            self._symbols = self._load_symbols()
        return self._symbols

    def derived(self, key: str, make: Callable[[], T]) -> T:
        """What another layer derives from this object (its CFI table, its DWARF index),
        made once by `make` and kept with it; `make` may return None."""
        try:
            return self._derived[key]
        except KeyError:
            value = self._derived[key] = make()
            return value

    def derived_values(self) -> Iterator[Any]:
        return iter(self._derived.values())

    @property
    def symbol_source(self) -> str:
        """Which table names this object's functions: "symtab", "dynsym" (exported
        functions only), "minidebuginfo", "none", or "unread" (symbols were not needed)."""
        return "unread" if self._symbols is None else self._source

    def _load_symbols(self) -> SymbolTable:
        self._source = "none"
        try:
            if self.debug is not None:
                table = self._cached_symbols(self.debug, (".symtab",))
                if len(table):
                    self._source = "symtab"
                    return table
            if self.elf is not None:
                if not self.elf.has_section(".symtab"):
                    table = _minidebuginfo_symbols(self.elf)
                    if table is not None and len(table):
                        self._source = "minidebuginfo"
                        return table
                table = self._cached_symbols(self.elf, (".symtab", ".dynsym"))
                if len(table):
                    self._source = "symtab" if self.elf.has_section(".symtab") else "dynsym"
                return table
        except parse_errors():
            pass
        return _EMPTY

    def _cached_symbols(self, elf: ElfObject, prefer: Tuple[str, ...]) -> SymbolTable:
        identity = elf.identity()
        key = f"{identity}/symbols/{','.join(prefer)}" if identity else None
        return self.cache.fetch(key, SymbolTable, lambda: elf.symbols(prefer))

    def find_supplement(self, name: str, build_id: str) -> Optional[ElfObject]:
        """The dwz supplementary file this object's debug info names, opened and kept open
        with it; None when it cannot be found."""
        if self._supplements is None:
            return None
        if self.debug is not None:
            path: Optional[str] = self.debug.path
        else:
            # The object as the target names it (its own path may be a pinned descriptor's):
            # a relative name is relative to its directory.
            path = self.origin or (self.elf.path if self.elf else None)
        found = self._supplements(path, name, build_id)
        if found is not None:
            self._opened.append(found)
        return found

    def close(self) -> None:
        for value in self._derived.values():
            closing = getattr(value, "close", None)
            if closing is not None:
                closing()  # what a layer opened for this object (a DWARF index's .dwo files)
        for obj in (self.elf, self._debug, *self._opened):
            if obj is not None:
                obj.close()
        self._opened.clear()


def _missing_supplement(
    debug_path: Optional[str], name: str, build_id: str, looked_in: Sequence[str]
) -> str:
    """The warning for a dwz supplementary file that is missing or is another build."""
    owner = quote(debug_path) if debug_path else "a debug file"
    where = ", ".join(quote(p) for p in looked_in) or "nowhere"
    # Debian's dbgsym packages put it in /usr/lib/debug/.dwz/TRIPLET/PACKAGE.debug, and the
    # PACKAGE-dbgsym package ships it.
    found = re.search(r"/\.dwz/[^/]+/([^/]+)\.debug$", name)
    fix = (
        f"install {found.group(1)}-dbgsym (it ships {quote(name)})"
        if found
        else f"put the file {quote(name)} with build-id {build_id} where it is looked for"
    )
    return (
        f"the debug info of {owner} refers to the dwz supplementary file {quote(name)} "
        f"(build-id {build_id}), which is not there or is another build (looked for: "
        f"{where}): functions described there are named from the symbol table, without "
        f"inlined frames from it; {fix}"
    )


class ObjectStore:
    """pc -> (module, mapping, LoadedObject) for one process: every object opened once."""

    def __init__(
        self,
        files: FileSource,
        maps: Sequence[MemoryMap],
        vdso: Optional[bytes],
        debug_dirs: Sequence[str] = (),
        cache: Optional[DiskCache] = None,
        loaded: Optional[Dict[Tuple[str, int, str], LoadedObject]] = None,
        remote: Optional[Debuginfod] = None,
        notes: Optional[Notes] = None,
        modules: Optional[ModuleMap] = None,
    ) -> None:
        """`loaded`: objects already opened, by module identity, to use and add to (an
        `engine.Analyzer` keeps them across snapshots and closes them itself). `remote`:
        where to download debug files no directory has, once `allow_downloads()`. `notes`:
        where files that were found but refused are told. `modules`: `maps` as a
        `ModuleMap`, when the caller has made it already (sampling, maps unchanged)."""
        self.notes = notes if notes is not None else Notes()
        self._remote = remote
        self._downloads = False
        self.files = files
        self.cache = cache if cache is not None else DiskCache(None)
        self.modules = modules if modules is not None else ModuleMap(maps)
        self._vdso = vdso
        self._debug_dirs = tuple(debug_dirs)
        self._debug_roots = debug_roots(files.roots, self._debug_dirs)
        self._owns_loaded = loaded is None
        self._loaded: Dict[Tuple[str, int, str], LoadedObject] = {} if loaded is None else loaded

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self._owns_loaded:
            return
        for loaded in self._loaded.values():
            loaded.close()
        self._loaded.clear()

    def allow_downloads(self, stop: Callable[[], bool] = lambda: False) -> None:
        """From now on (capture is over) debug files may come from debuginfod: those of the
        objects opened so far (every object a frame is in, once unwound) are fetched now,
        a few at a time, unless `stop()` says to give up waiting."""
        self._downloads = True
        if self._remote is None:
            return
        wanted = [
            (loaded.wanted[0], "debuginfo", loaded.wanted[1])
            for loaded in self._loaded.values()
            if loaded.wanted is not None
        ]
        self._remote.prefetch(wanted, stop)

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

    def resolve(self, address: int) -> Optional[Tuple[LoadedObject, int]]:
        """(object, ELF virtual address) of an absolute address in the target."""
        hit = self.lookup(address)
        if hit is None:
            return None
        _, mapping, loaded = hit
        vaddr = loaded.vaddr(address, mapping)
        return None if vaddr is None else (loaded, vaddr)

    def frames_by_module(self, frames: Iterable[SymbolizedFrame]) -> ModuleCounts:
        """How many of `frames` fall in each object, and how many of those are unnamed."""
        counts: ModuleCounts = {}
        for frame in frames:
            hit = self.modules.lookup(frame.pc)
            if hit is None:
                continue
            module = hit[0]
            count = counts.get(module.key)
            if count is None:
                count = counts[module.key] = [module, 0, 0]
            count[1] += 1
            count[2] += frame.function is None
        return counts

    def module_entries(
        self, counts: ModuleCounts, known: Optional[Dict[tuple, ModuleEntry]] = None
    ) -> Tuple[ModuleEntry, ...]:
        """The objects frames fall in, once each, by address, with what was found to name
        them and how many were not (`counts`, as `frames_by_module` gives them, summed).
        `known`: entries made before for the same layout (sampling), reused while what
        they say of their object still holds, only the counts made again."""
        entries = []
        for key, (module, frames_in, unknown) in counts.items():
            loaded = self.load(module)
            elf, debug = loaded.elf, loaded.debug_found
            same = (key, loaded, debug, loaded.symbol_source)
            earlier = known.get(same) if known is not None else None
            if earlier is not None:
                entries.append(replaced(earlier, frames=frames_in, unknown_frames=unknown))
                continue
            # A core records the build-ids of files this machine may not have.
            recorded = getattr(self.files, "build_id", None)
            build_id = elf.build_id() if elf is not None else None
            if build_id is None and recorded is not None:
                build_id = recorded(module)
            entries.append(
                ModuleEntry(
                    path=module.path,
                    start=module.maps[0].start,
                    end=module.maps[-1].end,
                    offset=module.maps[0].offset,
                    build_id=build_id,
                    symbols=loaded.symbol_source,
                    debug_file=debug.path if debug is not None else None,
                    dwarf=any(o is not None and o.has_section(".debug_info") for o in (elf, debug)),
                    frames=frames_in,
                    unknown_frames=unknown,
                    file_found=elf is not None,
                )
            )
            if known is not None:
                known[same] = entries[-1]
        return tuple(sorted(entries, key=_START))

    def loaded(self) -> Iterator[LoadedObject]:
        return iter(self._loaded.values())

    def code(self, address: int, size: int) -> bytes:
        """Bytes of the mapped file at an absolute address (code does not change at run
        time, so the file is as good as the process)."""
        resolved = self.resolve(address)
        if resolved is None or resolved[0].elf is None:
            # No file: code the source holds in memory (a core's trampoline page), if any.
            read_memory = getattr(self.files, "read_memory", None)
            return read_memory(address, size) if read_memory is not None else b""
        loaded, vaddr = resolved
        return loaded.elf.read_vaddr_range(vaddr, size)

    def _open(self, module: Module) -> LoadedObject:
        elf: Optional[ElfObject] = None
        path: Optional[str] = None
        try:
            if module.is_vdso:
                if self._vdso:
                    elf = ElfObject.from_bytes(self._vdso)
            else:
                path = self.files.path(module)
                if path is not None:
                    elf = self.open_found(path)
        except parse_errors():
            elf = None
        problem = _file_problem(module, path, elf) if path is not None else ""
        if elf is None:
            return LoadedObject(None, None, self.cache, problem)
        debug = None
        if not elf.has_section(".symtab") or not elf.has_section(".debug_info"):
            debug = self._open_debug_file(elf, module)
        loaded = LoadedObject(
            elf, debug, self.cache, problem, self._open_supplement, self.open_found
        )
        loaded.warn = self.notes.add
        loaded.shown = module.path
        if not module.is_vdso and self.files.roots:
            # Where the target sees the file: its split-DWARF files are looked for beside it.
            loaded.origin = f"{self.files.roots[0]}{module.path}"
        build_id = elf.build_id()
        if debug is None and self._remote is not None and build_id and not module.is_vdso:
            loaded.wanted = (build_id, os.path.basename(module.path))
            loaded._download = self._download
        return loaded

    def _download(self, build_id: str, label: str) -> Any:
        """The debug file debuginfod has for build_id, opened; _LATER during capture."""
        if not self._downloads or self._remote is None:
            return _LATER
        return self._fetched(build_id, label)

    def _fetched(self, build_id: str, label: str) -> Optional[ElfObject]:
        """The debug file debuginfod has for build_id (debuginfod serves a dwz file the same
        way), opened, its build-id checked again."""
        assert self._remote is not None
        path = self._remote.find(build_id, "debuginfo", label)
        return self._open_with_build_id(path, build_id) if path is not None else None

    def _open_supplement(
        self, debug_path: Optional[str], name: str, build_id: str
    ) -> Optional[ElfObject]:
        candidates = supplement_candidates(
            debug_path, name, build_id, self.files.roots, self._debug_roots
        )
        for candidate in candidates:
            found = self._open_with_build_id(candidate, build_id)
            if found is not None:
                return found
        if self._downloads and self._remote is not None:
            found = self._fetched(build_id, os.path.basename(name))
            if found is not None:
                return found
        self.notes.add(_missing_supplement(debug_path, name, build_id, candidates))
        return None

    def problem(self, pc: int) -> str:
        """Why the object holding pc cannot describe it ('' when nothing is known)."""
        hit = self.lookup(pc)
        if hit is None:
            return ""
        module, _, loaded = hit
        return f"{module.path}: {loaded.problem}" if loaded.problem else ""

    def _open_debug_file(self, elf: ElfObject, module: Module) -> Optional[ElfObject]:
        build_id = elf.build_id()
        for candidate in build_id_candidates(self._debug_roots, build_id):
            debug = self.open_found(candidate)
            if debug is not None:
                if build_id is None or debug.build_id() in (None, build_id):
                    return debug
                debug.close()
        link = _debuglink(elf)
        if link is None:
            return None
        name, crc = link
        candidates = debuglink_candidates(self.files.roots, module.path, name, self._debug_dirs)
        for candidate in candidates:
            debug = self.open_found(candidate)
            if debug is None:
                continue
            if _crc32(debug) == crc:
                return debug
            debug.close()
        return None

    def open_found(self, path: str) -> Optional[ElfObject]:
        """An ELF file stackdump found (not one the user named), opened; None when it is
        missing or unusable. One that is not a regular file (a FIFO or device planted where
        a debug file or an object was expected) is skipped with a warning."""
        try:
            return ElfObject.open(path)
        except NotRegularFile as e:
            self.notes.add(f"skipped {quote(path)}: {e.strerror}")
            return None
        except parse_errors():
            return None

    def _open_with_build_id(self, path: str, build_id: str) -> Optional[ElfObject]:
        """The ELF file at path, opened, if its build-id is `build_id`."""
        found = self.open_found(path)
        if found is not None and found.build_id() != build_id:
            found.close()
            return None
        return found


def _file_problem(module: Module, path: str, elf: Optional[ElfObject]) -> str:
    """A file overwritten or truncated in place after the process mapped it no longer
    describes the mapped code: say so, so that a walk that stops there says why."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return "the file can no longer be read"
    mapped = max(m.offset for m in module.maps)
    if size <= mapped:
        return (
            f"the file is {size} bytes long, shorter than what the process mapped "
            f"(offset 0x{mapped:x}): truncated after it was loaded"
        )
    if elf is None:
        return "the file is no longer a readable ELF object: changed after it was loaded"
    return ""


def try_open(path: str) -> Optional[ElfObject]:
    """The ELF file at path, opened; None when it cannot be (no warning: see open_found)."""
    try:
        return ElfObject.open(path)
    except parse_errors():
        return None


def _debuglink(elf: ElfObject) -> Optional[Tuple[str, int]]:
    """(file name, CRC32) from .gnu_debuglink: a NUL-terminated name, padding to 4, CRC."""
    data = elf.section_bytes(".gnu_debuglink")
    if not data:
        return None
    end = data.find(b"\0")
    if end <= 0:
        return None
    crc_at = (end + 4) & ~3
    if crc_at + 4 > len(data):
        return None
    return data[:end].decode("utf-8", "replace"), int.from_bytes(
        data[crc_at : crc_at + 4], "little"
    )


def _crc32(elf: ElfObject) -> Optional[int]:
    """The CRC32 of the whole opened file (.gnu_debuglink's check)."""
    crc = 0
    stream = elf.stream
    try:
        stream.seek(0)
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            crc = zlib.crc32(chunk, crc)
    except (OSError, ValueError):
        return None
    return crc & 0xFFFFFFFF


def _minidebuginfo_symbols(elf: ElfObject) -> Optional[SymbolTable]:
    """Fedora's MiniDebugInfo: an xz-compressed ELF holding .symtab in .gnu_debugdata."""
    data = elf.section_bytes(".gnu_debugdata")
    if not data:
        return None
    try:
        # Bounded: a hostile stream cannot expand past 256 MiB.
        decoder = lzma.LZMADecompressor()
        image = decoder.decompress(data, max_length=256 << 20)
        return ElfObject.from_bytes(image).symbols((".symtab",))
    except (lzma.LZMAError, *parse_errors()):
        return None
