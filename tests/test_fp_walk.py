"""The frame-pointer walk on hand-built stack bytes: each fp_status and its boundary."""

from __future__ import annotations

import struct

from stackdump.types import FpStatus, Frame
from stackdump.unwind import fp
from stackdump.unwind.memory import StackMemory

BASE = 0x7FFF0000
MAP_END = BASE + 0x1000


def stack(words, copied=None):
    data = b"".join(struct.pack("<Q", w) for w in words)
    if copied is not None:
        data = data[:copied]
    return StackMemory(BASE, data, BASE, MAP_END)


def run(memory, fp_value, max_frames=64):
    frames = [Frame(pc=0x401000, activation=True)]
    status = fp.walk(memory, fp_value, BASE, frames, max_frames)
    return status, [f.pc for f in frames]


def chain(*records):
    """Frame records at BASE+0x10*i: (next record index or None, return address)."""
    words = []
    for nxt, ra in records:
        words += [0 if nxt is None else BASE + 0x10 * nxt, ra]
    return words


def test_chain_ending_in_zero():
    status, pcs = run(stack(chain((1, 0x401111), (2, 0x402222), (None, 0x403333))), BASE)
    assert status == FpStatus.END_OF_CHAIN
    assert pcs == [0x401000, 0x401111, 0x402222, 0x403333]


def test_chain_that_does_not_grow_is_invalid():
    status, pcs = run(stack(chain((1, 0x401111), (0, 0x402222))), BASE)
    assert status == FpStatus.INVALID_FRAME_POINTER
    assert pcs == [0x401000, 0x401111, 0x402222]


def test_misaligned_frame_pointer_is_invalid():
    status, pcs = run(stack(chain((1, 0x401111)) + [0, 0]), BASE + 4)
    assert status == FpStatus.INVALID_FRAME_POINTER
    assert pcs == [0x401000]


def test_next_record_outside_the_mapping_is_invalid():
    words = [MAP_END + 0x100, 0x401111]
    status, pcs = run(stack(words), BASE)
    assert status == FpStatus.INVALID_FRAME_POINTER
    assert pcs == [0x401000, 0x401111]


def test_record_beyond_the_copy_is_a_copy_limit():
    status, pcs = run(stack(chain((1, 0x401111), (None, 0x402222)), copied=16), BASE)
    assert status == FpStatus.STACK_COPY_LIMIT
    assert pcs == [0x401000, 0x401111]


def test_frame_pointer_below_stack_pointer_has_no_stack_range():
    memory = stack(chain((None, 0x401111)))
    frames = [Frame(pc=0x401000, activation=True)]
    assert fp.walk(memory, BASE - 16, BASE, frames, 64) == FpStatus.NO_STACK_RANGE


def test_frame_limit_counts_the_innermost_frame():
    status, pcs = run(stack(chain((1, 0x1), (2, 0x2), (3, 0x3), (None, 0x4))), BASE, max_frames=3)
    assert status == FpStatus.FRAME_LIMIT
    assert pcs == [0x401000, 0x1, 0x2]
