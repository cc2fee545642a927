"""A DWARF expression evaluator for CFI (DWARF 5 section 2.5), just big enough for unwinding.

CFI uses expressions for PLT stubs (CFA computed from rsp and rip), signal trampolines
(registers saved in the ucontext) and stack realignment. Memory is read through a callback
over the copied stack; every loop is bounded by the expression's length.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional, Sequence

MASK = (1 << 64) - 1

ReadWord = Callable[[int], Optional[int]]


class ExprError(Exception):
    """The expression cannot be evaluated with what the snapshot holds."""


class MissingRegister(ExprError):
    """The expression reads a register the snapshot does not have (a passive capture)."""

    def __init__(self, reg: int) -> None:
        super().__init__(f"register {reg} unknown")
        self.reg = reg


def parse(expr: Sequence[int]):
    return _parse(bytes(expr))


@functools.lru_cache(maxsize=1)
def _parser():
    # pyelftools (~20 ms to import) only when an expression is met: most dumps meet none.
    from elftools.dwarf.dwarf_expr import DWARFExprParser
    from elftools.dwarf.structs import DWARFStructs

    return DWARFExprParser(DWARFStructs(little_endian=True, dwarf_format=32, address_size=8))


@functools.lru_cache(maxsize=4096)
def _parse(expr: bytes):
    # The same few expressions (PLT stubs, a realigned frame) recur in every thread and
    # coroutine: parsed once (10,000 bthreads: 70,000 parses, a quarter of the dump).
    return tuple(_parser().parse_expr(list(expr)))


def _signed(v: int) -> int:
    v &= MASK
    return v - (1 << 64) if v >> 63 else v


_BINARY = {
    "DW_OP_plus": lambda a, b: a + b,
    "DW_OP_minus": lambda a, b: a - b,
    "DW_OP_mul": lambda a, b: a * b,
    "DW_OP_and": lambda a, b: a & b,
    "DW_OP_or": lambda a, b: a | b,
    "DW_OP_xor": lambda a, b: a ^ b,
    "DW_OP_shl": lambda a, b: a << (b & 63) if b < 64 else 0,
    "DW_OP_shr": lambda a, b: (a & MASK) >> b if b < 64 else 0,
    "DW_OP_shra": lambda a, b: _signed(a) >> min(b, 63),
    "DW_OP_ge": lambda a, b: int(_signed(a) >= _signed(b)),
    "DW_OP_gt": lambda a, b: int(_signed(a) > _signed(b)),
    "DW_OP_le": lambda a, b: int(_signed(a) <= _signed(b)),
    "DW_OP_lt": lambda a, b: int(_signed(a) < _signed(b)),
    "DW_OP_eq": lambda a, b: int(a == b),
    "DW_OP_ne": lambda a, b: int(a != b),
}


_UNARY = {
    "DW_OP_neg": lambda a: -a,
    "DW_OP_not": lambda a: ~a,
    "DW_OP_abs": lambda a: abs(_signed(a)),
}


def _swap(stack: List[int]) -> None:
    stack[-1], stack[-2] = stack[-2], stack[-1]


# Operations that only rearrange the stack: name -> (entries they need, what they do).
_SHUFFLES = {
    "DW_OP_dup": (1, lambda stack: stack.append(stack[-1])),
    "DW_OP_drop": (1, lambda stack: stack.pop()),
    "DW_OP_swap": (2, _swap),
    "DW_OP_over": (2, lambda stack: stack.append(stack[-2])),
    "DW_OP_nop": (0, lambda stack: None),
}


def evaluate(ops, regs: Dict[int, int], read_word: ReadWord, initial: Sequence[int] = ()) -> int:
    """Value on top of the stack after running `ops` (a parsed expression)."""
    stack: List[int] = list(initial)
    for op in ops:
        name = op.op_name
        args = op.args
        operand = _operand(name, args, regs)
        if operand is not None:
            stack.append(operand)
        elif name in _BINARY:
            _need(stack, 2)
            b = stack.pop()
            a = stack.pop()
            stack.append(_BINARY[name](a, b))
        elif name in _UNARY:
            _need(stack, 1)
            stack.append(_UNARY[name](stack.pop()))
        elif name == "DW_OP_plus_uconst":
            _need(stack, 1)
            stack.append(stack.pop() + args[0])
        elif name == "DW_OP_deref":
            _need(stack, 1)
            value = read_word(stack.pop() & MASK)
            if value is None:
                raise ExprError("memory outside the copied stack")
            stack.append(value)
        elif name in _SHUFFLES:
            needed, shuffle = _SHUFFLES[name]
            _need(stack, needed)
            shuffle(stack)
        else:
            raise ExprError(f"unsupported operation {name}")
        if stack:
            stack[-1] &= MASK
    _need(stack, 1)
    return stack[-1] & MASK


def _operand(name: str, args, regs: Dict[int, int]) -> Optional[int]:
    """The value an operation that pushes one computes from nothing on the stack (a
    literal, a constant, a register plus an offset), or None for any other operation."""
    if name.startswith("DW_OP_lit"):
        return int(name[9:])
    if name.startswith("DW_OP_breg"):
        reg, offset = (args[0], args[1]) if name == "DW_OP_bregx" else (int(name[10:]), args[0])
        if reg not in regs:
            raise MissingRegister(reg)
        return regs[reg] + offset
    if name.startswith("DW_OP_const") or name == "DW_OP_addr":
        return args[0]
    return None


def _need(stack: List[int], n: int) -> None:
    if len(stack) < n:
        raise ExprError("expression stack underflow")
