"""Unwinds remembered by what decided them (issue 31): 100,000 coroutines
parked in the same few places have the same frames, each on its own stack; so do the threads
of a pool copied in place (passive capture) while blocked in one call, and an event loop's
thread back in the same epoll_wait at each sample of a profile.

An unwind is a deterministic function of the registers, the pcs' CFI rows and code (the same
for the same pcs) and what it read of the stack copy. `Recorder` stands in for the copy
(`memory.StackMemory`) during one unwind and notes every question asked of it and every
answer, with addresses and values that lie in the stack's mapping written relative to the
stack pointer (another stack has other addresses, the same offsets) and all others as they
are. Another thread whose registers say the same in those terms, and whose stack answers
every noted question the same way, would be unwound the same way: `Traces.find` returns
that unwind's result without walking. The frames a result keeps hold pcs and how each was
found, never a stack address, so they are the same for both.

Only unwinds that end without an error message are kept (a message may quote an address),
and none over a stack with extra regions (a signal's alternate stack).
"""

from __future__ import annotations

import bisect
import operator
import struct
from typing import Dict, List, Optional, Tuple

from stackdump.unwind.memory import StackMemory

Normal = Tuple[bool, int]  # (relative to sp, value)
_READ, _IN_MAPPING, _IN_ANY, _IN_COPY, _BASE, _END, _MAP_START, _MAP_END = range(8)
_PER_KEY = 8  # traces kept per registers key: a few call paths park at one pc
_MAX_OPS = 512  # a longer walk is not worth remembering (and bounds the memo)
_MAX_KEYS = 10_000


class Recorder:
    """A StackMemory that notes what the unwinder asks of it (see the module docstring).
    Each note is (question, address relative to sp?, address or offset, answer)."""

    __slots__ = ("_memory", "_sp", "_low", "_high", "ops")

    def __init__(self, memory: StackMemory, sp: int) -> None:
        self._memory = memory
        self._sp = sp
        self._low, self._high = memory.map_start, memory.map_end
        self.ops: Dict[tuple, object] = {}  # the same question is asked by both walks

    def normal(self, value: Optional[int]) -> Optional[Normal]:
        if value is None:
            return None
        if self._low <= value < self._high:
            return True, value - self._sp
        return False, value

    def _note(self, kind: int, address: int, answer: object) -> None:
        if self._low <= address < self._high:
            self.ops[(kind, True, address - self._sp)] = answer
        else:
            self.ops[(kind, False, address)] = answer

    def read_word(self, address: int) -> Optional[int]:
        value = self._memory.read_word(address)
        self._note(_READ, address, self.normal(value))
        return value

    def in_mapping(self, address: int, size: int = 8) -> bool:
        answer = self._memory.in_mapping(address, size)
        self._note(_IN_MAPPING, address, (size, answer))
        return answer

    def in_any_mapping(self, address: int, size: int = 8) -> bool:
        answer = self._memory.in_any_mapping(address, size)
        self._note(_IN_ANY, address, (size, answer))
        return answer

    def in_copy(self, address: int, size: int = 8) -> bool:
        answer = self._memory.in_copy(address, size)
        self._note(_IN_COPY, address, (size, answer))
        return answer

    def _field(self, kind: int, value: int) -> int:
        self.ops[(kind, False, 0)] = self.normal(value)
        return value

    @property
    def base(self) -> int:
        return self._field(_BASE, self._memory.base)

    @property
    def end(self) -> int:
        return self._field(_END, self._memory.end)

    @property
    def map_start(self) -> int:
        return self._field(_MAP_START, self._memory.map_start)

    @property
    def map_end(self) -> int:
        return self._field(_MAP_END, self._memory.map_end)

    @property
    def extra(self) -> tuple:
        return ()

    def trace(self) -> Tuple[tuple, ...]:
        """The notes, reads first (they fail most often between two stacks)."""
        return tuple(sorted(((k, r, a, v) for (k, r, a), v in self.ops.items()), key=_first))


def _first(op: tuple) -> int:
    return op[0]


_FIELDS = {_BASE: "base", _END: "end", _MAP_START: "map_start", _MAP_END: "map_end"}
_WORD = struct.Struct("<Q")


def _answers_alike(ops: Tuple[tuple, ...], memory: StackMemory, sp: int) -> bool:
    """Whether `memory` answers every noted question as the recorded stack did. (The hot
    path of 100,000 coroutines: reads of the copy are done here, not through methods.)"""
    low, high = memory.map_start, memory.map_end
    data, base, end = memory.data, memory.base, memory.end
    unpack = _WORD.unpack_from
    for kind, relative, at, answer in ops:
        address = sp + at if relative else at
        if kind == _READ:
            if base <= address and address + 8 <= end:
                value = unpack(data, address - base)[0]
            else:
                value = memory.read_word(address)
            if value is None:
                got = None
            elif low <= value < high:
                got = (True, value - sp)
            else:
                got = (False, value)
            if got != answer:
                return False
        elif kind == _IN_MAPPING:
            if memory.in_mapping(address, answer[0]) != answer[1]:
                return False
        elif kind == _IN_COPY:
            if memory.in_copy(address, answer[0]) != answer[1]:
                return False
        elif kind == _IN_ANY:
            if memory.in_any_mapping(address, answer[0]) != answer[1]:
                return False
        else:
            value = getattr(memory, _FIELDS[kind])
            got = (True, value - sp) if low <= value < high else (False, value)
            if got != answer:
                return False
    return True


class Trace:
    """A remembered walk's notes, checked against another stack the fast way where they
    allow it (the hot path of 100,000 coroutines; `_answers_alike` is the meaning):

    - reads of the copy at offsets from sp whose answers were words: one `unpack_from` of
      them all, then the words that pointed into the stack compared as offsets from sp
      (one `map`) and the others as they are (one tuple compare);
    - "inside the mapping" and "inside the copy" answered yes at offsets from sp: one
      bounds check each (the lowest and highest offset asked);
    - every other note (an answer no, an address outside the stack, a read that failed)
      by `_answers_alike`."""

    __slots__ = (
        "ops", "_first", "_span", "_words", "_own", "_own_offsets", "_own_bounds", "_others",
        "_other_values", "_outside", "_mapped", "_copied", "_rest",
    )  # fmt: skip

    def __init__(self, ops: Tuple[tuple, ...]) -> None:
        self.ops = ops
        reads, mapped, copied, rest = [], [], [], []
        for op in ops:
            kind, relative, at, answer = op
            if relative and kind == _READ and answer is not None:
                reads.append((at, answer))
            elif relative and kind in (_IN_MAPPING, _IN_COPY) and answer[1]:
                (mapped if kind == _IN_MAPPING else copied).append((at, at + answer[0]))
            else:
                rest.append(op)
        reads.sort()
        if any(b[0] - a[0] < 8 for a, b in zip(reads, reads[1:])):
            # Words that overlap (an odd frame pointer's): not one unpack.
            rest.extend((_READ, True, at, answer) for at, answer in reads)
            reads = []
        self._rest = tuple(rest)
        self._mapped = (min(a for a, _ in mapped), max(e for _, e in mapped)) if mapped else None
        self._copied = (min(a for a, _ in copied), max(e for _, e in copied)) if copied else None
        self._first = reads[0][0] if reads else 0
        self._span = reads[-1][0] + 8 - self._first if reads else 0
        layout, at = "<", self._first
        for offset, _answer in reads:
            layout += f"{offset - at}xQ" if offset > at else "Q"
            at = offset + 8
        self._words = struct.Struct(layout).unpack_from if reads else None
        own = [i for i, (_at, answer) in enumerate(reads) if answer[0]]
        others = [i for i, (_at, answer) in enumerate(reads) if not answer[0]]
        self._own = _getter(own)
        self._own_offsets = tuple(reads[i][1][1] for i in own)
        self._own_bounds = (min(self._own_offsets), max(self._own_offsets)) if own else None
        self._others = _getter(others)
        self._other_values = tuple(reads[i][1][1] for i in others)
        self._outside = sorted(set(self._other_values))  # none may lie in the mapping

    def alike(self, memory: StackMemory, sp: int) -> bool:
        if self._words is not None:
            start = sp + self._first
            if start < memory.base or start + self._span > memory.end:
                return _answers_alike(self.ops, memory, sp)
            words = self._words(memory.data, start - memory.base)
            low, high = memory.map_start, memory.map_end
            if tuple(map(sp.__rsub__, self._own(words))) != self._own_offsets:
                return False
            bounds = self._own_bounds
            if bounds is not None and not (low <= sp + bounds[0] and sp + bounds[1] < high):
                return False
            if self._others(words) != self._other_values:
                return False
            outside = self._outside
            i = bisect.bisect_left(outside, low)
            if i < len(outside) and outside[i] < high:
                return False
        if self._mapped is not None and not (
            memory.map_start <= sp + self._mapped[0] and sp + self._mapped[1] <= memory.map_end
        ):
            return False
        if self._copied is not None and not (
            memory.base <= sp + self._copied[0] and sp + self._copied[1] <= memory.end
        ):
            return False
        return not self._rest or _answers_alike(self._rest, memory, sp)


def _getter(indexes: List[int]):
    """The items at `indexes` as a tuple, by one C call."""
    if not indexes:
        return lambda words: ()
    if len(indexes) == 1:
        (i,) = indexes
        return lambda words: (words[i],)
    return operator.itemgetter(*indexes)


class Traces:
    """Remembered unwinds by registers key. Made per address-space layout (the engine's memo
    for the same maps): the same pc means the same code only there."""

    def __init__(self) -> None:
        self._kept: Dict[tuple, List[Tuple[Trace, object]]] = {}
        self.hits = 0

    @staticmethod
    def key(registers: Dict[int, int], sp: int, memory: StackMemory, extra: tuple) -> tuple:
        """What of the registers an unwind may use, in the recorder's terms, and `extra`
        (what else decides the result: the kind of thread)."""
        low, high = memory.map_start, memory.map_end
        return (
            extra,
            tuple(
                (reg, True, value - sp) if low <= value < high else (reg, False, value)
                for reg, value in sorted(registers.items())
            ),
        )

    def find(self, key: tuple, memory: StackMemory, sp: int) -> Optional[object]:
        if memory.extra:
            return None
        kept = self._kept.get(key, ())
        for i, (trace, result) in enumerate(kept):
            if trace.alike(memory, sp):
                self.hits += 1
                if i:  # the most used first: most coroutines park on one path
                    kept.insert(0, kept.pop(i))
                return result
        return None

    def keep(self, key: tuple, recorder: Recorder, result: object) -> None:
        if len(recorder.ops) > _MAX_OPS or (key not in self._kept and len(self._kept) >= _MAX_KEYS):
            return
        kept = self._kept.setdefault(key, [])
        kept.insert(0, (Trace(recorder.trace()), result))
        del kept[_PER_KEY:]  # the least recently used goes
