"""Frame-pointer walk over copied stack bytes, with Doris's checks.

A frame record is two words at the frame pointer: the caller's frame pointer, then the return
address. The chain is trusted only while each record is 8-byte aligned, lies wholly inside the
stack mapping that holds the stack pointer, and sits strictly above the previous one; a saved
frame pointer of 0 ends it (the outermost frame zeroes rbp).
"""

from __future__ import annotations

from typing import List, Optional

from stackdump.types import FpStatus, Frame
from stackdump.unwind.memory import StackMemory


def record_status(memory: StackMemory, fp: int) -> Optional[FpStatus]:
    """None when a frame record at fp can be read, else the fp_status that explains why not."""
    if fp % 8 or not memory.in_mapping(fp, 16):
        return FpStatus.INVALID_FRAME_POINTER
    if not memory.in_copy(fp, 16):
        return FpStatus.STACK_COPY_LIMIT
    return None


def walk(
    memory: StackMemory,
    fp: int,
    sp: int,
    frames: List[Frame],
    max_frames: int,
    address_mask: int = 0xFFFF_FFFF_FFFF_FFFF,
) -> FpStatus:
    """Append the return addresses of the chain starting at fp to `frames`; return fp_status.

    `frames` already holds the frames found so far (at least the innermost one).
    `address_mask`: what a saved return address keeps (aarch64 signs its top bits).
    """
    if not memory.in_mapping(sp, 1) or fp < sp:
        return FpStatus.NO_STACK_RANGE
    current = fp
    while len(frames) < max_frames:
        status = record_status(memory, current)
        if status:
            return status
        next_fp = memory.read_word(current)
        return_address = memory.read_word(current + 8)
        assert next_fp is not None and return_address is not None
        return_address &= address_mask
        if return_address:
            frames.append(Frame(pc=return_address, sp=current + 16, cfa=current + 16))
        if next_fp == 0:
            return FpStatus.END_OF_CHAIN
        if next_fp <= current:
            return FpStatus.INVALID_FRAME_POINTER
        status = record_status(memory, next_fp)
        if status:
            return status
        current = next_fp
    return FpStatus.FRAME_LIMIT
