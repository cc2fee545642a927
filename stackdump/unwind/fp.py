"""Frame-pointer walk over copied stack bytes, with Doris's checks.

A frame record is two words at the frame pointer: the caller's frame pointer, then the return
address. The chain is trusted only while each record is 8-byte aligned, lies wholly inside the
stack mapping that holds the stack pointer, and sits strictly above the previous one; a saved
frame pointer of 0 ends it (the outermost frame zeroes rbp).
"""

from __future__ import annotations

from typing import List

from stackdump.types import Frame
from stackdump.unwind.memory import StackMemory

END_OF_CHAIN = "end_of_chain"
NO_STACK_RANGE = "no_stack_range"
INVALID_FRAME_POINTER = "invalid_frame_pointer"
FRAME_LIMIT = "frame_limit"
STACK_COPY_LIMIT = "stack_copy_limit"


def record_status(memory: StackMemory, fp: int) -> str:
    """'' when a frame record at fp can be read, else the fp_status that explains why not."""
    if fp % 8 or not memory.in_mapping(fp, 16):
        return INVALID_FRAME_POINTER
    if not memory.in_copy(fp, 16):
        return STACK_COPY_LIMIT
    return ""


def walk(memory: StackMemory, fp: int, sp: int, frames: List[Frame], max_frames: int) -> str:
    """Append the return addresses of the chain starting at fp to `frames`; return fp_status.

    `frames` already holds the frames found so far (at least the innermost one).
    """
    if not memory.in_mapping(sp, 1) or fp < sp:
        return NO_STACK_RANGE
    current = fp
    while len(frames) < max_frames:
        status = record_status(memory, current)
        if status:
            return status
        next_fp = memory.read_word(current)
        return_address = memory.read_word(current + 8)
        assert next_fp is not None and return_address is not None
        if return_address:
            frames.append(Frame(pc=return_address, sp=current + 16, cfa=current + 16))
        if next_fp == 0:
            return END_OF_CHAIN
        if next_fp <= current:
            return INVALID_FRAME_POINTER
        status = record_status(memory, next_fp)
        if status:
            return status
        current = next_fp
    return FRAME_LIMIT
