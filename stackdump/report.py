"""Report -> text, exactly as docs/FORMAT.md "The report". Pure: no I/O but the given stream.

Runbook scripts parse this text, so the key order, spacing and wording are the contract.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from stackdump.escape import escape, escape_also, quote
from stackdump.syscalls import signal_name
from stackdump.types import (
    CoreInfo,
    ModuleEntry,
    Report,
    SymbolizedFrame,
    ThreadReport,
    ThreadStatus,
)

NAME_SPECIALS = ")="
_MAX_KEY_TEXTS = 4096  # distinct runtime keys whose texts a report keeps while it writes


def write_text(report: Report, out: TextIO, show_addresses: bool = False) -> None:
    out.write("".join(line + "\n" for line in text_lines(report, show_addresses)))


def text_lines(report: Report, show_addresses: bool = False) -> Iterator[str]:
    """The report's lines, one at a time (a 10,000-thread report need not be held as text
    at once). `show_addresses` (-a): every frame line starts with its pc."""
    yield from header_lines(report)
    # Sections whose frames are the same tuple (coroutines parked alike share one: engine)
    # have the same lines: made once. Kept for this report only, by the tuple itself.
    made: Dict[int, Tuple[tuple, List[str]]] = {}
    keys: Dict[int, Tuple[tuple, List[str]]] = {}  # so are their runtime keys (engine)
    for thread in (*report.threads, *(report.coroutines or ())):
        texts = keys.get(id(thread.runtime_keys))
        if texts is None or texts[0] is not thread.runtime_keys:
            texts = (thread.runtime_keys, runtime_key_texts(thread.runtime_keys))
            if len(keys) < _MAX_KEY_TEXTS:
                keys[id(thread.runtime_keys)] = texts
        yield thread_line(thread, texts[1])
        known = made.get(id(thread.frames))
        if kernel_stack(thread):
            yield from stack_lines(thread, show_addresses)
        elif known is not None and known[0] is thread.frames:
            yield from known[1]
        else:
            lines = stack_lines(thread, show_addresses)
            made[id(thread.frames)] = (thread.frames, lines)
            yield from lines
        yield ""
    yield from closing_lines(report)


def stack_lines(t: ThreadReport, show_addresses: bool) -> List[str]:
    """A section's frame lines, kernel ones first, or `<no stack captured>`."""
    if t.frames or kernel_stack(t):
        return frame_lines(t.frames, show_addresses, kernel_stack(t))
    return ["<no stack captured>"]


def header_lines(report: Report) -> Iterator[str]:
    h = report.header
    yield "stackdump thread stack traces"
    yield f"pid: {h.pid}"
    yield f"exe: {escape(h.exe)}"
    yield f"thread_count: {h.thread_count}"
    yield f"timeout_ms_per_thread: {h.timeout_ms}"
    yield f"dwarf_location_info_mode: {h.mode.value.lower()}"
    yield f"skip_blocking_syscalls: {'true' if h.skip_blocking_syscalls else 'false'}"
    yield f"unwinder: {h.unwinder}"
    yield f"capture: {h.capture.value}"
    if h.cmdline is not None:
        yield f"cmdline: {cmdline_text(h.cmdline)}"
    if h.core is not None:
        yield from core_lines(h.core)
    yield ""


def core_lines(core: CoreInfo) -> Iterator[str]:
    """The header lines of a core file's report (docs/FORMAT.md "Core files")."""
    yield f"core: {escape(core.path)}"
    if core.signal:
        yield f"signal: {signal_name(core.signal)}"
        yield f"signal_thread: {core.signal_thread}"
        if core.fault_address is not None:
            yield f"fault_address: 0x{core.fault_address:x}"
        if core.sender is not None:
            yield f"signal_sender_pid: {core.sender[0]}"
            yield f"signal_sender_uid: {core.sender[1]}"
    for problem in core.problems:
        yield f"core_problem: {escape(problem)}"


def cmdline_text(argv: Tuple[str, ...]) -> str:
    """argv joined by spaces; an argument that holds a space, a quote or nothing is quoted."""
    return " ".join(
        quote(arg) if not arg or " " in arg or '"' in arg else escape(arg) for arg in argv
    )


def closing_lines(report: Report) -> Iterator[str]:
    """summary:, stats:, then a line per deadlock and, when frames are unknown, the
    objects they fall in and how to name them."""
    s = report.summary
    yield (
        f"summary: captured={s.captured} skipped={s.skipped} timed_out={s.timed_out} "
        f"remote_signal_attempts={s.remote_signal_attempts}"
    )
    yield "stats: " + " ".join(f"{k}={v}" for k, v in stats_fields(report))
    if report.coroutines is not None:
        ok = sum(1 for c in report.coroutines if c.status is ThreadStatus.OK)
        truncated = 1 if report.coroutines_truncated else 0
        yield f"coroutines: found={len(report.coroutines)} ok={ok} truncated={truncated}"
    for cycle in report.deadlocks:
        yield "deadlock: " + " -> ".join(str(tid) for tid in (*cycle, cycle[0]))
    unknown = sum(1 for t in report.threads for f in t.frames if f.function is None)
    if unknown:
        yield from object_lines(report, unknown)


def stats_fields(report: Report) -> List[Tuple[str, int]]:
    s = report.summary
    return [
        ("elapsed_ms", s.elapsed_ms),
        ("max_pause_us", s.max_pause_us),
        ("exited", s.exited),
        ("errors", s.errors),
        ("cache_hits", s.cache_hits),
        ("cus_decoded", s.cus_decoded),
        ("passive", s.passive),
        ("interrupted", 1 if report.interrupted else 0),
        ("unsymbolized", s.unsymbolized),
        ("reported", s.reported),
        ("process_exited", 1 if s.process_exited else 0),
        ("foreign", s.foreign),
    ]


def object_lines(report: Report, unknown: int) -> Iterator[str]:
    in_objects = sum(m.unknown_frames for m in report.modules)
    yield (
        f"unknown_frames: {unknown} frame(s) have no function name, {in_objects} of them in "
        f"the objects below ({unknown - in_objects} in no mapped file)"
    )
    for m in report.modules:
        yield "object " + " ".join(object_keys(m))


def object_keys(m: ModuleEntry) -> List[str]:
    keys = [
        quote(m.path),
        f"build_id={m.build_id or 'none'}",
        f"symbols={m.symbols}",
        f"debug_file={quote(m.debug_file) if m.debug_file else 'none'}",
        f"dwarf={1 if m.dwarf else 0}",
        f"frames={m.frames}",
        f"unknown={m.unknown_frames}",
    ]
    if m.fix:
        keys.append(f"fix={quote(m.fix)}")
    return keys


def thread_line(t: ThreadReport, runtime_keys: Optional[List[str]] = None) -> str:
    """The section's first line; `runtime_keys`: its runtime keys' texts, when made."""
    keys = [f"status={t.status.value}"]
    if t.syscall_name is not None:
        keys.append(f"syscall={t.syscall_name}")
    if t.syscall_number is not None:
        keys.append(f"syscall_number={t.syscall_number}")
    if t.capture_method is not None:
        keys.append(f"capture_method={t.capture_method.value}")
        keys.append(f"frames={t.physical_frames}")
    if t.fp_status is not None:
        keys.append(f"fp_status={t.fp_status.value}")
    if t.unwind_status is not None:
        keys.append(f"unwind_status={t.unwind_status.value}")
    if t.stack_bounds is not None:
        keys.append(f"stack_bounds=0x{t.stack_bounds[0]:x}-0x{t.stack_bounds[1]:x}")
    if t.pause_us is not None:
        keys.append(f"pause_us={t.pause_us}")
    if t.error:
        keys.append(f"error={quote(t.error)}")
    if t.recovered_frame_pointers:
        keys.append(f"recovered_frame_pointers={t.recovered_frame_pointers}")
    keys.extend(context_keys(t))
    keys.extend(runtime_key_texts(t.runtime_keys) if runtime_keys is None else runtime_keys)
    if t.coroutine:
        if t.coroutine_id is not None:
            keys.append(f"handle=0x{t.tid:x}")
            if t.entry_function:
                keys.append(f"entry={quote(t.entry_function)}")
            return f"----- {t.coroutine} {t.coroutine_id} {' '.join(keys)} -----"
        return f"----- {t.coroutine} 0x{t.tid:x} {' '.join(keys)} -----"
    # ")" and "=" too: a name like `x) status=ok` must neither end the name early nor
    # forge a key (docs/FORMAT.md "Escaping").
    return f"----- thread {t.tid} ({escape(t.name, also=NAME_SPECIALS)}) {' '.join(keys)} -----"


def names_text(ranked: Sequence[Tuple[str, int]], escaped: bool = False, most: int = 0) -> str:
    """`NAME xCOUNT, ...`, as a group's line lists its threads' names (`views.ranked`):
    each name escaped so that `,`, `)` and `=` stay separators (`escaped`: escaped already,
    as a report read back wrote it); past `most` names (0: all), how many more."""
    shown = ranked[:most] if most else ranked
    also = NAME_SPECIALS + ","
    names = ", ".join(
        f"{escape_also(n, also) if escaped else escape(n, also=also)} x{k}" for n, k in shown
    )
    return names + (f", {len(ranked) - len(shown)} more" if len(shown) < len(ranked) else "")


def runtime_key_texts(keys) -> List[str]:
    """A runtime's own keys as `key=value`, quoted when the value has a space."""
    return [f"{k}={quote(v) if ' ' in v or not v else escape(v)}" for k, v in keys]


def context_keys(t: ThreadReport) -> List[str]:
    """What the thread was doing, appended to its line (docs/FORMAT.md "Thread context")."""
    keys = []
    c = t.context
    if c is not None:
        keys.append(f"state={escape(c.state)}")
        if c.wchan:
            keys.append(f"wchan={escape(c.wchan)}")
        keys.append(f"cpu_ms={c.cpu_ms}")
        if c.recent_cpu_ms is not None:
            keys.append(f"recent_cpu_ms={c.recent_cpu_ms}")
    if t.blocked_in is not None and t.syscall_name is None:
        keys.append(f"syscall={t.blocked_in}")
    if t.running_coroutine is not None:
        keys.append(f"bthread={t.running_coroutine}")
    if t.signal is not None:
        keys.append(f"signal={t.signal}")
    if t.waits_for_mutex is not None:
        keys.append(f"waits_for=mutex:0x{t.waits_for_mutex:x}")
        if t.mutex_holder:
            keys.append(f"held_by={t.mutex_holder}")
    return keys


def kernel_stack(t: ThreadReport) -> Tuple[str, ...]:
    return t.context.kernel_stack or () if t.context is not None else ()


def frame_lines(frames, show_addresses: bool, kernel: Tuple[str, ...] = ()) -> List[str]:
    """The kernel's frames (`--kernel`, marked `[kernel]`), then one line per inlined
    function (innermost first, ` (inlined)`), then one for the physical frame; indexes
    number the lines."""
    texts = [f"{escape(k)} [kernel]" for k in kernel]
    for frame in frames:
        for call in frame.inlined:
            texts.append(
                describe(frame, call.function, call.file, call.line, show_addresses) + " (inlined)"
            )
        texts.append(describe(frame, frame.function, frame.file, frame.line, show_addresses))
    return [f"    {f'{i}#':<3} {text}" for i, text in enumerate(texts)]


def describe(
    f: SymbolizedFrame,
    function: Optional[str],
    file: Optional[str],
    line: Optional[int],
    show_addresses: bool,
) -> str:
    """A frame line's text for `function` at `file:line` in the physical frame `f`: an
    inlined function's line carries the pc of its physical frame, as eu-stack -i prints it."""
    if function is None:
        text = f"0x{f.pc:016x}"
    elif show_addresses:
        text = f"0x{f.pc:016x} {escape(function)}"
    else:
        text = escape(function)
    if file is not None and line is not None:
        text += f" at {escape(file)}:{line}"
    elif f.module is not None:
        text += f" in {escape(f.module)}"
        if function is None and f.module_offset is not None:
            text += f"+0x{f.module_offset:x}"
    return text
