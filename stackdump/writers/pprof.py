"""A profile (`--samples`) as pprof's profile.proto, gzipped: what `go tool pprof` reads.

The protobuf wire format is written by hand (varints and length-delimited fields are all this
message needs). Layout, as github.com/google/pprof/proto/profile.proto defines it:
- sample types `samples/count` and `wall/nanoseconds` (a thread-sample is worth one interval);
- one sample per (thread, stack, state), labelled `thread` (name), `tid` and `state`
  (running/blocked), plus `syscall` and `wchan` where the thread was blocked in one, and a
  coroutine's profiler labels (`ThreadRun.labels`) as labels of their own;
- one location per distinct pc, with its mapping (the mapped object, build-id) and its
  lines: the functions inlined at the pc first, the physical function last, as pprof wants;
- one function per (name, file).
"""

from __future__ import annotations

import gzip
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple

from stackdump.escape import escape
from stackdump.profiles import Profile
from stackdump.types import ModuleEntry, SymbolizedFrame
from stackdump.views import frame_label


def pprof_bytes(profile: Profile) -> bytes:
    return gzip.compress(_Encoder(profile).encode(), mtime=0)


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 negatives as two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value) if value else b""


def field_bytes(number: int, data: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(data)) + data


def packed(number: int, values: List[int]) -> bytes:
    return field_bytes(number, b"".join(varint(v) for v in values)) if values else b""


class Tables:
    """What every profile.proto stackdump writes shares: the string table (index 0 is ""),
    functions by (name, file), and locations by a key of the writer's, each with its lines
    innermost first. `messages()` writes locations, functions and strings: after every
    message that refers to them. `text`: how a string is written (the profile writer
    escapes it as the text report does; the merge's strings were escaped by their reports)."""

    def __init__(self, text: Callable[[str], str] = str) -> None:
        self.strings: Dict[str, int] = {"": 0}
        self.functions: Dict[Tuple[str, str], int] = {}
        self.locations: Dict[Hashable, int] = {}
        self._location_data: List[bytes] = []
        self._text = text

    def s(self, text: Optional[str]) -> int:
        if not text:
            return 0
        return self.strings.setdefault(text, len(self.strings))

    def label(self, key: str, value: str) -> bytes:
        return field_bytes(3, field_varint(1, self.s(key)) + field_varint(2, self.s(value)))

    def location(
        self,
        key: Hashable,
        lines: Sequence[Tuple[str, Optional[str], Optional[int]]],
        address: int = 0,
        mapping: int = 0,
    ) -> int:
        """The id of the location `key` names, made with these (function, file, line)s
        the first time."""
        lid = self.locations.get(key)
        if lid is not None:
            return lid
        lid = self.locations[key] = len(self.locations) + 1
        body = field_varint(1, lid) + field_varint(3, address) + field_varint(2, mapping)
        for function, file, line in lines:
            fid = self.functions.setdefault((function, file or ""), len(self.functions) + 1)
            body += field_bytes(4, field_varint(1, fid) + field_varint(2, line or 0))
        self._location_data.append(body)
        return lid

    def messages(self) -> bytes:
        out = bytearray()
        for data in self._location_data:
            out += field_bytes(4, data)
        for (name, file), fid in self.functions.items():
            name_id = self.s(name)
            body = field_varint(1, fid) + field_varint(2, name_id) + field_varint(3, name_id)
            out += field_bytes(5, body + field_varint(4, self.s(file)))
        for text in self.strings:
            out += field_bytes(6, self._text(text).encode("utf-8"))
        return bytes(out)


class _Encoder:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        # Escaped as the text report escapes them: a string field holds valid UTF-8.
        self.tables = Tables(escape)
        self.s = self.tables.s
        self.label = self.tables.label
        self.mappings: List[ModuleEntry] = list(profile.modules)

    def encode(self) -> bytes:
        p = self.profile
        out = bytearray()
        interval_ns = p.interval_ms * 1_000_000
        for kind, unit in (("samples", "count"), ("wall", "nanoseconds")):
            out += field_bytes(1, field_varint(1, self.s(kind)) + field_varint(2, self.s(unit)))
        counts: Dict[tuple, int] = {}
        for t in p.runs:
            key = (t.tid, t.stack, t.state, t.syscall, t.wchan, t.labels)
            counts[key] = counts.get(key, 0) + t.count
        for (tid, stack_id, state, syscall, wchan, labels), count in counts.items():
            ids = [self.location(f) for f in p.stacks[stack_id]]
            body = packed(1, ids) + packed(2, [count, count * interval_ns])
            body += self.label("thread", p.names.get(tid, "?"))
            body += field_bytes(3, field_varint(1, self.s("tid")) + field_varint(3, tid))
            body += self.label("state", state)
            if syscall:
                body += self.label("syscall", syscall)
            if wchan:
                body += self.label("wchan", wchan)
            for key, value in labels:
                body += self.label(key, value)
            out += field_bytes(2, body)
        for i, m in enumerate(self.mappings, start=1):
            body = (
                field_varint(1, i)
                + field_varint(2, m.start)
                + field_varint(3, m.end)
                + field_varint(4, m.offset)
                + field_varint(5, self.s(m.path))
                + field_varint(6, self.s(m.build_id))
                + field_varint(7, 1 if m.symbols not in ("none", "unread") else 0)
                + field_varint(8, 1 if m.dwarf else 0)
                + field_varint(9, 1 if m.dwarf else 0)
                + field_varint(10, 1 if m.dwarf else 0)
            )
            out += field_bytes(3, body)
        out += self.tables.messages()  # the string table last: every index is known by now
        out += field_varint(9, p.started_ns)
        out += field_varint(10, p.duration_ns)
        out += field_bytes(
            11, field_varint(1, self.s("wall")) + field_varint(2, self.s("nanoseconds"))
        )
        out += field_varint(12, interval_ns)
        return bytes(out)

    def location(self, frame: SymbolizedFrame) -> int:
        """One location per distinct pc: the functions inlined there first, the physical
        function last."""
        lines = [(c.function, c.file, c.line) for c in frame.inlined]
        lines.append((frame.function, frame.file, frame.line))
        named = [(function or frame_label(frame), file, line) for function, file, line in lines]
        return self.tables.location(frame.pc, named, frame.pc, self.mapping_of(frame.pc))

    def mapping_of(self, pc: int) -> int:
        for i, m in enumerate(self.mappings, start=1):
            if m.start <= pc < m.end:
                return i
        return 0


def pprof_profile(profile: Profile, view) -> bytes:
    """The pprof format of a profile (writers/registry.py)."""
    return pprof_bytes(profile)
