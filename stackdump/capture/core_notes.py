"""An ELF core file's structure, parsed from its bytes: the PT_LOAD segments (the process's
memory) and the notes (Linux's elf_core_dump, gdb's gcore): each thread's NT_PRSTATUS
(tid, signal, CPU times, registers), NT_PRPSINFO (the process: pid, state, name, argv),
NT_SIGINFO (the signal that killed it, and the faulting address), NT_AUXV (where the vDSO
is) and NT_FILE (which file each mapping came from).

Layouts are the kernel's (include/uapi/linux/elfcore.h, elf_prstatus_common and the
architecture's elf_gregset_t). Everything is bounded and defensive: a truncated or hostile
core yields fewer threads, segments or notes, never an exception past `parse_core`.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from dataclasses import field
from typing import BinaryIO, Dict, List, Optional, Tuple

from stackdump.arch import for_elf_machine
from stackdump.elf import sections
from stackdump.records import frozen

ET_CORE = 4
PT_LOAD, PT_NOTE = 1, 4
NT_PRSTATUS, NT_PRPSINFO, NT_AUXV = 1, 3, 6
NT_SIGINFO = 0x53494749
NT_FILE = 0x46494C45
AT_SYSINFO_EHDR, AT_PHDR, AT_ENTRY, AT_EXECFN = 33, 3, 9, 31
PF_X, PF_W, PF_R = 1, 2, 4

_PHDR = struct.Struct("<IIQQQQQQ")
_NOTE = struct.Struct("<III")
# elf_prstatus_common: elf_siginfo (3 ints), pr_cursig (short, padded), sigpend, sighold,
# pid, ppid, pgrp, sid, then four timevals (utime, stime, cutime, cstime).
_PRSTATUS = struct.Struct("<iii h2x QQ iiii qq qq qq qq")
_GREGS_AT = _PRSTATUS.size  # 112: where pr_reg begins
# user_regs_struct (x86_64), in order: its index of each field we keep.
# elf_prpsinfo: state, sname, zomb, nice, (pad), flag, uid, gid, pid, ppid, pgrp, sid,
# fname[16], psargs[80].
_PRPSINFO = struct.Struct("<bcbb4xQIIiiii16s80s")
_MAX_NOTES = 1 << 20
_MAX_SEGMENTS = 1 << 20
_MAX_NOTE_BYTES = 256 << 20


@frozen
class CoreSegment:
    vaddr: int
    memsz: int
    offset: int  # in the core file
    filesz: int  # bytes the core holds (0: not dumped, e.g. a file's unchanged code)
    flags: int

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz

    @property
    def perms(self) -> str:
        return (
            ("r" if self.flags & PF_R else "-")
            + ("w" if self.flags & PF_W else "-")
            + ("x" if self.flags & PF_X else "-")
            + "p"
        )


@frozen
class CoreThread:
    tid: int
    signal: int  # pr_cursig: the signal it was handling (the kernel gives all the same)
    cpu_ms: int  # pr_utime + pr_stime
    registers: Dict[str, int]  # by the kernel's register names (x86_64) or x0..x30, sp, pc


@frozen
class CoreFileEntry:
    start: int
    end: int
    offset: int  # in the file
    path: str


@frozen
class Core:
    machine: int  # e_machine
    segments: Tuple[CoreSegment, ...]
    threads: Tuple[CoreThread, ...]
    files: Tuple[CoreFileEntry, ...]
    auxv: Dict[int, int] = field(default_factory=dict)
    pid: int = 0
    name: str = ""  # pr_fname
    args: str = ""  # pr_psargs: the command line, truncated to 80 bytes by the kernel
    state: str = ""
    signal: int = 0  # NT_SIGINFO's si_signo, else the first thread's pr_cursig
    signal_code: int = 0
    fault_address: Optional[int] = None  # si_addr, for SIGSEGV, SIGBUS, SIGILL, SIGFPE
    # si_pid, si_uid of a signal sent by a process (kill(), tgkill(), sigqueue(): si_code <= 0)
    sender: Optional[Tuple[int, int]] = None
    problems: Tuple[str, ...] = ()  # what was cut short (a truncated file, a bad note)
    truncated: bool = False  # the file is shorter than its program headers say
    writer: str = "kernel"  # "gdb" for gcore's (its notes include gdb's own)


class NotACore(ValueError):
    """The file is not an ELF core file stackdump can read."""


def parse_core(stream: BinaryIO) -> Core:
    """The core's segments and notes. NotACore when it is no 64-bit little-endian ELF core
    of a processor stackdump knows; anything else short or wrong costs what it holds."""
    size = stream.seek(0, os.SEEK_END)
    try:
        header = sections.read_header(stream)
    except sections.NotElf as e:
        raise NotACore(str(e)) from None
    machine, phoff, phentsize, phnum = header.machine, header.phoff, header.phentsize, header.phnum
    if header.type != ET_CORE:
        raise NotACore("an ELF file, but not a core file (e_type is not ET_CORE)")
    if for_elf_machine(machine) is None:
        raise NotACore(f"a core file of an unsupported processor (e_machine {machine})")
    problems: List[str] = []
    if phentsize < _PHDR.size or phoff >= size:
        raise NotACore("a core file without program headers")
    count = min(phnum, _MAX_SEGMENTS, (size - phoff) // phentsize)
    if count < phnum:
        problems.append(f"the file is truncated: {count} of {phnum} program headers")
    stream.seek(phoff)
    table = stream.read(count * phentsize)
    segments, notes = [], []
    promised = phoff + phnum * phentsize  # the end of what the headers describe
    cut_at: Optional[int] = None  # the first address whose bytes the file lacks
    notes_cut = False
    for i in range(len(table) // phentsize):
        p_type, flags, offset, vaddr, _paddr, filesz, memsz, _align = _PHDR.unpack_from(
            table, i * phentsize
        )
        promised = max(promised, offset + filesz)
        if p_type == PT_LOAD:
            held = max(0, min(filesz, size - offset))
            if held < filesz and (cut_at is None or vaddr + held < cut_at):
                cut_at = vaddr + held
            segments.append(CoreSegment(vaddr, memsz, offset, held, flags))
        elif p_type == PT_NOTE:
            notes_cut = notes_cut or offset + filesz > size
            if offset < size:
                stream.seek(offset)
                notes.append(stream.read(min(filesz, size - offset, _MAX_NOTE_BYTES)))
    if size < promised:
        # One line for what a full disk or a core size limit did: the reader needs the
        # size to tell "cut" from "damaged" and which part is gone.
        where = []
        if notes_cut:
            where.append("its notes (threads, registers, files) are cut short")
        if cut_at is not None:
            where.append(f"memory from 0x{cut_at:x} on is missing")
        problems.append(
            f"the file is truncated: it holds {size} of the {promised} bytes its program "
            "headers describe" + ("; " + ", ".join(where) if where else "")
        )
    core = Core(machine, tuple(sorted(segments, key=lambda s: s.vaddr)), (), ())
    for data in notes:
        core = _read_notes(core, data, problems)
    return _with(core, problems=tuple(dict.fromkeys(problems)), truncated=size < promised)


def _with(core: Core, **changes) -> Core:
    return dataclasses.replace(core, **changes)


def _read_notes(core: Core, data: bytes, problems: List[str]) -> Core:
    threads = list(core.threads)
    files = list(core.files)
    changes: dict = {}
    at = 0
    for _ in range(_MAX_NOTES):
        if at + _NOTE.size > len(data):
            break
        namesz, descsz, kind = _NOTE.unpack_from(data, at)
        desc_at = at + _NOTE.size + _align4(namesz)
        end = desc_at + _align4(descsz)
        if desc_at + descsz > len(data):
            problems.append("a note is cut short")
            break
        desc = data[desc_at : desc_at + descsz]
        if data[at + _NOTE.size : at + _NOTE.size + namesz] == b"GDB\0":
            changes["writer"] = "gdb"
        try:
            if kind == NT_PRSTATUS:
                thread = _prstatus(desc, core.machine)
                if thread is not None:
                    threads.append(thread)
            elif kind == NT_PRPSINFO and len(desc) >= _PRPSINFO.size:
                info = _PRPSINFO.unpack_from(desc)
                changes.update(
                    state=info[1].decode("latin-1").strip("\0"),
                    pid=info[7],
                    name=_cstring(info[11]),
                    args=_cstring(info[12]).strip(),
                )
            elif kind == NT_SIGINFO and len(desc) >= 24:
                signo, _errno, code = struct.unpack_from("<iii", desc)
                changes.update(signal=signo, signal_code=code)
                if code <= 0:
                    # Sent by a process (SI_USER, SI_QUEUE, SI_TKILL...): the union holds
                    # the sender's si_pid and si_uid, not an address.
                    changes["sender"] = struct.unpack_from("<iI", desc, 16)
                elif signo in (4, 7, 8, 11):  # SIGILL, SIGBUS, SIGFPE, SIGSEGV: si_addr
                    changes["fault_address"] = struct.unpack_from("<Q", desc, 16)[0]
            elif kind == NT_AUXV:
                usable = len(desc) - len(desc) % 16
                changes["auxv"] = {k: v for k, v in struct.iter_unpack("<QQ", desc[:usable])}
            elif kind == NT_FILE:
                files.extend(_file_note(desc))
        except (struct.error, ValueError):
            problems.append(f"note type 0x{kind:x} is malformed")
        at = end
    if not changes.get("signal") and not core.signal and threads:
        changes["signal"] = threads[0].signal
    return _with(core, threads=tuple(threads), files=tuple(files), **changes)


def _prstatus(desc: bytes, machine: int) -> Optional[CoreThread]:
    if len(desc) < _GREGS_AT:
        return None
    f = _PRSTATUS.unpack_from(desc)
    cursig, tid = f[3], f[6]
    cpu_us = (f[10] + f[12]) * 1_000_000 + f[11] + f[13]
    arch = for_elf_machine(machine)
    if arch is None:
        return None
    names = arch.prstatus_names
    width = 8 * len(names)
    if len(desc) < _GREGS_AT + width:
        return None
    values = struct.unpack_from(f"<{len(names)}Q", desc, _GREGS_AT)
    return CoreThread(tid, cursig, max(cpu_us, 0) // 1000, dict(zip(names, values)))


def _file_note(desc: bytes) -> List[CoreFileEntry]:
    count, page = struct.unpack_from("<QQ", desc)
    count = min(count, (len(desc) - 16) // 24)
    ranges = [struct.unpack_from("<QQQ", desc, 16 + 24 * i) for i in range(count)]
    names = desc[16 + 24 * count :].split(b"\0")
    out = []
    for (start, end, page_offset), name in zip(ranges, names):
        out.append(CoreFileEntry(start, end, page_offset * page, os.fsdecode(name)))
    return out


def _cstring(raw: bytes) -> str:
    return os.fsdecode(raw.split(b"\0", 1)[0])  # bytes kept: escaped when printed


def _align4(n: int) -> int:
    return (n + 3) & ~3
