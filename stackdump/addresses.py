"""Raw addresses -> function+offset/size, object+offset, file:line and the functions inlined
there (`--symbolize`): what SystemTap's print_usyms and addr2line give, for a backtrace from a
log, with the live process's maps (`-p`) or an object and the address it was loaded at.

No thread is stopped: a live process gives only its maps and files."""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator, List, Optional, Sequence, Tuple

from stackdump import runtimes
from stackdump.cache import DiskCache
from stackdump.elf.debuginfod import Debuginfod
from stackdump.elf.image import ElfObject, parse_errors
from stackdump.elf.store import ObjectStore
from stackdump.escape import escape
from stackdump.notes import Notes
from stackdump.records import frozen
from stackdump.symbols.symbolizer import Symbolizer
from stackdump.types import AnalysisOptions, FileSource, Frame, MemoryMap, SymbolizedFrame

_HEX = re.compile(r"\b0[xX][0-9a-fA-F]{1,16}\b")
_NEGATIVE = re.compile(r"(?<![\w.+-])-0[xX][0-9a-fA-F]{1,16}\b")
_PAGE = 4096


@frozen
class Resolved:
    address: int
    frame: SymbolizedFrame
    size: Optional[int]  # of the function's ELF symbol, when it has one


def parse_addresses(text: str) -> List[int]:
    """Every 0x... number in `text`, in order (a log line's other words are ignored)."""
    return [int(token, 16) for token in _HEX.findall(text)]


def negative_address(text: str) -> str:
    """The first -0x... in `text` that stands alone (not `sp-0x10`), else "": a minus sign
    there is a mistake that reading the number without it would hide."""
    found = _NEGATIVE.search(text)
    return found.group(0) if found else ""


def object_maps(path: str, load_address: int) -> Tuple[MemoryMap, ...]:
    """The mappings a loader makes of `path` at `load_address` (0: as linked), from its
    program headers: what the process's maps would show."""
    elf = ElfObject.open(path)
    try:
        inode = os.stat(path).st_ino or 1
        maps = []
        for seg in elf.segments:
            start = load_address + seg.vaddr - seg.vaddr % _PAGE
            end = load_address + seg.vaddr + seg.memsz
            end += -end % _PAGE
            maps.append(
                MemoryMap(start, end, "r-xp", seg.offset - seg.offset % _PAGE, "00:00", inode, path)
            )
        return tuple(maps)
    finally:
        elf.close()


def symbolize(
    addresses: Sequence[int],
    files: FileSource,
    maps: Sequence[MemoryMap],
    options: AnalysisOptions,
    backtrace: bool = False,
) -> Tuple[List[Resolved], Tuple[str, ...]]:
    """Each address as given (addr2line's rule), or, with `backtrace`, as a backtrace lists
    them: the first where execution stood, every later one a return address, looked up at
    address - 1 as a dump does. Also the warnings for stderr (files refused, a cache not
    used), as a dump's Report.warnings."""
    out = []
    remote = Debuginfod(options.debuginfod) if options.debuginfod else None
    cache = DiskCache(options.cache_dir)
    notes = Notes()
    with contextlib.ExitStack() as closing:
        closing.callback(cache.close)
        if remote is not None:
            closing.callback(remote.close)
        objects = closing.enter_context(
            ObjectStore(files, maps, None, options.debug_dirs, cache, remote=remote, notes=notes)
        )
        objects.allow_downloads()  # nothing is stopped here
        symbolizer = Symbolizer(objects, options.mode, None, runtimes.own_code)
        for i, address in enumerate(addresses):
            frame = Frame(pc=address, activation=not backtrace or i == 0)
            try:
                found = symbolizer.symbolize(frame)
            except Exception:  # noqa: BLE001 - one address's parse error costs its name only
                found = SymbolizedFrame(address, None, None, None)
            out.append(Resolved(address, found, _size(objects, frame)))
        notes.add(cache.problem)
        notes.add(remote.problem if remote is not None else "")
        notes.add(remote.summary() if remote is not None else "")
    return out, notes.take()


def _size(objects: ObjectStore, frame: Frame) -> Optional[int]:
    resolved = objects.resolve(frame.lookup_pc)
    if resolved is None:
        return None
    loaded, vaddr = resolved
    try:
        found = loaded.symbols.find(vaddr)
    except parse_errors():
        return None
    return found[2] if found is not None and found[2] else None


def address_lines(resolved: Sequence[Resolved]) -> Iterator[str]:
    """`0xADDRESS : FUNCTION+0xOFF/0xSIZE [OBJECT+0xOFFSET] at FILE:LINE`, then one
    `    inlined: ...` line per function inlined there, innermost first. Unknown parts are
    left out: `0xADDRESS : ?? [OBJECT+0xOFFSET]`, or `0xADDRESS : ??` outside any object."""
    for r in resolved:
        f = r.frame
        text = f"0x{r.address:016x} : "
        if f.function is not None:
            text += escape(f.function)
            if f.function_offset is not None:
                text += f"+0x{f.function_offset:x}"
                if r.size:
                    text += f"/0x{r.size:x}"
        else:
            text += "??"
        if f.module is not None:
            text += f" [{escape(f.module)}"
            if f.module_offset is not None:
                text += f"+0x{f.module_offset:x}"
            text += "]"
        if f.file is not None and f.line is not None:
            text += f" at {escape(f.file)}:{f.line}"
        yield text
        for call in f.inlined:
            where = f" at {escape(call.file)}:{call.line}" if call.file and call.line else ""
            yield f"    inlined: {escape(call.function or '??')}{where}"
