"""What one invocation of the CLI carries between its phases (`Run`), and the writing phase
every command shares: lines or bytes to the destination opened before the work, coloured on
a terminal, cut short by a signal only while the report is still going out."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from stackdump.console import isatty
from stackdump.interrupts import Interrupts
from stackdump.output import Destination, open_destination
from stackdump.writers import registry as formats
from stackdump.writers.colour import coloured_lines
from stackdump.writers.registry import Output, View

if TYPE_CHECKING:  # the library is not loaded for `stackdump merge`
    from stackdump.api import CoreFile


@dataclass
class Run:
    """What one invocation carries between click and the phases of a dump."""

    argv: Sequence[str]
    interrupts: Interrupts
    stdout_usable: bool = True
    stage: str = "start"  # start, capture, analysis, write
    destination: Optional[Destination] = None
    core: Optional[CoreFile] = None  # --core FILE, --exe, --sysroot

    def set_stage(self, stage: str) -> None:
        self.stage = stage


def produce(run: Run, output: Optional[str], view: View, kind: str, make: Callable[[], Any]) -> Any:
    """A command's whole run: the destination opened first (a bad -o costs nothing), the
    model made (`make()`), written in the chosen format for its `kind`, and returned; on any
    failure the destination is left as it was."""
    run.destination = open_destination(output, run.stdout_usable)
    try:
        model = make()
        with writing(run):
            write_output(run, output, view, formats.output_of(kind, model, view))
    except BaseException:
        run.destination.abort()
        raise
    return model


def write_output(run: Run, output: Optional[str], view: View, written: Output) -> None:
    """A writer's output (lines, or one binary document) to the run's destination."""
    if isinstance(written, bytes):
        run.destination.write(written)
    else:
        write_text(run, output, view, written)


def write_text(run: Run, output: Optional[str], view: View, lines: Iterator[str]) -> None:
    """Lines to the destination, coloured when they go to a terminal."""
    if colour_wanted(output, view):
        lines = coloured_lines(lines)
    run.destination.write_lines(lines)


def colour_wanted(output: Optional[str], view: View) -> bool:
    """Colour only for text on our own stdout when it is a terminal (and not NO_COLOR)."""
    if not formats.find(view.format).coloured or output not in (None, "-"):
        return False
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return isatty(sys.stdout)


@contextlib.contextmanager
def writing(run: Run) -> Iterator[None]:
    """The write phase: a signal stops a report that is still going out (between chunks,
    or while the reader is slow), never one already whole; once it is committed signals
    change nothing, and the exit status is the report's."""
    run.stage = "write"
    with run.interrupts.deferred() as phase:
        run.destination.check = phase.raise_if_requested
        yield
        run.destination.commit()
        run.interrupts.ignore()
