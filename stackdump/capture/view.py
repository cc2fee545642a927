"""A captured process as the runtimes read it once every thread runs again (`ProcessView`),
and the hook a source calls to have them read it (`AfterCapture`, `runtimes.after_capture`):
capture hands it over without knowing any runtime.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator, List, Optional, Sequence, Set, Tuple

from stackdump.elf.image import ElfObject, parse_errors
from stackdump.elf.modules import ModuleMap
from stackdump.records import frozen
from stackdump.types import CaptureOptions, MemoryMap, ThreadSnapshot


@frozen
class MappedObject:
    """An executable file mapped into the process: its path in the maps, where it can be
    opened, and its first mapping."""

    mapped: str
    path: str
    first: MemoryMap

    def bias(self, elf: ElfObject) -> Optional[int]:
        """The load bias (0 for a fixed-address executable, the mapping's for a PIE or a
        shared object): where the first mapping's file offset lies in ELF addresses."""
        vaddr = elf.file_offset_to_vaddr(self.first.offset)
        return None if vaddr is None else self.first.start - vaddr


@frozen
class ProcessView:
    """A captured process as runtimes read it: `memory` reads it (`remote.RemoteMemory`
    live, `core.CoreMemory` from a core), `files` opens its mapped files, `now_ns` is
    CLOCK_MONOTONIC when it is live (None for a core: no clock to compare with)."""

    memory: Any
    maps: Tuple[MemoryMap, ...]
    files: Any
    pid: int
    tids: Tuple[int, ...]
    now_ns: Optional[int]

    @functools.cached_property
    def objects(self) -> Tuple[MappedObject, ...]:
        """Each mapped executable file, once, in the order of the maps."""
        return _mapped_objects(self.maps, self.files, None)

    def executable(self) -> Optional[MappedObject]:
        """The first file mapped (resolved alone: this runs on every dump)."""
        exe = next((m.file_path for m in self.maps if m.is_file), None)
        found = _mapped_objects(self.maps, self.files, exe)
        return found[0] if found else None

    def objects_defining(
        self, objects: Sequence[MappedObject], names: Set[str], required: Set[str], section=""
    ) -> Iterator[Tuple[ElfObject, dict]]:
        """(ELF object, where each of `names` it defines is in the process, and its load
        bias under "") for each object that defines every one of `required` (and holds
        `section`, when given); the object is open while the caller looks at it."""
        for mapped in objects:
            try:
                elf = ElfObject.open(mapped.path)
            except (OSError, *parse_errors()):
                continue
            try:
                if section and not elf.has_section(section):
                    continue
                values = elf.symbol_values(names)
                bias = mapped.bias(elf) if required <= set(values) else None
                if bias is not None:
                    yield elf, {"": bias, **{name: bias + v for name, v in values.items()}}
            finally:
                elf.close()


def _mapped_objects(maps, files, only: Optional[str]) -> Tuple[MappedObject, ...]:
    modules = ModuleMap(maps)
    seen: dict = {}
    for m in maps:
        if not (m.is_file and m.executable) or m.file_path in seen:
            continue
        if only is not None and m.file_path != only:
            continue
        hit = modules.lookup(m.start)
        path = files.path(hit[0]) if hit is not None else None
        if path is not None:
            first = next(x for x in maps if x.path == m.path)
            seen[m.file_path] = MappedObject(m.file_path, path, first)
    return tuple(seen.values())


# (view, threads, options, keep, pages) -> (threads, coroutines or None, whether a bound was
# reached). `keep` settles each snapshot (engine.Analyzer.settle), `pages()` opens the
# page-presence reader (capture.pages.Pagemap, core.CorePages).
AfterCapture = Callable[
    [ProcessView, List[ThreadSnapshot], CaptureOptions, Any, Callable[[], Any]],
    Tuple[List[ThreadSnapshot], Optional[Tuple[ThreadSnapshot, ...]], bool],
]
