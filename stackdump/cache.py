"""On-disk cache of what symbol and location lookups need, keyed by object identity.

Entries hold plain data (integer arrays, raw bytes, JSON lists), never pickles: a cache
directory is not trusted input. Each entry carries a magic, its full key and a CRC of its
payload; an entry that fails any check is deleted and recomputed, never trusted.

Writes go to a temporary file renamed into place, so two stackdumps running at once never
see a half-written entry. The directory is bounded: after a dump, the oldest entries are
removed until it is back under the limit.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import struct
import zlib
from typing import Callable, Dict, Optional, TypeVar, Union

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
    """get/put of named fields under a string key. A `None` directory disables it."""

    def __init__(self, directory: Optional[str], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.hits = 0
        self._wrote = False

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def _path(self, key: str) -> str:
        # A file name, not a secret: each entry carries its full key, so a collision costs a
        # rebuild, never a wrong answer. zlib's checksums spare hashlib's import (~3 ms, every
        # run pays it).
        data = f"{FORMAT_VERSION}\0{key}".encode()
        digest = f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"
        return os.path.join(self.directory, digest[:2], digest[2:])

    def get(self, key: str) -> Optional[Dict[str, Value]]:
        if not self.enabled:
            return None
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError:
            return None
        value = _decode(blob, key)
        if value is None:
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        self.hits += 1
        return value

    def put(self, key: str, fields: Dict[str, Value]) -> None:
        if not self.enabled:
            return
        path = self._path(key)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            import tempfile  # only a dump that builds something writes (~2 ms to import)

            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_encode(key, fields))
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            self._wrote = True
        except OSError:
            pass  # a read-only or full disk costs speed, not correctness

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
        if not self.enabled or not self._wrote:
            return
        entries = []
        total = 0
        for root, _dirs, files in os.walk(self.directory):
            for name in files:
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                entries.append((st.st_mtime, st.st_size, path))
                total += st.st_size
        if total <= self.max_bytes:
            return
        for _mtime, size, path in sorted(entries):
            with contextlib.suppress(OSError):
                os.unlink(path)
                total -= size
            if total <= self.max_bytes * 0.8:
                break


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
