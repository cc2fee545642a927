"""The call-site decoder and the DWARF expression evaluator on real bytes (issue 14, step 5):
every call instruction objdump finds in a test binary, and the CFA expression that gcc and
binutils emit for every PLT."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import ON_CI
from helpers import compile_target

from stackdump.arch import X86_64
from stackdump.arch.calls import CallKind
from stackdump.arch.x86_64_calls import call_before
from stackdump.elf.image import ElfObject
from stackdump.types import FpStatus, Registers, UnwindStatus
from stackdump.unwind import expr
from stackdump.unwind.memory import StackMemory
from stackdump.unwind.unwinder import unwind

CALL = re.compile(r"^\s*([0-9a-f]+):\s+((?:[0-9a-f]{2} )+)\s*call\s+(\S+)")


def objdump_calls(path: str):
    """(address, length, target or None) of every call instruction objdump decodes."""
    if shutil.which("objdump") is None:
        if ON_CI:
            pytest.fail("objdump (binutils) is missing under CI=true")
        pytest.skip("objdump is not installed")
    text = subprocess.run(["objdump", "-d", path], capture_output=True, text=True).stdout
    for line in text.splitlines():
        m = CALL.match(line)
        if m:
            length = len(m.group(2).split())
            target = int(m.group(3), 16) if re.fullmatch(r"[0-9a-f]+", m.group(3)) else None
            yield int(m.group(1), 16), length, target


def test_every_call_objdump_finds_is_recognised(build_dir):
    binary = compile_target("threads.c", build_dir, "threads-calls", ["-O2", "-g"])
    elf = ElfObject.open(str(binary))
    calls = list(objdump_calls(str(binary)))
    assert len(calls) > 50
    for address, length, target in calls:
        return_address = address + length
        code = elf.read_vaddr_range(return_address - 7, 7)
        found = call_before(code, return_address)
        assert found is not None, (hex(address), code.hex())
        kind, to = found
        if target is not None:
            assert (kind, to) == (CallKind.DIRECT, target), (hex(address), hex(to))
        else:
            assert kind is CallKind.INDIRECT, hex(address)


def test_no_call_before_an_address_that_follows_none(build_dir):
    binary = compile_target("threads.c", build_dir, "threads-calls", ["-O2", "-g"])
    elf = ElfObject.open(str(binary))
    after_call = {a + n for a, n, _ in objdump_calls(str(binary))}
    text = subprocess.run(["objdump", "-d", str(binary)], capture_output=True, text=True).stdout
    starts = [
        int(m.group(1), 16) for m in re.finditer(r"^\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )", text, re.M)
    ]
    plain = [a for a in starts if a not in after_call][:400]
    wrong = [hex(a) for a in plain if _is_call_end(elf, a)]
    # x86 is dense: a few instruction tails also decode as a call; they must stay rare.
    assert len(wrong) < len(plain) // 20, wrong


def _is_call_end(elf: ElfObject, address: int) -> bool:
    return call_before(elf.read_vaddr_range(address - 7, 7), address) is not None


# The CFA of every lazy-binding PLT entry (binutils' elf_x86_64 eh_frame_plt): rsp + 8, plus
# 8 more once the entry has pushed its relocation index (rip & 15 >= 11).
PLT_CFA = bytes([0x77, 0x08, 0x80, 0x00, 0x3F, 0x1A, 0x3B, 0x2A, 0x33, 0x24, 0x22])


@pytest.mark.parametrize("low", range(16))
def test_plt_cfa_expression(low):
    regs = {7: 0x7FFF_0000, 16: 0x40_1020 + low}
    value = expr.evaluate(expr.parse(PLT_CFA), regs, lambda address: None)
    assert value == 0x7FFF_0000 + 8 + (8 if low >= 11 else 0)


def test_expression_reading_memory_and_missing_register():
    # DW_OP_breg6 (rbp) 16; DW_OP_deref: the word at rbp+16
    ops = expr.parse(bytes([0x76, 0x10, 0x06]))
    words = {0x1010: 0xDEAD}
    assert expr.evaluate(ops, {6: 0x1000}, words.get) == 0xDEAD
    # A register the snapshot lacks is named, so the unwinder can try to recover it
    with pytest.raises(expr.MissingRegister) as missing:
        expr.evaluate(ops, {}, words.get)
    assert missing.value.reg == 6


def test_unwind_takes_known_registers_and_bytes_not_a_thread():
    """The public unwinder works on any source's registers and stack bytes: a full set
    walks the frame-pointer chain; pc and sp alone need CFI, and say so without it."""
    base = 0x7000_0000
    # a frame record at base+16: the caller's frame pointer (0: outermost), return address
    stack = bytes(16) + (0).to_bytes(8, "little") + (0x401234).to_bytes(8, "little")
    memory = StackMemory(base, stack, base, base + len(stack))
    full = Registers.of({X86_64.pc: 0x401000, X86_64.sp: base, X86_64.fp: base + 16}, X86_64)
    walked = unwind(full, memory, 64)
    assert [f.pc for f in walked.frames] == [0x401000, 0x401234]
    assert walked.fp_status is FpStatus.END_OF_CHAIN
    partial = Registers.of({X86_64.pc: 0x401000, X86_64.sp: base}, X86_64)
    assert partial.fp is None
    alone = unwind(partial, memory, 64)
    assert [f.pc for f in alone.frames] == [0x401000]
    assert (alone.fp_status, alone.unwind_status) == (None, UnwindStatus.NO_CFI)


def _frame_chain(base: int, return_addresses, heap_word: int) -> bytes:
    """A stack copied from `base`: a word at sp pointing at a chain of frame records (saved
    frame pointer, return address), the last one's saved frame pointer 0, and a word that
    points outside the stack (the heap) that no walk reads."""
    words = [base + 16, heap_word]
    for i, ra in enumerate(return_addresses):
        last = i == len(return_addresses) - 1
        words += [0 if last else base + 16 * (i + 2), ra]
    return b"".join(w.to_bytes(8, "little") for w in words)


def _walk(memory, sp):
    """A small stand-in for the frame-pointer walk: what it asks of memory decides it."""
    out, fp = [], memory.read_word(sp)
    while fp and memory.in_mapping(fp, 16):
        out.append(memory.read_word(fp + 8))
        fp = memory.read_word(fp)
    return tuple(out)


def test_a_remembered_walk_is_reused_only_where_every_answer_is_alike():
    """unwind/traces.py: another stack at another address with the same return addresses
    at the same offsets (and a different heap word nobody read) reuses the walk; a different
    return address, or a chain that leaves the stack, does not."""
    from stackdump.unwind.traces import Recorder, Traces

    def stack(base, ras, heap=0x5000_0000):
        data = _frame_chain(base, ras, heap)
        return StackMemory(base, data, base - 4096, base + len(data) + 4096)

    ras = (0x401000, 0x401234, 0x402000)
    first = stack(0x7F00_0000_0000, ras)
    traces = Traces()
    key = Traces.key({7: first.base}, first.base, first, ())
    recorder = Recorder(first, first.base)
    kept = _walk(recorder, first.base)
    assert kept == ras
    traces.keep(key, recorder, kept)

    alike = stack(0x7F00_1234_0000, ras, heap=0x6000_0000)
    alike_key = Traces.key({7: alike.base}, alike.base, alike, ())
    assert alike_key == key
    assert traces.find(alike_key, alike, alike.base) == ras == _walk(alike, alike.base)

    other = stack(0x7F00_2000_0000, (0x401000, 0x409999, 0x402000))
    assert traces.find(key, other, other.base) is None
    assert _walk(other, other.base) != ras
    assert traces.hits == 1


def _questions(draw, memory: StackMemory, sp: int, recorder):
    """Ask `recorder` what an unwinder might: words at offsets from sp (inside the copy,
    beyond it, below it), whether ranges lie in the mapping or the copy, absolute
    addresses, and the copy's fields."""
    from hypothesis import strategies as st

    # Mostly words; now and then one 4 bytes off (an odd frame pointer), overlapping others.
    offsets = st.integers(-64, len(memory.data) + 64).map(lambda n: n - n % 8 + 4 * (n % 23 == 0))
    for _ in range(draw(st.integers(0, 24))):
        kind = draw(st.sampled_from(("read", "read", "read", "mapping", "copy", "any", "field")))
        at = sp + draw(offsets) if draw(st.booleans()) or kind == "field" else draw(offsets)
        size = draw(st.sampled_from((8, 16)))
        if kind == "read":
            recorder.read_word(at)
        elif kind == "mapping":
            recorder.in_mapping(at, size)
        elif kind == "copy":
            recorder.in_copy(at, size)
        elif kind == "any":
            recorder.in_any_mapping(at, size)
        else:
            getattr(recorder, draw(st.sampled_from(("base", "end", "map_start", "map_end"))))


def test_a_remembered_walks_fast_check_answers_as_the_notes_do():
    """`Trace.alike` (issue 31: the hot path of 100,000 coroutines) says what
    `_answers_alike`, the notes' meaning, says, for any notes on one stack and any other
    stack: the same one moved (its own pointers moved with it), with words changed, with a
    shorter copy or another mapping."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from stackdump.unwind.traces import Recorder, Trace, _answers_alike

    @st.composite
    def cases(draw):
        start = 0x7F00_0000_0000
        words = draw(st.integers(4, 48))
        sp = start + 4096 + 8 * draw(st.integers(0, 8))
        base = sp - 16
        choices = st.one_of(
            st.integers(0, 2**64 - 1),
            st.sampled_from((0, 0x401000, 0x401234)),
            st.integers(0, 8 * words).map(lambda n: sp + n - n % 8),  # into the stack
        )
        values = draw(st.lists(choices, min_size=words, max_size=words))
        data = b"".join(v.to_bytes(8, "little") for v in values)
        first = StackMemory(base, data, start, start + 3 * 4096)
        recorder = Recorder(first, sp)
        _questions(draw, first, sp, recorder)
        shift = 8 * draw(st.integers(-16, 1 << 20))
        moved = [v + shift if sp <= v < start + 3 * 4096 else v for v in values]
        for _ in range(draw(st.integers(0, 2))):
            moved[draw(st.integers(0, words - 1))] = draw(choices)
        cut = draw(st.integers(0, words)) if draw(st.booleans()) else words
        other_data = b"".join(v.to_bytes(8, "little") for v in moved[:cut])
        grow = 8 * draw(st.integers(-4, 4)) if draw(st.booleans()) else 0
        other = StackMemory(
            base + shift, other_data, start + shift + grow, start + shift + 3 * 4096 - grow
        )
        return recorder.trace(), first, sp, other, sp + shift

    @settings(max_examples=600, deadline=None)
    @given(cases())
    def check(case):
        ops, first, sp, other, other_sp = case
        trace = Trace(ops)
        assert trace.alike(first, sp)
        assert trace.alike(other, other_sp) == _answers_alike(ops, other, other_sp)

    check()
