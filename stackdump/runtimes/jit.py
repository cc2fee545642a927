"""Code no file holds: JIT-compiled functions (V8's JavaScript, the JVM's, .NET's, LuaJIT's) in
anonymous executable memory, named from the perf map the runtime writes when asked
(`node --perf-basic-prof`, `jcmd PID Compiler.perfmap`, `DOTNET_PerfMapEnabled=1`):
`/tmp/perf-PID.map`, one `START SIZE NAME` line (hex) per piece of code, later lines
replacing earlier ones where code was moved or freed.

/tmp is writable by everyone, so a map is read only when it cannot be a forgery: a regular
file (not a symlink), owned by the target's user (or root), writable by no one else. It is
read after capture, as the target sees /tmp (its root, and the pid in its own namespace), at
most 256 MiB of it. Frames in JIT code without a usable map still say what they are:
` in [jit]`.
"""

from __future__ import annotations

import bisect
import os
import stat
from typing import List, Optional, Sequence, Tuple

from stackdump.runtimes.base import Runtime
from stackdump.types import MemoryMap, ReportHeader, ThreadReport, UnwindStatus

JIT_MODULE = "[jit]"
_MAX_MAP_BYTES = 256 << 20


class PerfMap:
    """The names of a perf map, looked up by address; the latest line covering it wins."""

    def __init__(self, entries: List[Tuple[int, int, int, str]]) -> None:
        entries.sort()
        self._starts = [e[0] for e in entries]
        self._entries = entries  # (start, line number, end, name)

    def lookup(self, address: int) -> Optional[Tuple[str, int]]:
        """(name, start) of the code holding `address`, or None."""
        i = bisect.bisect_right(self._starts, address) - 1
        best = None
        # Code replaced in place overlaps older lines: look back a little for the newest.
        for j in range(i, max(i - 64, -1), -1):
            start, line, end, name = self._entries[j]
            if start <= address < end and (best is None or line > best[0]):
                best = (line, name, start)
        return (best[1], best[2]) if best is not None else None

    @classmethod
    def parse(cls, text: str) -> PerfMap:
        entries = []
        for number, line in enumerate(text.splitlines()):
            parts = line.split(" ", 2)
            if len(parts) != 3:
                continue
            try:
                start, size = int(parts[0], 16), int(parts[1], 16)
            except ValueError:
                continue
            if size > 0:
                entries.append((start, number, start + size, parts[2].strip()))
        return cls(entries)


def read_perf_map(pid: int) -> Optional[PerfMap]:
    """The target's perf map, if it wrote one that only it (or root) could have written."""
    status = _status(pid)
    if status is None:
        return None
    uid, nspid = status
    path = f"/proc/{pid}/root/tmp/perf-{nspid}.map"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (uid, 0):
            return None
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return None
        data = os.read(fd, min(st.st_size, _MAX_MAP_BYTES))
    except OSError:
        return None
    finally:
        os.close(fd)
    return PerfMap.parse(data.decode("utf-8", "surrogateescape"))


def _status(pid: int) -> Optional[Tuple[int, int]]:
    """(effective uid, pid in its own namespace) from /proc/PID/status."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        uid = int(fields["Uid"].split()[1])
        nspid = int(fields.get("NSpid", str(pid)).split()[-1])
    except (OSError, KeyError, ValueError, IndexError):
        return None
    return uid, nspid


class JitCode:
    """Which pcs are in anonymous executable memory, and their names where a perf map has
    them. The ranges are found on the first pc asked about and the map read on the first
    such pc: a process without JIT code pays nothing (a profile makes one per sample)."""

    label = JIT_MODULE  # what a frame there names as its object

    def __init__(self, maps: Sequence[MemoryMap], pid: Optional[int]) -> None:
        self._maps = maps
        self._ranges: Optional[List[Tuple[int, int]]] = None
        self._starts: List[int] = []
        self._pid = pid
        self._map: Optional[PerfMap] = None
        self._read = False

    def covers(self, pc: int) -> bool:
        if self._ranges is None:
            self._ranges = sorted(
                (m.start, m.end)
                for m in self._maps
                if m.executable and not m.is_file and not m.path.startswith("[v")
            )
            self._starts = [r[0] for r in self._ranges]
        i = bisect.bisect_right(self._starts, pc) - 1
        return i >= 0 and self._ranges[i][0] <= pc < self._ranges[i][1]

    def name(self, pc: int) -> Optional[Tuple[str, int]]:
        if not self._read:
            self._read = True
            self._map = read_perf_map(self._pid) if self._pid else None
        return self._map.lookup(pc) if self._map is not None else None


class Jit(Runtime):
    name = "jit"

    def anonymous_code(self, maps: Sequence[MemoryMap], pid: Optional[int]) -> JitCode:
        # A live process's JIT code is named by its perf map; a core's only marked.
        return JitCode(maps, pid)

    def hints(self, header: ReportHeader, threads: Sequence[ThreadReport]) -> Tuple[str, ...]:
        frames = [f for t in threads for f in t.frames if f.module == JIT_MODULE]
        if not frames:
            return ()
        program = os.path.basename(header.exe)
        unnamed = sum(1 for f in frames if f.function is None)
        if program == "java":
            return _jvm_hints(header.pid, threads, unnamed)
        if program in ("node", "nodejs"):
            return _node_hints(threads, unnamed)
        return ()


def _jvm_hints(pid: int, threads: Sequence[ThreadReport], unnamed: int) -> Tuple[str, ...]:
    out = []
    stopped = sum(
        1
        for t in threads
        if t.frames and t.frames[-1].module == JIT_MODULE
        and t.unwind_status is not UnwindStatus.END_OF_STACK
    )  # fmt: skip
    if stopped:
        out.append(
            f"the stacks of {stopped} thread(s) stop in JIT code: the JVM's compiled code "
            "keeps no frame pointer and has no CFI; run it with -XX:+PreserveFramePointer "
            "to unwind through it"
        )
    if unnamed:
        out.append(
            f"{unnamed} frame(s) in JIT code have no name: `jcmd {pid} Compiler.perfmap` "
            f"writes the map that names them (/tmp/perf-{pid}.map)"
        )
    return tuple(out)


def _node_hints(threads: Sequence[ThreadReport], unnamed: int) -> Tuple[str, ...]:
    out = []
    if unnamed:
        out.append(
            f"{unnamed} frame(s) in JIT code have no name: run node with --perf-basic-prof, "
            "which writes the map that names them (/tmp/perf-PID.map)"
        )
    if any(f.function == _V8_INTERPRETER for t in threads for f in t.frames):
        out.append(
            "frames in V8's interpreter (Builtins_InterpreterEntryTrampoline) do not say "
            "which JavaScript function runs there: run node with "
            "--interpreted-frames-native-stack to give each its own frame"
        )
    return tuple(out)


_V8_INTERPRETER = "Builtins_InterpreterEntryTrampoline"
