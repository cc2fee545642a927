"""Turn one ThreadSnapshot into physical frames, working only on the copied bytes.

Two walks run on every stack. The frame-pointer walk (Doris's checks) gives `fp_status`. The
hybrid walk steps each frame with DWARF CFI when its pc has an FDE and with the frame pointer
when it has none; it is what gets printed whenever CFI supplied frames the frame-pointer walk
could not (`capture_method=dwarf_cfi`, with `unwind_status`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Container, Dict, List, Optional, Tuple

from stackdump.arch import Arch
from stackdump.records import frozen
from stackdump.types import (
    CaptureMethod,
    FpStatus,
    Frame,
    Registers,
    ThreadSnapshot,
    UnwindResult,
    UnwindStatus,
    lookup_address,
)
from stackdump.unwind import expr, fp
from stackdump.unwind.cfi import (
    EXPRESSION,
    OFFSET,
    REGISTER,
    SAME,
    UNDEFINED,
    VAL_EXPRESSION,
    VAL_OFFSET,
    CfiRow,
)
from stackdump.unwind.memory import StackMemory
from stackdump.unwind.recover import CodeSource, Verdict, call_verdict, find_frame_record

CfiLookup = Callable[[int], Optional[CfiRow]]
# Whether an address lies in code (unwind.code_map.CodeMap); None: no check.
IsCode = Optional[Container[int]]
# Why the object holding a pc cannot describe it ('' when nothing is known); the flag: the
# frame pointer ended the walk at that pc (a missing FDE there is worth saying too).
Explain = Optional[Callable[[int, bool], str]]

_FP_ERRORS = {
    FpStatus.NO_STACK_RANGE: "stack pointer or frame pointer outside the thread's stack mapping",
    FpStatus.INVALID_FRAME_POINTER: "frame-pointer chain left the stack or did not grow",
    FpStatus.STACK_COPY_LIMIT: "frame record beyond the copied stack bytes (raise --stack-bytes)",
}


class _StepFailed(Exception):
    def __init__(self, status: UnwindStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _MissingRegister(_StepFailed):
    def __init__(self, reg: int, message: str) -> None:
        super().__init__(UnwindStatus.MISSING_REGISTER, message)
        self.reg = reg


@frozen
class HybridResult:
    frames: Tuple[Frame, ...]
    status: UnwindStatus
    used_cfi: bool
    error: str
    recovered: int = 0


def memory_of(thread: ThreadSnapshot) -> StackMemory:
    extra = tuple(StackMemory(base, data, m.start, m.end) for base, data, m in thread.extra_stacks)
    m = thread.stack_map
    if m is None:
        return StackMemory(thread.stack_base, b"", 0, 0, extra)
    return StackMemory(thread.stack_base, thread.stack, m.start, m.end, extra)


def unwind(
    regs: Registers,
    memory: StackMemory,
    max_frames: int,
    cfi_lookup: Optional[CfiLookup] = None,
    code: Optional[CodeSource] = None,
    is_code: IsCode = None,
    explain: Explain = None,
) -> UnwindResult:
    """Frames from a set of known registers and the stack bytes a source copied (`memory_of`
    a ThreadSnapshot, or any other). With every register, the frame-pointer walk and the
    CFI walk both run and the better is kept; without the frame pointer (a copy made in
    place knows only pc and sp), CFI alone, recovering the frame pointer where needed."""
    if regs.fp is None:
        return _unwind_without_fp(regs, memory, max_frames, cfi_lookup, code, is_code, explain)
    initial = Frame(pc=regs.pc, sp=regs.sp, method="initial", activation=True)
    fp_frames: List[Frame] = [initial]
    fp_status = fp.walk(memory, regs.fp, regs.sp, fp_frames, max_frames, regs.arch.address_mask)
    fp_error = _FP_ERRORS.get(fp_status, "")
    bad = _first_outside_code(fp_frames, is_code)
    if bad is not None:
        fp_status = FpStatus.INVALID_FRAME_POINTER
        fp_error = _not_code(fp_frames[bad].pc)
        del fp_frames[bad:]
    fp_result = UnwindResult(
        frames=tuple(fp_frames),
        capture_method=CaptureMethod.FRAME_POINTER,
        fp_status=fp_status,
        error=fp_error,
    )
    fp_result = _doubt_the_leaf(fp_result, regs, cfi_lookup, code, is_code)
    if cfi_lookup is None:
        return fp_result
    hybrid = walk_hybrid(
        regs.as_dict(),
        memory,
        cfi_lookup,
        max_frames,
        code,
        is_code,
        explain,
        recover=False,  # every register was captured
        arch=regs.arch,
    )
    cfi_result = UnwindResult(
        frames=hybrid.frames,
        capture_method=CaptureMethod.DWARF_CFI,
        fp_status=fp_status,
        unwind_status=hybrid.status,
        error=hybrid.error,
    )
    return _better(fp_result, cfi_result, hybrid.used_cfi)


def _better(fp_result: UnwindResult, cfi_result: UnwindResult, used_cfi: bool) -> UnwindResult:
    """The frame-pointer walk's result or the CFI walk's: CFI where it broke (a clean-looking
    frame-pointer walk past damaged CFI can be wrong) or was used and did better."""
    if cfi_result.unwind_status is UnwindStatus.BAD_CFI:
        return cfi_result
    if not used_cfi:
        return fp_result
    fp_clean = fp_result.fp_status in (FpStatus.END_OF_CHAIN, FpStatus.FRAME_LIMIT)
    same_as_fp = [f.pc for f in cfi_result.frames] == [f.pc for f in fp_result.frames]
    if same_as_fp and fp_clean:
        return fp_result
    cfi_clean = cfi_result.unwind_status in (UnwindStatus.END_OF_STACK, UnwindStatus.FRAME_LIMIT)
    if not cfi_clean and fp_clean and len(fp_result.frames) > len(cfi_result.frames):
        return fp_result
    return cfi_result


def _doubt_the_leaf(
    result: UnwindResult,
    regs: Registers,
    cfi_lookup: Optional[CfiLookup],
    code: Optional[CodeSource],
    is_code: IsCode,
) -> UnwindResult:
    """A frame-pointer walk on a link-register processor (aarch64) cannot tell, without
    CFI, whether the innermost function saved a frame record: if it did not, its caller is
    in the link register and the walk skipped it. Said in `error`, never left silent."""
    arch = regs.arch
    frames = result.frames
    if arch.ra_column == arch.pc or result.error or len(frames) < 2:
        return result
    if cfi_lookup is not None and cfi_lookup(regs.pc) is not None:
        return result
    lr = (regs.get(arch.ra_column) or 0) & arch.address_mask
    if not lr or lr == frames[1].pc or (is_code is not None and lr not in is_code):
        return result
    readable = code is not None and len(code.code(lr - 4, 4)) == 4
    if readable and call_verdict(code, lr, None, arch) is None:
        return result  # no call before it: the link register holds no return address
    return replace(
        result,
        error=f"pc 0x{regs.pc:x} has no CFI: if its function saved no frame record, its "
        f"caller is 0x{lr:x} (the link register), which the frame-pointer walk skips",
    )


def _first_outside_code(frames: List[Frame], is_code: IsCode) -> Optional[int]:
    """Index of the first return address that is not in code (the innermost pc is where
    the thread stands, whatever it is, and is kept)."""
    if is_code is None:
        return None
    return next((i for i, f in enumerate(frames) if i and f.pc not in is_code), None)


def _not_code(pc: int) -> str:
    return f"return address 0x{pc:x} is in no executable mapping: the walk stops before it"


def _unwind_without_fp(
    regs: Registers,
    memory: StackMemory,
    max_frames: int,
    cfi_lookup: Optional[CfiLookup],
    code: Optional[CodeSource],
    is_code: IsCode = None,
    explain: Explain = None,
) -> UnwindResult:
    """No frame pointer (a copy made in place knows pc and sp only): CFI throughout, the
    frame pointer recovered from frame records when needed. There is no frame-pointer walk
    to report (`fp_status` is None)."""
    if cfi_lookup is None:
        return UnwindResult(
            frames=(Frame(pc=regs.pc, sp=regs.sp, method="initial", activation=True),),
            capture_method=CaptureMethod.DWARF_CFI,
            fp_status=None,
            unwind_status=UnwindStatus.NO_CFI,
            error="a passive capture needs CFI to unwind",
        )
    hybrid = walk_hybrid(
        regs.as_dict(), memory, cfi_lookup, max_frames, code, is_code, explain, arch=regs.arch
    )
    return UnwindResult(
        frames=hybrid.frames,
        capture_method=CaptureMethod.DWARF_CFI,
        fp_status=None,
        unwind_status=hybrid.status,
        error=hybrid.error,
        recovered_frame_pointers=hybrid.recovered,
    )


def walk_hybrid(
    regs: Dict[int, int],
    memory: StackMemory,
    cfi_lookup: CfiLookup,
    max_frames: int,
    code: Optional[CodeSource] = None,
    is_code: IsCode = None,
    explain: Explain = None,
    recover: bool = True,
    *,
    arch: Arch,
) -> HybridResult:
    """Step frames with CFI, else the frame pointer. With `code` and `recover`, a missing
    rbp is recovered from a frame record on the stack (passive captures); without, it ends
    the walk. With `is_code`, a return address outside code ends it with an error. An
    innermost pc with no CFI whose frame pointer leads nowhere (clone3's parent side after
    its `cfi_endproc`, a leaf in hand-written assembly) is stepped by the return address on
    top of the stack, when it is in code and follows a call."""
    walk = _HybridWalk(regs, memory, cfi_lookup, code, is_code, explain, recover, arch)
    while len(walk.frames) < max_frames:
        ending = walk.step(max_frames)
        if ending is not None:
            return walk.result(*ending)
    return walk.result(UnwindStatus.FRAME_LIMIT, "")


_Ending = Tuple[UnwindStatus, str]


class _HybridWalk:
    """One hybrid walk's state between frames (`walk_hybrid`)."""

    def __init__(self, regs, memory, cfi_lookup, code, is_code, explain, recover, arch: Arch):
        self.memory, self.cfi_lookup, self.code, self.is_code = memory, cfi_lookup, code, is_code
        self.explain, self.recover, self.arch = explain, recover, arch
        self.regs: Dict[int, int] = regs
        self.pc: int = regs[arch.pc]
        self.activation = True
        self.frames = [Frame(pc=self.pc, sp=regs[arch.sp], method="initial", activation=True)]
        self.used_cfi = False
        self.seen: set = set()
        self.recovered = 0
        # On a link-register processor the frame record sits at the bottom of its
        # function's frame: a frame-pointer step knows only a lower bound of the caller's sp.
        self.sp_is_a_floor = False

    def result(self, status: UnwindStatus, error: str) -> HybridResult:
        return HybridResult(tuple(self.frames), status, self.used_cfi, error, self.recovered)

    def step(self, max_frames: int) -> Optional[_Ending]:
        """One frame out: how the walk ends here, or None to go on."""
        arch = self.arch
        lookup_pc = lookup_address(self.pc, self.activation)
        row = self.cfi_lookup(lookup_pc)
        if row is not None and row.bad:
            return UnwindStatus.BAD_CFI, row.bad
        if row is not None and self.sp_is_a_floor:
            self._settle_sp(row, lookup_pc)
        self.sp_is_a_floor = False
        if row is None and self._stepped_without_cfi():
            return None
        # A row found counts even when its step fails: the frame-pointer walk is no
        # fallback where CFI says otherwise (from an epilogue it skips the caller).
        self.used_cfi = self.used_cfi or row is not None
        try:
            new_regs, cfa, method, signal = self._step(row, lookup_pc, max_frames)
        except _StepFailed as e:
            return self._failed(row, lookup_pc, (e.status, str(e)))
        if signal:
            self.frames[-1] = replace(self.frames[-1], trampoline=True)
        new_pc = new_regs.get(arch.pc)
        if not new_pc and (row is None or _undefined_ra(row)):
            return UnwindStatus.END_OF_STACK, ""
        failure = self._bad_return(row, new_pc)
        if failure is not None:
            return self._failed(row, lookup_pc, failure)
        return self._push(new_regs, cfa, method, signal)

    def _settle_sp(self, row: CfiRow, lookup_pc: int) -> None:
        arch = self.arch
        memory, code, is_code = self.memory, self.code, self.is_code
        settled = _sp_above_record(row, self.regs, lookup_pc, memory, code, is_code, arch)
        if settled is not None:
            self.regs = {**self.regs, arch.sp: settled}
            self.frames[-1] = replace(self.frames[-1], sp=settled)

    def _stepped_without_cfi(self) -> bool:
        """A pc without CFI stepped otherwise: a leaf on a link-register processor that
        saved no frame record (its caller is in the link register, which a frame-pointer
        step would skip), or a signal trampoline (the interrupted frame, from the
        sigcontext)."""
        arch, regs = self.arch, self.regs
        if len(self.frames) == 1 and arch.ra_column != arch.pc:
            leaf = _leaf_step(regs, self.memory, self.cfi_lookup, self.code, self.is_code, arch)
            if leaf is not None:
                new_regs, cfa = leaf
                self._append(new_regs, Frame(pc=new_regs[arch.pc], sp=cfa, cfa=cfa,
                                             method="stack_top"), False)  # fmt: skip
                return True
        trampoline = _sigreturn(regs, self.memory, self.code, arch)
        if trampoline is None:
            return False
        self.frames[-1] = replace(self.frames[-1], trampoline=True)
        frame = Frame(
            pc=trampoline[arch.pc],
            sp=trampoline[arch.sp],
            cfa=trampoline[arch.sp],
            method="signal_frame",
            activation=True,
        )
        self._append(trampoline, frame, True)
        self.used_cfi = True
        return True

    def _step(self, row: Optional[CfiRow], lookup_pc: int, max_frames: int):
        arch = self.arch
        try:
            return _step(row, self.regs, self.memory, arch)
        except _MissingRegister as e:
            if not self.recover or self.code is None or e.reg != arch.fp:
                raise
            left = max_frames - len(self.frames)
            rbp = _recover_rbp(self.regs, lookup_pc, self.memory, self.cfi_lookup, left,
                               self.code, self.is_code, arch)  # fmt: skip
            if rbp is None:
                raise _MissingRegister(
                    arch.fp,
                    f"frame pointer of pc 0x{self.pc:x} not captured and no frame record "
                    "on the stack could be verified",
                ) from e
            self.regs = {**self.regs, arch.fp: rbp}
            self.recovered += 1
            return _step(row, self.regs, self.memory, arch)

    def _bad_return(self, row: Optional[CfiRow], new_pc: Optional[int]) -> Optional[_Ending]:
        """Why the return address a step found cannot be the caller's, or None."""
        pc = self.pc
        if not new_pc:
            # The outermost frame says so (DW_CFA_undefined on the return address). No
            # rule for it is damaged CFI; a zero where the rule says it is, a wrong
            # slot (damaged CFI) or a damaged stack: neither is an end.
            assert row is not None
            if new_pc is None:
                why = f"no rule for the return address (column {row.ra_column})"
                return UnwindStatus.BAD_CFI, f"bad CFI for pc 0x{pc:x} ({row.fde}): {why}"
            why = f"the return address the CFI of pc 0x{pc:x} ({row.fde}) gives is 0"
            return UnwindStatus.STEP_ERROR, why
        if self.is_code is not None and new_pc not in self.is_code:
            return UnwindStatus.STEP_ERROR, _not_code(new_pc)
        return None

    def _failed(self, row: Optional[CfiRow], lookup_pc: int, failure: _Ending) -> Optional[_Ending]:
        """How a failed step ends the walk; None when the frame was stepped after all (no
        CFI here, the frame pointer led nowhere, and the return address on top of the
        stack follows a call)."""
        if row is not None:
            return failure
        arch = self.arch
        if len(self.frames) == 1:
            top = _stack_top_step(self.regs, self.memory, self.code, self.is_code, arch)
            if top is not None:
                new_regs, cfa, method, _ = top
                frame = Frame(pc=new_regs[arch.pc], sp=cfa, cfa=cfa, method=method)
                self._append(new_regs, frame, False)
                return None
        # A frame-pointer "end" where CFI should have been is no end: say why.
        ending = failure[0] is UnwindStatus.END_OF_STACK
        why = self.explain(lookup_pc, ending) if self.explain is not None else ""
        if why:
            return UnwindStatus.NO_CFI, f"no CFI for pc 0x{self.pc:x}, in {why}"
        return failure

    def _push(self, new_regs: Dict[int, int], cfa: int, method: str, signal: bool):
        arch, sp = self.arch, self.regs[self.arch.sp]
        # The CFA grows with every frame, except that a leaf on a link-register processor
        # (aarch64) pushed nothing: its CFA is its sp, its return address in x30.
        leaf = cfa == sp and arch.ra_column != arch.pc
        if not signal and cfa <= sp and not leaf:
            return UnwindStatus.STEP_ERROR, f"CFA 0x{cfa:x} does not grow at pc 0x{self.pc:x}"
        new_pc = new_regs[arch.pc]
        if (new_pc, cfa) in self.seen:
            return UnwindStatus.STEP_ERROR, f"unwinding loops at pc 0x{new_pc:x}"
        self.seen.add((new_pc, cfa))
        frame = Frame(pc=new_pc, sp=new_regs[arch.sp], cfa=cfa, method=method, activation=signal)
        self._append(new_regs, frame, signal)
        self.sp_is_a_floor = method == "frame_pointer" and arch.ra_column != arch.pc
        return None

    def _append(self, regs: Dict[int, int], frame: Frame, activation: bool) -> None:
        self.frames.append(frame)
        self.regs, self.pc, self.activation = regs, frame.pc, activation


# How far above a frame record the caller's sp is looked for (the callee's locals and
# saved registers lie between): bigger frames keep the floor.
_RECORD_SLACK = 4096


def _confirmed_sp(
    row: CfiRow,
    regs: Dict[int, int],
    callee_start: int,
    memory: StackMemory,
    code: CodeSource,
    is_code: IsCode,
    arch: Arch,
) -> Optional[int]:
    """The first sp, at or above `regs`' (a floor), from which the frame's sp-based CFI
    finds a return address just after a direct call to `callee_start` (the frame's own
    function); None when none within `_RECORD_SLACK` does, or the CFA is not sp-based."""
    if row.cfa[0] != "reg" or row.cfa[1][0] != arch.sp:  # type: ignore[index]
        return None
    floor = regs[arch.sp]
    for sp in range(floor, floor + _RECORD_SLACK, arch.word_size * 2):
        try:
            new_regs, _ = _step_cfi(row, {**regs, arch.sp: sp}, memory, arch)
        except (_StepFailed, _MissingRegister):
            continue
        ra = new_regs.get(arch.pc)
        if not ra or (is_code is not None and ra not in is_code):
            continue
        if call_verdict(code, ra, callee_start, arch) is Verdict.CONFIRMED:
            return sp
    return None


def _sp_above_record(
    row: CfiRow,
    regs: Dict[int, int],
    lookup_pc: int,
    memory: StackMemory,
    code: Optional[CodeSource],
    is_code: IsCode,
    arch: Arch,
) -> Optional[int]:
    """The sp of a frame reached by a frame-pointer step on aarch64 (the step's sp is only
    a floor), when its CFI confirms one (`_confirmed_sp`); None keeps the floor."""
    start = code.function_start(lookup_pc) if code is not None else None
    if start is None:
        return None
    return _confirmed_sp(row, regs, start, memory, code, is_code, arch)


def _leaf_step(
    regs: Dict[int, int],
    memory: StackMemory,
    cfi_lookup: CfiLookup,
    code: Optional[CodeSource],
    is_code: IsCode,
    arch: Arch,
) -> Optional[Tuple[Dict[int, int], int]]:
    """The innermost frame, without CFI, stepped by its link register when that is proven:
    the link register follows a call, and the function it returns into, unwound by its own
    CFI from an sp at or above the leaf's, returns right after a call to itself. A stale
    link register (the function saved a record and has called since) returns into the
    function itself, which has no CFI here: not proven, and the frame pointer is used."""
    if code is None:
        return None
    lr = regs.get(arch.ra_column, 0) & arch.address_mask
    if not lr or (is_code is not None and lr not in is_code):
        return None
    if call_verdict(code, lr, None, arch) is None:
        return None
    row = cfi_lookup(lr - 1)
    start = code.function_start(lr - 1)
    if row is None or row.bad or start is None:
        return None
    new = {reg: regs[reg] for reg in arch.callee_saved if reg in regs}
    new[arch.pc] = lr
    new[arch.sp] = regs[arch.sp]
    sp = _confirmed_sp(row, new, start, memory, code, is_code, arch)
    return None if sp is None else ({**new, arch.sp: sp}, sp)


def _stack_top_step(
    regs: Dict[int, int],
    memory: StackMemory,
    code: Optional[CodeSource],
    is_code: IsCode,
    arch: Arch,
):
    """(new regs, CFA, method, signal) for a frame that has pushed nothing yet, or None."""
    if code is None or is_code is None:
        return None
    sp = regs[arch.sp]
    if arch.ra_column != arch.pc:
        # The return address of a function that has saved nothing is in the link register.
        ra = regs.get(arch.ra_column, 0) & arch.address_mask
        after = sp
    else:
        ra = memory.read_word(sp) or 0
        after = sp + arch.word_size
    if not ra or ra not in is_code or call_verdict(code, ra, None, arch) is None:
        return None
    new = {reg: regs[reg] for reg in arch.callee_saved if reg in regs}
    new[arch.pc] = ra
    new[arch.sp] = after
    return new, after, "stack_top", False


def _sigreturn(regs: Dict[int, int], memory: StackMemory, code: Optional[CodeSource], arch: Arch):
    if arch.sigreturn_registers is None or code is None:
        return None
    found = arch.sigreturn_registers(code.code(regs[arch.pc], 8), regs[arch.sp], memory.read_word)
    if found is None or not found.get(arch.pc):
        return None
    return found


def _step(row: Optional[CfiRow], regs: Dict[int, int], memory: StackMemory, arch: Arch):
    if row is not None:
        new_regs, cfa = _step_cfi(row, regs, memory, arch)
        return new_regs, cfa, "dwarf_cfi", row.signal_frame
    new_regs, cfa = _step_frame_pointer(regs, memory, arch)
    return new_regs, cfa, "frame_pointer", False


def _recover_rbp(
    regs: Dict[int, int],
    lookup_pc: int,
    memory: StackMemory,
    cfi_lookup: CfiLookup,
    frames_left: int,
    code: CodeSource,
    is_code: IsCode,
    arch: Arch,
) -> Optional[int]:
    def continues(rbp: int) -> bool:
        # Without `code`: a second missing register ends the trial walk as unverifiable.
        # With `is_code`: a record whose chain leaves code is no frame record.
        trial = walk_hybrid(
            {**regs, arch.fp: rbp},
            memory,
            cfi_lookup,
            max(frames_left, 2),
            is_code=is_code,
            arch=arch,
        )
        return trial.status in (UnwindStatus.END_OF_STACK, UnwindStatus.FRAME_LIMIT)

    return find_frame_record(regs[arch.sp], lookup_pc, memory, code, continues, arch)


def _read(memory: StackMemory, address: int) -> int:
    value = memory.read_word(address)
    if value is None:
        if memory.in_mapping(address) and address < memory.base:
            raise _StepFailed(
                UnwindStatus.STEP_ERROR,
                f"saved register at 0x{address:x} lies below the stack copied from "
                f"0x{memory.base:x} (the stack pointer less its red zone)",
            )
        if memory.in_any_mapping(address):
            raise _StepFailed(
                UnwindStatus.STACK_COPY_LIMIT,
                f"saved register at 0x{address:x} beyond the copied stack (raise --stack-bytes)",
            )
        raise _StepFailed(
            UnwindStatus.STEP_ERROR, f"saved register at 0x{address:x} outside the stack"
        )
    return value


def _eval(code: bytes, regs: Dict[int, int], memory: StackMemory, initial=()) -> int:
    try:
        return expr.evaluate(expr.parse(code), regs, memory.read_word, initial)
    except expr.MissingRegister as e:
        raise _MissingRegister(e.reg, f"CFI expression needs register {e.reg}, not captured") from e
    except expr.ExprError as e:
        raise _StepFailed(UnwindStatus.STEP_ERROR, f"CFI expression: {e}") from e
    except Exception as e:  # noqa: BLE001 - a malformed expression from a hostile binary
        raise _StepFailed(
            UnwindStatus.STEP_ERROR, f"CFI expression unreadable: {type(e).__name__}"
        ) from e


def _undefined_ra(row: CfiRow) -> bool:
    """Whether the row ends the stack: its return address column is undefined."""
    return any(reg == row.ra_column and rule == UNDEFINED for reg, (rule, _) in row.rules)


def _step_cfi(
    row: CfiRow, regs: Dict[int, int], memory: StackMemory, arch: Arch
) -> Tuple[Dict[int, int], int]:
    kind, arg = row.cfa
    if kind == "reg":
        reg, offset = arg
        if reg not in regs:
            raise _MissingRegister(reg, f"CFA needs register {reg}, which was not captured")
        cfa = (regs[reg] + offset) & expr.MASK
    else:
        cfa = _eval(arg, regs, memory)
    new: Dict[int, int] = {reg: regs[reg] for reg in arch.callee_saved if reg in regs}
    new[arch.sp] = cfa
    new.pop(arch.pc, None)
    for reg, (rule, value) in row.rules:
        if rule == OFFSET:
            new[reg] = _read(memory, cfa + value)
        elif rule == VAL_OFFSET:
            new[reg] = (cfa + value) & expr.MASK
        elif rule == REGISTER:
            if value in regs:
                new[reg] = regs[value]
            else:
                new.pop(reg, None)
        elif rule == EXPRESSION:
            new[reg] = _read(memory, _eval(value, regs, memory, (cfa,)))
        elif rule == VAL_EXPRESSION:
            new[reg] = _eval(value, regs, memory, (cfa,))
        elif rule == UNDEFINED:
            new.pop(reg, None)
        elif rule == SAME and reg in regs:
            new[reg] = regs[reg]
    if row.ra_column != arch.pc:
        if row.ra_column in new:
            new[arch.pc] = new[row.ra_column]
        else:
            new.pop(arch.pc, None)
    if arch.pc in new:
        new[arch.pc] &= arch.address_mask  # a signed return address (aarch64 PAC)
    return new, cfa


def _step_frame_pointer(
    regs: Dict[int, int], memory: StackMemory, arch: Arch
) -> Tuple[Dict[int, int], int]:
    frame = regs.get(arch.fp)
    if frame is None:
        raise _MissingRegister(arch.fp, f"no CFI at pc 0x{regs[arch.pc]:x} and no frame pointer")
    if frame == 0:
        raise _StepFailed(UnwindStatus.END_OF_STACK, "")
    if frame % arch.word_size or frame < regs[arch.sp] or not memory.in_any_mapping(frame, 16):
        raise _StepFailed(
            UnwindStatus.NO_CFI,
            f"no CFI at pc 0x{regs[arch.pc]:x} and frame pointer 0x{frame:x} is not valid",
        )
    new = {reg: regs[reg] for reg in arch.callee_saved if reg in regs}
    new[arch.fp] = _read(memory, frame)
    new[arch.pc] = _read(memory, frame + arch.word_size) & arch.address_mask
    new[arch.sp] = frame + 2 * arch.word_size
    return new, frame + 2 * arch.word_size
