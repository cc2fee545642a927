"""Many dumps, one picture (`stackdump merge`, `stackdump diff`): stacks grouped across hosts
and processes by what they name (function, file:line; an unnamed frame by object and offset),
never by address, which ASLR makes differ per host (docs/FORMAT.md "Merging dumps").

Inputs are read one at a time and folded into counts, so memory grows with the distinct
stacks, not with the inputs: a JSON dump (`--format json`, `--watch --format json`, schema 1)
or folded stacks (`--format folded`, a dump's or a profile's), either gzipped or not. A JSON
dump's host is its header's `host`, else its file's name up to the first `.`; a folded
file's, its file's name so.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from stackdump import safefs
from stackdump.errors import InvalidArgument
from stackdump.escape import quote
from stackdump.records import frozen
from stackdump.views import label_of

SCHEMA_VERSION = 1  # of the JSON dumps read here (writers/json_doc.py)
MAX_INPUT_BYTES = 1 << 30  # one input; a dump of 10,000 threads is tens of MiB
MAX_NAMES = 1000  # distinct thread names kept per stack; the rest are counted as OTHER_NAMES
OTHER_NAMES = "..."
THREAD = "thread"

# A frame as a merge knows it: (function or OBJECT+0xOFFSET, file, line, object, inlined).
MergedFrame = Tuple[str, Optional[str], Optional[int], Optional[str], bool]
# What is grouped: the kind of its members ("thread", or a coroutine's kind) and its frames,
# innermost first (inlined calls before the frame they are inlined in).
StackKey = Tuple[str, Tuple[MergedFrame, ...]]


class BadInput(InvalidArgument):
    """An input that cannot be merged: its file and what is wrong with it (exit 2)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{quote(path)}: {why}")
        self.path, self.why = path, why

    def __str__(self) -> str:
        return self.message


@frozen
class Input:
    """One input, read: where it came from and its members' stacks with their counts."""

    path: str
    host: str
    kind: str  # "json" or "folded"
    members: Dict[Tuple[StackKey, str], int]  # (stack, thread name) -> count


@dataclass
class StackTally:
    """One stack across the inputs."""

    count: int = 0
    hosts: bytearray = field(default_factory=bytearray)  # a bit per host index
    host_count: int = 0
    processes: int = 0  # inputs it was in
    names: Dict[str, int] = field(default_factory=dict)
    by_host: Optional[Dict[int, int]] = None  # host index -> count, when asked for (pprof)

    def add_host(self, index: int) -> None:
        byte, bit = divmod(index, 8)
        if byte >= len(self.hosts):
            self.hosts.extend(bytes(byte + 1 - len(self.hosts)))
        if not self.hosts[byte] & (1 << bit):
            self.hosts[byte] |= 1 << bit
            self.host_count += 1

    def host_indexes(self) -> Iterator[int]:
        for byte, bits in enumerate(self.hosts):
            for bit in range(8):
                if bits & (1 << bit):
                    yield byte * 8 + bit

    def add_name(self, name: str, count: int) -> None:
        if name in self.names or len(self.names) < MAX_NAMES:
            self.names[name] = self.names.get(name, 0) + count
        else:
            self.names[OTHER_NAMES] = self.names.get(OTHER_NAMES, 0) + count


@dataclass
class Merged:
    """Every input's stacks, summed; `hosts` in the order first seen."""

    stacks: Dict[StackKey, StackTally] = field(default_factory=dict)
    hosts: List[str] = field(default_factory=list)
    inputs: List[Tuple[str, str, str, int]] = field(default_factory=list)  # path, host, kind, n
    skipped: List[BadInput] = field(default_factory=list)
    by_host: bool = False
    _host_index: Dict[str, int] = field(default_factory=dict)

    def add(self, read: Input) -> None:
        host = self._host_index.get(read.host)
        if host is None:
            host = self._host_index[read.host] = len(self.hosts)
            self.hosts.append(read.host)
        in_this: set = set()
        for (key, name), count in read.members.items():
            tally = self.stacks.get(key)
            if tally is None:
                tally = self.stacks[key] = StackTally(by_host={} if self.by_host else None)
            tally.count += count
            tally.add_name(name, count)
            if key not in in_this:
                in_this.add(key)
                tally.processes += 1
                tally.add_host(host)
            if tally.by_host is not None:
                tally.by_host[host] = tally.by_host.get(host, 0) + count
        self.inputs.append((read.path, read.host, read.kind, sum(read.members.values())))

    @property
    def processes(self) -> int:
        return len(self.inputs)

    def members(self, kind: Optional[str] = None) -> int:
        return sum(t.count for k, t in self.stacks.items() if kind is None or k[0] == kind)

    def ranked(self) -> List[Tuple[StackKey, StackTally]]:
        """Biggest first; equal counts by how many hosts, then as first seen."""
        return sorted(self.stacks.items(), key=lambda item: (-item[1].count, -item[1].host_count))

    def outlier(self, tally: StackTally) -> bool:
        """Seen on only a few hosts of many: on at most a tenth of them (one of up to 19), when
        there are three hosts or more."""
        hosts = len(self.hosts)
        return hosts >= 3 and tally.host_count <= max(1, hosts // 10)

    def summary(self) -> Dict[str, int]:
        """The closing counts, in the order the text prints them (JSON has them all)."""
        threads = self.members(THREAD)
        return {
            "inputs": len(self.inputs),
            "hosts": len(self.hosts),
            "processes": self.processes,
            "threads": threads,
            "coroutines": self.members() - threads,
            "distinct_stacks": len(self.stacks),
            "outliers": sum(1 for t in self.stacks.values() if self.outlier(t)),
            "skipped_inputs": len(self.skipped),
        }

    def host_names(self, tally: StackTally, limit: int = 10) -> List[str]:
        out = []
        for index in tally.host_indexes():
            if len(out) == limit:
                break
            out.append(self.hosts[index])
        return out


def merge(paths: Sequence[str], keep_going: bool, by_host: bool = False) -> Merged:
    """Read and fold in each input, one at a time. A bad input raises BadInput, or with
    `keep_going` is recorded in `skipped` and the rest still merge."""
    merged = Merged(by_host=by_host)
    for path in paths:
        try:
            merged.add(read_input(path))
        except BadInput as e:
            if not keep_going:
                raise
            merged.skipped.append(e)
    return merged


def expand(paths: Iterable[str]) -> List[str]:
    """Each path, or for a directory the regular files in it, by name (a set of dumps)."""
    out: List[str] = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(os.listdir(path))
            out.extend(os.path.join(path, n) for n in names if not n.startswith("."))
        else:
            out.append(path)
    return out


def read_input(path: str) -> Input:
    data = _read(path)
    start = data.lstrip()[:1]
    host = _stem(path)
    if start == b"{":
        return _json_input(path, data, host)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(
            path, "neither a JSON dump nor folded stacks (binary: a pprof profile?)"
        ) from None
    return Input(path, host, "folded", _folded(path, text))


def _read(path: str) -> bytes:
    try:
        fd = safefs.open_regular(path)
    except safefs.NotRegularFile as e:
        raise BadInput(path, e.strerror) from None
    except OSError as e:
        raise BadInput(path, e.strerror or str(e)) from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_INPUT_BYTES + 1)
        if data[:2] == _GZIP:  # a dump gzipped on its way from the host: read through
            f.seek(0)
            data = _gunzip(path, f)
    if len(data) > MAX_INPUT_BYTES:
        raise BadInput(path, f"larger than {MAX_INPUT_BYTES >> 20} MiB")
    if not data.strip():
        raise BadInput(path, "empty")
    return data


_GZIP = b"\x1f\x8b"


def _gunzip(path: str, f) -> bytes:
    """A gzipped input, inflated to at most MAX_INPUT_BYTES + 1 (a bomb stops there)."""
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as inflated:
            data = inflated.read(MAX_INPUT_BYTES + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise BadInput(path, f"gzip data that cannot be inflated ({e})") from None
    return data


def _stem(path: str) -> str:
    name = os.path.basename(path)
    return name.split(".", 1)[0] or name


def _json_input(path: str, data: bytes, host: str) -> Input:
    written = _as_written(data)
    document, members = written if written is not None else (_parse(path, data), None)
    if not isinstance(document, dict) or "schema" not in document:
        raise BadInput(path, 'JSON, but not a stackdump dump (no "schema" key)')
    if document["schema"] != SCHEMA_VERSION:
        raise BadInput(
            path,
            f"a dump of schema {document['schema']!r}; this stackdump reads schema "
            f"{SCHEMA_VERSION} (a newer stackdump wrote it?)",
        )
    try:
        header = document["header"]
        if members is None:
            members = _members(document.get("threads") or [], THREAD)
        for c in document.get("coroutines") or []:
            key = (_stack_key(c["coroutine"], c["frames"], c.get("status")), c["coroutine"])
            members[key] = members.get(key, 0) + 1
        host = header.get("host") or host
    except (KeyError, TypeError, AttributeError) as e:
        raise BadInput(path, f"a schema-1 document missing what a dump has ({e!r})") from None
    return Input(path, str(host), "json", members)


def _parse(path: str, data: bytes) -> object:
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        # It ends where the parser needed more: at the end, or inside a string never closed
        # (a raw line break in a string is another error: strings cannot span lines).
        # A literal cut short (`tru`, `nul`) fails where it starts, up to 5 bytes before.
        end = len(data.rstrip())
        if e.msg.startswith("Unterminated string") or (e.pos >= end - 5 and e.msg != "Extra data"):
            raise BadInput(path, f"truncated JSON (it ends at byte {len(data)})") from None
        raise BadInput(path, f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError:
        raise BadInput(path, "not JSON: not UTF-8") from None


_FIRST_END = ', "threads": ['
_FRAMES = ', "frames": ['
_NAME_STATUS = re.compile(r'"name": ("(?:[^"\\]|\\.)*"), "status": "([a-z_]+)"')


def _as_written(data: bytes) -> Optional[Tuple[dict, Dict[Tuple[StackKey, str], int]]]:
    """A document as stackdump writes it (writers/json_doc.py: the header on the first line,
    then one thread per line) read without parsing every thread: threads of one stack in one
    process have the same text from `"frames"` on, which is parsed once; a thread's name and
    status are all the rest a merge needs. None when the document is laid out otherwise (or
    damaged): then it is parsed whole, and its errors said."""
    try:
        lines = data.decode("utf-8").split("\n")
        first = lines[0]
        if not (first.startswith('{"schema": ') and first.endswith(_FIRST_END)):
            return None
        document = json.loads(first[: -len(_FIRST_END)] + "}")
        end = lines.index("],", 1)
        document.update(json.loads("{" + "\n".join(lines[end + 1 :])))
        members: Dict[Tuple[StackKey, str], int] = {}
        stacks: Dict[Tuple[str, str], StackKey] = {}
        for line in lines[1:end]:
            at = line.find(_FRAMES)
            found = _NAME_STATUS.search(line, 0, at)
            if at < 0 or found is None:
                return None
            raw_name, status = found.groups()
            tail = line[at + 2 :].rstrip(",")
            stack = stacks.get((tail, status))
            if stack is None:
                frames = json.loads("{" + tail)["frames"]
                stack = stacks[(tail, status)] = _stack_key(THREAD, frames, status)
            key = (stack, json.loads(raw_name) if "\\" in raw_name else raw_name[1:-1])
            members[key] = members.get(key, 0) + 1
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return document, members


def _members(threads: list, kind: str) -> Dict[Tuple[StackKey, str], int]:
    members: Dict[Tuple[StackKey, str], int] = {}
    for t in threads:
        key = (_stack_key(kind, t["frames"], t.get("status")), str(t["name"]))
        members[key] = members.get(key, 0) + 1
    return members


def _stack_key(kind: str, frames: list, status: Optional[str]) -> StackKey:
    if not frames:
        return (kind, ((f"<no stack: {status}>", None, None, None, False),))
    out: List[MergedFrame] = []
    for f in frames:
        obj = f.get("object")
        for call in f.get("inlined") or ():
            out.append((call.get("function") or "?", call.get("file"), call.get("line"), obj, True))
        out.append((_label(f), f.get("file"), f.get("line"), obj, False))
    return (kind, tuple(out))


def _label(f: dict) -> str:
    """As the dump named it (views.frame_label): a JSON dump's frame has the same parts."""
    return label_of(
        f.get("function") or None, f.get("object"), f.get("object_offset"), f.get("pc", 0)
    )


def _folded(path: str, text: str) -> Dict[Tuple[StackKey, str], int]:
    """`NAME;OUTERMOST;...;INNERMOST COUNT` lines; the first part is the thread's name."""
    members: Dict[Tuple[StackKey, str], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            raise BadInput(path, f"line {number} is not 'NAME;FRAME;... COUNT' folded stacks")
        name, *outer_first = stack.split(";")
        frames = tuple((label, None, None, None, False) for label in reversed(outer_first))
        key = ((THREAD, frames), name)
        members[key] = members.get(key, 0) + int(count_text)
    return members


@frozen
class Change:
    """One stack's members per process before and after (`stackdump diff`)."""

    key: StackKey
    before: Optional[StackTally]
    after: Optional[StackTally]
    before_mean: float  # members per input process
    after_mean: float

    @property
    def delta(self) -> float:
        return self.after_mean - self.before_mean


@frozen
class Diff:
    before: Merged
    after: Merged
    changes: Tuple[Change, ...]  # the biggest change first, in either direction
    unchanged: int

    def summary(self) -> Dict[str, int]:
        """How many stacks grew (new ones included), shrank (gone ones included), are new,
        are gone, and did not change."""
        grew = sum(1 for c in self.changes if c.delta > 0)
        return {
            "grew": grew,
            "shrank": len(self.changes) - grew,
            "new": sum(1 for c in self.changes if c.before is None),
            "gone": sum(1 for c in self.changes if c.after is None),
            "unchanged": self.unchanged,
        }


def diff(before: Merged, after: Merged) -> Diff:
    """Each stack's members per process, after against before, biggest change first: two sets
    of different sizes (one sick host against twenty healthy ones) compare fairly."""
    per_before = max(1, before.processes)
    per_after = max(1, after.processes)
    changes: List[Change] = []
    unchanged = 0
    for key in {**before.stacks, **after.stacks}:
        b, a = before.stacks.get(key), after.stacks.get(key)
        b_mean = b.count / per_before if b else 0.0
        a_mean = a.count / per_after if a else 0.0
        if abs(a_mean - b_mean) < 1e-9:
            unchanged += 1
            continue
        changes.append(Change(key, b, a, b_mean, a_mean))
    changes.sort(key=lambda c: (-abs(c.delta), -(c.after_mean + c.before_mean)))
    return Diff(before, after, tuple(changes), unchanged)
