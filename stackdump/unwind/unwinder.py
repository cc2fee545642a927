"""Turn one ThreadSnapshot into physical frames, working only on the copied bytes."""

from __future__ import annotations

from typing import List

from stackdump.types import Frame, ThreadSnapshot, UnwindResult
from stackdump.unwind import fp
from stackdump.unwind.memory import StackMemory

_FP_ERRORS = {
    fp.NO_STACK_RANGE: "stack pointer or frame pointer outside the thread's stack mapping",
    fp.INVALID_FRAME_POINTER: "frame-pointer chain left the stack or did not grow",
    fp.STACK_COPY_LIMIT: "frame record beyond the copied stack bytes (raise --stack-bytes)",
}


def memory_of(thread: ThreadSnapshot) -> StackMemory:
    m = thread.stack_map
    if m is None:
        return StackMemory(thread.stack_base, b"", 0, 0)
    return StackMemory(thread.stack_base, thread.stack, m.start, m.end)


def unwind(thread: ThreadSnapshot, max_frames: int) -> UnwindResult:
    regs = thread.regs
    assert regs is not None
    frames: List[Frame] = [Frame(pc=regs.pc, sp=regs.sp, method="initial", activation=True)]
    if thread.stack_map is None:
        status = fp.NO_STACK_RANGE
    else:
        status = fp.walk(memory_of(thread), regs.fp, regs.sp, frames, max_frames)
    return UnwindResult(
        frames=tuple(frames),
        capture_method="frame_pointer",
        fp_status=status,
        error=_FP_ERRORS.get(status, ""),
    )
