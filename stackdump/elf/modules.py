"""Which mapped object holds an address, and how to open that object's file.

Files are opened as the target sees them: through /proc/<pid>/root (so a target in another
mount namespace works), and through /proc/<pid>/map_files/<range> when the file on disk was
deleted or replaced since the target mapped it.
"""

from __future__ import annotations

import bisect
import contextlib
import os
from typing import Dict, List, Optional, Sequence, Tuple

from stackdump import safefs
from stackdump.records import frozen
from stackdump.types import MemoryMap

VDSO = "[vdso]"


@frozen
class Module:
    """One mapped object: all mappings of one file (or the vDSO)."""

    path: str  # as the target sees it
    key: Tuple[str, int, str]  # (dev, inode, path): identity within one dump
    maps: Tuple[MemoryMap, ...]

    @property
    def is_vdso(self) -> bool:
        return self.path == VDSO


class ModuleMap:
    """Sorted mappings of file-backed objects and the vDSO, looked up by bisection."""

    def __init__(self, maps: Sequence[MemoryMap]) -> None:
        groups: Dict[Tuple[str, int, str], List[MemoryMap]] = {}
        for m in maps:
            if m.is_file or m.path == VDSO:
                groups.setdefault((m.dev, m.inode, m.file_path), []).append(m)
        entries = []
        for key, group in groups.items():
            module = Module(path=key[2], key=key, maps=tuple(sorted(group, key=lambda m: m.start)))
            entries.extend((m.start, m, module) for m in module.maps)
        entries.sort(key=lambda e: e[0])
        self._starts = [e[0] for e in entries]
        self._entries = entries

    def lookup(self, address: int) -> Optional[Tuple[Module, MemoryMap]]:
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0:
            return None
        _, mapping, module = self._entries[i]
        if mapping.contains(address):
            return module, mapping
        return None

    def modules(self) -> List[Module]:
        seen: Dict[Tuple[str, int, str], Module] = {}
        for _, _, module in self._entries:
            seen.setdefault(module.key, module)
        return list(seen.values())


def target_path(pid: int, path: str) -> str:
    """A path inside the target's root directory."""
    return f"/proc/{pid}/root{path}"


def open_path(pid: int, module: Module) -> Optional[str]:
    """The best path to read `module`'s file from, or None if it cannot be reached."""
    first = module.maps[0]
    in_root = target_path(pid, first.file_path)
    if not first.deleted:
        try:
            st = os.stat(in_root)
            if st.st_ino == first.inode:
                return in_root
        except OSError:
            pass
    # Deleted, replaced (new inode) or unreachable: the kernel still holds the mapped file.
    for m in module.maps:
        candidate = f"/proc/{pid}/map_files/{m.start:x}-{m.end:x}"
        if os.path.exists(candidate):
            return candidate
    return in_root if os.path.exists(in_root) else None


def debug_roots(roots: Sequence[str], debug_dirs: Sequence[str]) -> List[str]:
    """Directories that hold debug files: /usr/lib/debug under each file-system root (the
    target's first, a core's --sysroot), then this machine's own (a file found there by
    build-id is the right one wherever it comes from, and each is checked against it),
    then the user's (--debug-dir, STACKDUMP_DEBUG_PATH)."""
    places = [f"{root}/usr/lib/debug" for root in (*roots, "")]
    return list(dict.fromkeys([*places, *debug_dirs]))


def build_id_candidates(roots: Sequence[str], build_id: Optional[str]) -> List[str]:
    if not build_id or len(build_id) < 3:
        return []
    rel = f".build-id/{build_id[:2]}/{build_id[2:]}.debug"
    return [os.path.join(root, rel) for root in roots]


def debuglink_candidates(
    roots: Sequence[str], object_path: str, link: str, debug_dirs: Sequence[str]
) -> List[str]:
    """gdb's search order for a .gnu_debuglink name: beside the object, in .debug/ beside it
    (in the target's file system), under each root's global debug directory mirroring the
    object's directory; then the user's."""
    if not link or "/" in link or not roots:
        return []
    directory = os.path.dirname(object_path)
    places = [
        f"{roots[0]}{os.path.join(directory, link)}",
        f"{roots[0]}{os.path.join(directory, '.debug', link)}",
        *(f"{root}/usr/lib/debug{directory}/{link}" for root in roots),
    ]
    for root in debug_dirs:
        places += [os.path.join(root, link), f"{root.rstrip('/')}{directory}/{link}"]
    return list(dict.fromkeys(places))


class LiveFiles:
    """The files of a live process, as it sees them: through /proc/<pid>/root (a target in
    another mount namespace) and /proc/<pid>/map_files (a file deleted or replaced since it
    was mapped). `pid` is a thread whose /proc entries show the process's files (see
    proc.live_thread).

    The mapped files are opened (pinned) when this is made, before any thread is stopped: a
    process that exits during a dump takes /proc/<pid>/root and map_files with it, and these
    descriptors keep every mapped file readable for unwinding and symbolization afterwards
    (through /proc/self/fd/N, which also reaches a deleted file). At most `limit` files are
    pinned, leaving descriptors for everything else; the rest are opened by path when
    needed. `close()` releases them."""

    def __init__(self, pid: int, maps: Sequence[MemoryMap], limit: int = 512) -> None:
        self.pid = pid
        self.roots: Tuple[str, ...] = (f"/proc/{pid}/root", "")
        self._fds: Dict[Tuple[str, int, str], int] = {}
        for module in ModuleMap(maps).modules():
            if module.is_vdso or len(self._fds) >= limit:
                continue
            path = open_path(pid, module)
            if path is None:
                continue
            try:
                # Never blocks: a FIFO swapped in for the file is refused, not waited on.
                self._fds[module.key] = safefs.open_regular(path)
            except OSError:
                continue

    def path(self, module: Module) -> Optional[str]:
        fd = self._fds.get(module.key)
        return open_path(self.pid, module) if fd is None else f"/proc/self/fd/{fd}"

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


class Lent:
    """A file source lent to one snapshot by whoever keeps it across snapshots
    (`capture.live.Series`): the snapshot reads through it, and its `close()`, which analysis
    calls when done with the snapshot, leaves the files open for the next."""

    def __init__(self, files: LiveFiles) -> None:
        self._files = files
        self.pid = files.pid
        self.roots = files.roots

    def path(self, module: Module) -> Optional[str]:
        return self._files.path(module)

    def close(self) -> None:
        pass


class HostFiles:
    """Files by the paths the process mapped them from, on this machine, reading no /proc
    entry: for a snapshot whose process is gone (and, later, a core file's)."""

    roots: Tuple[str, ...] = ("",)

    def path(self, module: Module) -> Optional[str]:
        path = module.maps[0].file_path
        return path if os.path.isfile(path) else None

    def close(self) -> None:
        pass
