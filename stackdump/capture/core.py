"""A core file as a snapshot: the threads of its NT_PRSTATUS notes with their registers and
the stack bytes the core holds, its mappings (PT_LOAD, named by NT_FILE), its vDSO, and the
files it mapped, read from this machine's disk (or under `--sysroot`), `--exe` standing in
for the executable. Nobody had to be stopped: this is the snapshot capture.live produces,
from a process that is gone.

A mapped file is used only if it is the one the process had: where the core holds the
file's first page (the kernel dumps ELF headers by default, gdb's gcore too), its build-id
must match the file's; a file that differs, or is missing, is asked of debuginfod by that
build-id (`/executable`) when a server is set. A thread whose stack the core does not hold
(a truncated core) is reported with an error; its registers are kept.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import struct
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

from stackdump import safefs
from stackdump.arch import for_elf_machine
from stackdump.capture.core_notes import (
    AT_EXECFN,
    AT_PHDR,
    AT_SYSINFO_EHDR,
    Core,
    CoreFileEntry,
    NotACore,
    parse_core,
)
from stackdump.capture.view import AfterCapture, ProcessView
from stackdump.elf import sections
from stackdump.elf.image import ElfObject, file_build_id, parse_errors
from stackdump.elf.modules import VDSO, Module
from stackdump.errors import InvalidCore
from stackdump.types import (
    CaptureMode,
    CaptureOptions,
    CoreInfo,
    MemoryMap,
    ProcessSnapshot,
    Registers,
    ThreadSnapshot,
    ThreadStatus,
)

_SIGSTOP = 19


class CoreMemory:
    """The process's memory as the core holds it, and, where it does not (pages of a file
    the core left out: gcore omits unchanged code, the kernel dumps only a file's first
    page), the mapped file's bytes."""

    def __init__(self, stream, core: Core, files: Sequence[Tuple[int, int, str, int]]) -> None:
        self._stream = stream
        self._segments = [s for s in core.segments if s.filesz]
        self._starts = [s.vaddr for s in self._segments]
        self._files = sorted(files)  # (start, end, path on this machine, file offset)
        self._file_starts = [f[0] for f in self._files]

    def read(self, address: int, size: int) -> bytes:
        """Bytes from address on, as many of `size` as the core and the files hold without a
        gap ("" if none), across the regions a mapping was split into (like a live read,
        which crosses adjacent mappings)."""
        data = self._read_region(address, size)
        while data and len(data) < size:
            more = self._read_region(address + len(data), size - len(data))
            if not more:
                break
            data += more
        return data

    def read_many(self, addresses: Sequence[int], size: int) -> List[bytes]:
        """`size` bytes at each address, b"" where not all are there (`RemoteMemory`'s)."""
        return [d if len(d) == size else b"" for d in (self.read(a, size) for a in addresses)]

    def read_ranges(self, ranges: Sequence[Tuple[int, int]]) -> List[bytes]:
        """What `read` returns for each (address, size) (`RemoteMemory`'s)."""
        return [self.read(address, size) for address, size in ranges]

    def _read_region(self, address: int, size: int) -> bytes:
        """Bytes from address on, as many of `size` as one region holds ("" if none)."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0:
            seg = self._segments[i]
            if seg.vaddr <= address < seg.vaddr + seg.filesz:
                self._stream.seek(seg.offset + address - seg.vaddr)
                return self._stream.read(min(size, seg.vaddr + seg.filesz - address))
        j = bisect.bisect_right(self._file_starts, address) - 1
        if j < 0 or not self._files[j][0] <= address < self._files[j][1]:
            return b""
        start, end, path, offset = self._files[j]
        try:
            with safefs.open_binary(path) as f:
                f.seek(offset + address - start)
                return f.read(min(size, end - address))
        except OSError:
            return b""


class CoreFiles:
    """The snapshot's FileSource: the core's mapped files on this machine, under `sysroot`
    when the core came from another one, `exe_override` for the executable, each checked
    against the build-id the core recorded; debuginfod's copy (`/executable`) when the local
    one is missing or differs. It holds the core open, for the process's memory
    (`read_memory`: code no file backs), and closes it."""

    def __init__(
        self,
        stream,
        memory: CoreMemory,
        sysroot: str,
        exe_path: str,
        exe_override: Optional[str],
        build_ids: Dict[str, str],
        fetch=None,
    ) -> None:
        self.roots: Tuple[str, ...] = (sysroot.rstrip("/"),) if sysroot else ("",)
        self._stream = stream
        self._memory = memory
        self._where = (sysroot, exe_path, exe_override)
        self._build_ids = build_ids  # mapped path -> build-id the core's memory shows
        self._fetch = fetch  # (build_id) -> path of the executable debuginfod has, or None

    def build_id(self, module: Module) -> Optional[str]:
        """The build-id the core's memory shows for a mapped file (its first page)."""
        return self._build_ids.get(module.path)

    def path(self, module: Module) -> Optional[str]:
        wanted = self._build_ids.get(module.path)
        local = _local_path(module.path, *self._where)
        if os.path.isfile(local):
            found = file_build_id(local)
            if wanted is None or found is None or found == wanted:
                return local
        if wanted and self._fetch is not None:
            return self._fetch(wanted)
        return None

    def read_memory(self, address: int, size: int) -> bytes:
        """The process's memory as the core holds it: code no file backs (ObjectStore.code)."""
        return self._memory.read(address, size)

    def close(self) -> None:
        self._stream.close()


def _local_path(path: str, sysroot: str, exe_path: str, exe_override: Optional[str]) -> str:
    """Where a file the core names is on this machine."""
    if exe_override and path == exe_path:
        return exe_override
    return f"{sysroot.rstrip('/')}{path}"


def _backing(core: Core, sysroot: str, exe_path: str, exe_override: Optional[str]):
    """(start, end, local path, file offset) of each mapped file: CoreMemory's fallback."""
    return [
        (e.start, e.end, _local_path(e.path, sysroot, exe_path, exe_override), e.offset)
        for e in core.files
    ]


def capture_core(
    path: str,
    options: CaptureOptions,
    exe: Optional[str] = None,
    sysroot: str = "",
    fetch=None,
    *,
    after: AfterCapture,
) -> ProcessSnapshot:
    """The snapshot a core file holds, with what the runtimes read in it (`after`,
    `runtimes.after_capture`). InvalidCore when it is not one."""
    stream, core = _open(path)
    exe_path = _executable(core)
    memory = CoreMemory(stream, core, _backing(core, sysroot, exe_path, exe))
    names_files = bool(core.files)
    if not core.files:
        # No NT_FILE (qemu-user's cores, older writers): the loader's own list says which
        # objects are where, as gdb reads it.
        found = _link_map_files(core, memory, exe, sysroot)
        if found:
            core = dataclasses.replace(core, files=found)
            exe_path = exe_path or _executable(core)
            memory = CoreMemory(stream, core, _backing(core, sysroot, exe_path, exe))
    maps = _maps(core, memory)
    build_ids = _build_ids(core, memory)
    vdso = _vdso(core, memory)
    threads = _threads(core, maps, memory, options)
    files = CoreFiles(stream, memory, sysroot, exe_path, exe, build_ids, fetch)
    # The runtimes' part (their words, their suspended coroutines), from the core's memory.
    process = ProcessView(memory, maps, files, core.pid, tuple(t.tid for t in threads), None)
    threads, coroutines, truncated = after(process, threads, options, None, lambda: CorePages(core))
    if options.thread_ids is None:
        threads.sort(key=lambda t: t.tid)
    else:
        order = {tid: i for i, tid in enumerate(options.thread_ids)}
        threads.sort(key=lambda t: order[t.tid])
    info = _info(core, path, names_files, sysroot)
    return ProcessSnapshot(
        pid=core.pid or (core.threads[0].tid if core.threads else 0),
        exe=exe_path or core.name,
        maps=maps,
        threads=tuple(threads),
        vdso=vdso,
        capture_ns=0,
        thread_count=len(threads),
        cmdline=tuple(core.args.split()) if core.args else None,
        files=files,
        options=dataclasses.replace(options, capture_mode=CaptureMode.CORE),
        core=info,
        coroutines=coroutines,
        coroutines_truncated=truncated,
    )


def _open(path: str):
    """(the open core file, its parsed segments and notes); InvalidCore when it is not one."""
    try:
        stream = safefs.open_binary(path)  # kept open by the snapshot's memory
    except OSError as e:
        raise InvalidCore(f"cannot read core file {path}: {e.strerror}") from None
    try:
        return stream, parse_core(stream)
    except NotACore as e:
        stream.close()
        raise InvalidCore(f"{path}: {e}") from None
    except OSError as e:
        stream.close()
        raise InvalidCore(f"cannot read core file {path}: {e}") from None


def _threads(core: Core, maps, memory, options: CaptureOptions) -> List[ThreadSnapshot]:
    """The selected threads (--thread-id), as the core's notes and memory hold them."""
    arch_regs = _registers_of(core)
    threads = []
    selected = set(options.thread_ids) if options.thread_ids else None
    for index, t in enumerate(core.threads):
        if selected is not None and t.tid not in selected:
            continue
        name = core.name if t.tid == core.pid or (index == 0 and not core.pid) else "?"
        regs = arch_regs(t.registers)
        threads.append(_thread(t, name, regs, maps, memory, options, core.truncated))
    return threads


def _info(core: Core, path: str, names_files: bool, sysroot: str) -> CoreInfo:
    # gcore stops a live process with SIGSTOP to write its core: no signal ended it.
    signal = 0 if core.writer == "gdb" and core.signal in (_SIGSTOP, 0) else core.signal
    return CoreInfo(
        path=os.path.abspath(path),
        signal=signal,
        signal_code=core.signal_code,
        fault_address=core.fault_address,
        sender=core.sender if signal else None,
        names_files=names_files,
        sysroot=sysroot,
        signal_thread=core.threads[0].tid if core.threads else 0,
        problems=core.problems,
    )


class CorePages:
    """Which pages of a range the core holds (capture.pages.Pagemap's questions, for a core):
    the coroutine search reads only those."""

    def __init__(self, core: Core) -> None:
        self._held = [(s.vaddr, s.vaddr + s.filesz) for s in core.segments if s.filesz]

    def present(self, start: int, end: int):
        return [(max(a, start), min(b, end)) for a, b in self._held if a < end and start < b]

    def resident_end(self, index):
        def end_of(address: int) -> int:
            for a, b in self._held:
                if a <= address < b:
                    return b
            return address

        return end_of

    def close(self) -> None:
        pass


def _executable(core: Core) -> str:
    """The executable's path: the file mapped where the auxiliary vector's AT_PHDR points
    (its program headers), else the first file mapped."""
    phdr = core.auxv.get(AT_PHDR)
    for entry in core.files:
        if phdr is not None and entry.start <= phdr < entry.end:
            return entry.path
    return core.files[0].path if core.files else ""


def _maps(core: Core, memory: CoreMemory) -> Tuple[MemoryMap, ...]:
    """The mappings: one per PT_LOAD (the kernel and gcore write one per mapping), named by
    NT_FILE; and NT_FILE's mappings no PT_LOAD stands for (gcore leaves out unchanged code),
    taken as code, since that is what is left out."""
    files = {e.start: e for e in core.files}
    vdso_at = core.auxv.get(AT_SYSINFO_EHDR)
    main_sp = _main_sp(core)
    out = []
    for seg in core.segments:
        entry = files.pop(seg.vaddr, None)
        if entry is not None:
            path, offset = entry.path, entry.offset
            inode = zlib.crc32(os.fsencode(path)) | 1  # files are told apart by path here
        else:
            path, offset, inode = "", 0, 0
            if seg.vaddr == vdso_at:
                path = VDSO
            elif main_sp is not None and seg.vaddr <= main_sp < seg.end:
                path = "[stack]"
        out.append(MemoryMap(seg.vaddr, seg.end, seg.perms, offset, "00:00", inode, path))
    held = sorted((m.start, m.end) for m in out)
    for entry in files.values():
        if any(start < entry.end and entry.start < end for start, end in held):
            continue  # (a file's range the core splits differently: its segments stand)
        inode = zlib.crc32(entry.path.encode()) | 1
        out.append(
            MemoryMap(entry.start, entry.end, "r-xp", entry.offset, "00:00", inode, entry.path)
        )
    return tuple(sorted(out, key=lambda m: m.start))


_DT_NULL, _DT_DEBUG = 0, 21
_PAGE = 4096


def _link_map_files(core: Core, memory: CoreMemory, exe: Optional[str], sysroot: str):
    """The mapped objects by the dynamic loader's list (`_r_debug.r_map`, found through the
    executable's DT_DEBUG): each object's PT_LOAD segments at its load bias. Needs the
    executable: `--exe`, or the auxiliary vector's AT_EXECFN when that is an absolute path."""
    guest_exe = _string(memory, core.auxv.get(AT_EXECFN, 0))
    exe_local = exe or (f"{sysroot.rstrip('/')}{guest_exe}" if guest_exe.startswith("/") else "")
    phdr_at = core.auxv.get(AT_PHDR)
    if not exe_local or not phdr_at:
        return ()
    try:
        elf = ElfObject.open(exe_local)
    except parse_errors():
        return ()
    try:
        loads = [p for p in elf.program_headers if p.type == 1]
        first = next((p for p in loads if p.offset == 0), None)
        if first is None:
            return ()
        bias = phdr_at - (first.vaddr + elf._header.phoff)
        dynamic = next((p for p in elf.program_headers if p.type == 2), None)
    finally:
        elf.close()
    # The executable by the path the core gives, when absolute (AT_EXECFN is the path it
    # was run by: `./server` says nothing once the cwd is unknown).
    guest = guest_exe if guest_exe.startswith("/") else os.path.abspath(exe_local)
    objects = [(guest, bias, exe_local)]
    if dynamic is not None:
        debug = 0
        data = memory.read(bias + dynamic.vaddr, min(dynamic.memsz, 16 * 512))
        for tag, value in struct.iter_unpack("<qQ", data[: len(data) // 16 * 16]):
            if tag == _DT_NULL:
                break
            if tag == _DT_DEBUG:
                debug = value
        entry = _word(memory, debug + 8) if debug else None
        for _ in range(4096):
            if not entry:
                break
            l_addr, l_name = _word(memory, entry), _word(memory, entry + 8)
            name = _string(memory, l_name or 0)
            if name.startswith("/"):
                objects.append((name, l_addr or 0, f"{sysroot.rstrip('/')}{name}"))
            entry = _word(memory, entry + 24)
    out = []
    for guest, load_bias, local_path in objects:
        try:
            obj = ElfObject.open(local_path)
        except parse_errors():
            continue
        try:
            for p in obj.program_headers:
                if p.type != 1 or not p.memsz:
                    continue
                start = (load_bias + p.vaddr) & ~(_PAGE - 1)
                end = (load_bias + p.vaddr + p.memsz + _PAGE - 1) & ~(_PAGE - 1)
                out.append(CoreFileEntry(start, end, p.offset & ~(_PAGE - 1), guest))
        finally:
            obj.close()
    return tuple(out)


def _word(memory: CoreMemory, address: int) -> Optional[int]:
    data = memory.read(address, 8) if address else b""
    return struct.unpack("<Q", data)[0] if len(data) == 8 else None


def _string(memory: CoreMemory, address: int) -> str:
    if not address:
        return ""
    data = memory.read(address, 4096)
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def _main_sp(core: Core) -> Optional[int]:
    for t in core.threads:
        if t.tid == core.pid:
            return t.registers.get("rsp", t.registers.get("sp"))
    return None


def _vdso(core: Core, memory: CoreMemory) -> Optional[bytes]:
    at = core.auxv.get(AT_SYSINFO_EHDR)
    if not at:
        return None
    for seg in core.segments:
        if seg.vaddr == at:
            data = memory.read(at, seg.memsz)
            return data or None
    return None


def _build_ids(core: Core, memory: CoreMemory) -> Dict[str, str]:
    """path -> build-id, from each mapped ELF file's first page as the core holds it."""
    out: Dict[str, str] = {}
    seen = set()
    for entry in core.files:
        if entry.offset != 0 or entry.path in seen:
            continue
        seen.add(entry.path)
        found = _memory_build_id(memory, entry.start)
        if found:
            out[entry.path] = found
    return out


def _memory_build_id(memory: CoreMemory, base: int) -> Optional[str]:
    head = memory.read(base, 64)
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
        return None
    phoff, phentsize, phnum = (
        struct.unpack_from("<Q", head, 32)[0],
        *struct.unpack_from("<HH", head, 54),
    )
    if phentsize < 56 or phnum > 256:
        return None
    table = memory.read(base + phoff, phentsize * phnum)
    first_vaddr = None
    notes = []
    for i in range(len(table) // phentsize):
        p_type, _f, offset, vaddr, _pa, filesz, _memsz, _al = struct.unpack_from(
            "<IIQQQQQQ", table, i * phentsize
        )
        if p_type == 1 and first_vaddr is None:
            first_vaddr = vaddr - offset  # the load bias is base - first_vaddr
        elif p_type == 4:
            notes.append((vaddr, filesz))
    if first_vaddr is None:
        return None
    for vaddr, filesz in notes:
        data = memory.read(base + vaddr - first_vaddr, min(filesz, 4096))
        found = sections.gnu_build_id(data)
        if found:
            return found
    return None


def _registers_of(core: Core):
    """The core's processor's reading of a thread's NT_PRSTATUS registers (by name)."""
    arch = for_elf_machine(core.machine)
    assert arch is not None  # parse_core refuses other processors

    def registers(regs: Dict[str, int]) -> Registers:
        return Registers.of({i: regs[n] for i, n in enumerate(arch.register_names)}, arch)

    return registers


def _thread(
    t, name: str, regs: Registers, maps: Sequence[MemoryMap], memory, options, truncated: bool
):
    sp = regs.get(regs.arch.sp) or 0
    mapping = next((m for m in maps if m.start <= sp < m.end), None)
    lost = "the core file is truncated: its stack is in the part cut off"
    if mapping is None:
        return ThreadSnapshot(
            tid=t.tid, name=name, status=ThreadStatus.OK, regs=regs,
            error=lost if truncated else "its stack pointer is in no memory the core holds",
        )  # fmt: skip
    start = max(mapping.start, sp - regs.arch.red_zone)
    stack = memory.read(start, min(mapping.end - sp, options.stack_bytes) + (sp - start))
    error = "" if stack else (lost if truncated else "the core does not hold its stack")
    return ThreadSnapshot(
        tid=t.tid,
        name=name,
        status=ThreadStatus.OK,
        regs=regs,
        stack_map=mapping,
        stack_base=start,
        stack=stack,
        error=error,
    )
