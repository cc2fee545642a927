"""What a finished dump tells the user beyond the report: the errors and warnings for stderr
(a core's problems, an exec or an exit during the dump, an interruption) and the exit status
(docs/FORMAT.md "Exit status"). Pure: the CLI prints what this returns.
"""

from __future__ import annotations

from typing import List, Tuple

from stackdump.escape import quote
from stackdump.records import frozen
from stackdump.types import Report

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_NO_REPORT, EXIT_OUTPUT = 0, 1, 2, 3, 4


@frozen
class Outcome:
    messages: Tuple[Tuple[str, str], ...]  # ("error" or "warning", text), in order
    exit_status: int


def of_dump(report: Report, signal_name: str) -> Outcome:
    """`signal_name`: the signal that interrupted the dump, when `report.interrupted`."""
    said: List[Tuple[str, str]] = [("warning", w) for w in report.warnings]
    header, summary = report.header, report.summary
    if header.core is not None:
        said += [("error", f"core {quote(header.core.path)}: {p}") for p in header.core.problems]
        if not report.threads and header.core.problems:
            said.append(("error", "no thread could be read from the core"))
        said += [("warning", hint) for hint in unnamed_memory_hint(report)]
    if summary.exec_seen:
        said.append((
            "error",
            f"process {header.pid} called exec() during the dump and now runs "
            f"{quote(summary.exec_seen)}: the threads captured before are reported as "
            f"{quote(header.exe)}'s, those captured after as attach_error",
        ))  # fmt: skip
    if summary.process_exited:
        said.append((
            "error",
            f"process {header.pid} exited during the dump: the "
            f"{summary.captured} thread(s) captured before are reported in full",
        ))  # fmt: skip
    if report.interrupted:
        said.append(("error", interruption_note(report, signal_name)))
    status = EXIT_PARTIAL if report.interrupted or report.partial else EXIT_OK
    return Outcome(tuple(said), status)


def interruption_note(report: Report, signal_name: str) -> str:
    parts = []
    # Capture was cut short exactly when fewer threads were reported than selected; both
    # phases can have been interrupted (a second signal during symbolization).
    if report.summary.reported < report.header.thread_count:
        parts.append(
            f"the report covers the {report.summary.reported} of {report.header.thread_count} "
            "thread(s) captured before it"
        )
    if report.symbolization_interrupted:
        parts.append(
            f"symbolization stopped: {report.summary.unsymbolized} frame(s) are printed "
            "unsymbolized, as 0x... in OBJECT+0xOFFSET"
        )
    return f"interrupted by {signal_name}: " + "; ".join(parts)


def unnamed_memory_hint(report: Report) -> Tuple[str, ...]:
    """For a core that names no files (qemu-user writes no NT_FILE), when frames fell in
    memory no object was found for: what would name them."""
    core = report.header.core
    if core is None or core.names_files:
        return ()
    lost = sum(1 for t in report.threads for f in t.frames if f.function is None)
    lost -= sum(m.unknown_frames for m in report.modules)
    if lost <= 0:
        return ()
    where = (
        f"not under --sysroot {quote(core.sysroot)}"
        if core.sysroot
        else "looked for on this machine's own root, which may not be the target's"
    )
    return (
        f"{lost} frame(s) are in memory no object was found for: the core names no mapped "
        f"files (no NT_FILE note, as qemu-user writes its cores), so the objects the "
        f"dynamic loader lists were {where}; give --sysroot DIR (the target's root "
        "filesystem) and --exe PATH (the program)",
    )
