"""On-disk cache of what symbol and location lookups need, keyed by object identity.

Entries hold plain data (integer arrays, raw bytes, JSON lists), never pickles: a cache
directory is not trusted input. Each entry carries a magic, its full key and a CRC of its
payload; an entry that fails any check is deleted and recomputed, never trusted.

Writes go to a temporary file renamed into place, so two stackdumps running at once never
see a half-written entry. The directory is bounded: after a dump, the oldest entries are
removed until it is back under the limit.

Root runs stackdump against other users' processes, so the directory is used only when it is
the running user's alone (`safefs.open_private_dir`: else one warning, `problem`, and the dump
goes on uncached), and every entry is read, written and removed relative to its descriptor,
following no symlink and opening only regular files. What goes in is the caller's concern:
entries are made only from files no one but root or the running user can have written
(`ElfObject.identity`), since a build-id is a claim a file makes, not proof of its content.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import stat
import struct
import zlib
from typing import Callable, Dict, Optional, Tuple, TypeVar, Union

from stackdump import safefs

MAGIC = b"SDC1"
FORMAT_VERSION = 1
DEFAULT_MAX_BYTES = 512 << 20
_HEADER_LEN = struct.Struct("<I")

Value = Union[array.array, bytes, list]
T = TypeVar("T")


def default_directory() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "stackdump")


class DiskCache:
    """get/put of named fields under a string key. A `None` directory disables it; so does a
    directory that is not safe to use (`problem` then says why, for one warning)."""

    def __init__(self, directory: Optional[str], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.hits = 0
        self.problem = ""
        self._wrote = False
        self._fd: Optional[int] = None  # the directory, opened on first use
        self._opened = directory is None

    @property
    def enabled(self) -> bool:
        return self._dir() is not None

    @property
    def scratch(self) -> Optional[str]:
        """Where big temporary files may go (inflated debug sections): the cache directory
        when it is safe to use, else None (the system's temporary directory)."""
        return self.directory if self._dir() is not None else None

    def _dir(self) -> Optional[int]:
        if not self._opened:
            self._opened = True
            assert self.directory is not None
            self._fd, why = safefs.open_private_dir(self.directory)
            if self._fd is None:
                self.problem = f"cache directory {self.directory} not used: {why}"
        return self._fd

    def _place(self, key: str) -> Tuple[str, str]:
        # A file name, not a secret: each entry carries its full key, so a collision costs a
        # rebuild, never a wrong answer. zlib's checksums spare hashlib's import (~3 ms, every
        # run pays it).
        data = f"{FORMAT_VERSION}\0{key}".encode()
        digest = f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"
        return digest[:2], digest[2:]

    def get(self, key: str) -> Optional[Dict[str, Value]]:
        top = self._dir()
        if top is None:
            return None
        subdir, name = self._place(key)
        sub = safefs.open_private_subdir(top, subdir, create=False)
        if sub is None:
            return None
        try:
            try:
                fd = safefs.open_regular(name, dir_fd=sub, follow=False)
            except safefs.NotRegularFile:
                # Not ours to have made: no entry stackdump writes is anything else.
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=sub)
                return None
            except OSError:
                return None
            with os.fdopen(fd, "rb") as f:
                blob = f.read()
            value = _decode(blob, key)
            if value is None:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=sub)
                return None
        except OSError:
            return None
        finally:
            os.close(sub)
        self.hits += 1
        return value

    def put(self, key: str, fields: Dict[str, Value]) -> None:
        top = self._dir()
        if top is None:
            return
        subdir, name = self._place(key)
        sub = safefs.open_private_subdir(top, subdir, create=True)
        if sub is None:
            return
        tmp = f".tmp-{os.getpid()}-{name}"
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o600,
                dir_fd=sub,
            )
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_encode(key, fields))
                os.replace(tmp, name, src_dir_fd=sub, dst_dir_fd=sub)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=sub)
                raise
            self._wrote = True
        except OSError:
            pass  # a read-only or full disk costs speed, not correctness
        finally:
            os.close(sub)

    def fetch(self, key: Optional[str], cls, build: Callable[[], Optional[T]]) -> Optional[T]:
        """`cls.from_fields(entry)` for a valid entry under key, else `build()`, stored.

        `from_fields` raising ValueError/KeyError/TypeError means the entry is inconsistent
        despite its checksum (e.g. written by an older stackdump): it is rebuilt."""
        if key is not None:
            fields = self.get(key)
            if fields is not None:
                try:
                    return cls.from_fields(fields)
                except (ValueError, KeyError, TypeError, AttributeError):
                    pass
        value = build()
        if key is not None and value is not None:
            try:
                fields = value.to_fields()
            except (ValueError, TypeError, OverflowError):
                # Data a hostile file produced that the cache format cannot hold (fuzzing
                # found negative line numbers): use it, do not store it.
                return value
            self.put(key, fields)
        return value

    def trim(self) -> None:
        """Remove the oldest entries while the directory exceeds its bound."""
        top = self._fd
        if top is None or not self._wrote:
            return
        entries = []
        total = 0
        with contextlib.suppress(OSError):
            for sub_entry in os.scandir(top):
                sub = safefs.open_private_subdir(top, sub_entry.name, create=False)
                if sub is None:
                    continue
                with contextlib.suppress(OSError), os.scandir(sub) as listing:
                    for entry in listing:
                        st = entry.stat(follow_symlinks=False)
                        if stat.S_ISREG(st.st_mode):
                            entries.append((st.st_mtime, st.st_size, sub_entry.name, entry.name))
                            total += st.st_size
                os.close(sub)
        if total <= self.max_bytes:
            return
        for _mtime, size, subdir, name in sorted(entries):
            sub = safefs.open_private_subdir(top, subdir, create=False)
            if sub is None:
                continue
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=sub)
                total -= size
            os.close(sub)
            if total <= self.max_bytes * 0.8:
                break

    def close(self) -> None:
        self.trim()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


def _encode(key: str, fields: Dict[str, Value]) -> bytes:
    parts = []
    layout = []
    for name, value in fields.items():
        if isinstance(value, array.array):
            data = value.tobytes()
            layout.append([name, "a" + value.typecode, len(data)])
        elif isinstance(value, bytes):
            data = value
            layout.append([name, "b", len(data)])
        else:
            data = json.dumps(value).encode()
            layout.append([name, "j", len(data)])
        parts.append(data)
    payload = b"".join(parts)
    header = json.dumps(
        {"key": key, "fields": layout, "crc": zlib.crc32(payload), "size": len(payload)}
    ).encode()
    return MAGIC + _HEADER_LEN.pack(len(header)) + header + payload


def _decode(blob: bytes, key: str) -> Optional[Dict[str, Value]]:
    try:
        if blob[:4] != MAGIC:
            return None
        (header_len,) = _HEADER_LEN.unpack_from(blob, 4)
        header = json.loads(blob[8 : 8 + header_len])
        payload = blob[8 + header_len :]
        if header.get("key") != key or header.get("size") != len(payload):
            return None
        if zlib.crc32(payload) != header.get("crc"):
            return None
        out: Dict[str, Value] = {}
        pos = 0
        for name, kind, size in header["fields"]:
            data = payload[pos : pos + size]
            pos += size
            if len(data) != size:
                return None
            if kind.startswith("a"):
                values = array.array(kind[1])
                values.frombytes(data)
                out[name] = values
            elif kind == "b":
                out[name] = data
            elif kind == "j":
                out[name] = json.loads(data)
            else:
                return None
        return out if pos == len(payload) else None
    except (ValueError, TypeError, KeyError, struct.error, UnicodeDecodeError, MemoryError):
        return None
