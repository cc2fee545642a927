"""Colour for a terminal: the plain lines of any text view, styled by what each line is.
The text is unchanged (only styles are added), so what is shown is what `-o` would write;
rich is imported by these functions, and so only when stdout is a terminal."""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Iterable, Iterator

if TYPE_CHECKING:
    from rich.text import Text

_FRAME = re.compile(
    r"(    \d+# +)(0x[0-9a-f]{16} )?(.*?)( at .*?| in .*?)?( \(inlined\)| \[kernel\])?$"
)
_SECTION = re.compile(r"(----- .*?\) )(status=)(\S+)(.*)$")
_BAD = {"ok": "green", "skipped_blocking_syscall": "cyan", "skipped_running": "cyan"}


def coloured_lines(lines: Iterable[str]) -> Iterator[str]:
    """Each line with the terminal's escape sequences for its styles (colours as the
    terminal's TERM/COLORTERM say it can show)."""
    from rich.console import Console  # rich (~40 ms to import): a terminal only

    buffer = io.StringIO()
    # Lines are already escaped (stackdump.escape): nothing from the target reaches the
    # terminal raw, and markup=False keeps rich from reading [..] in names as styles.
    console = Console(
        file=buffer, force_terminal=True, highlight=False, markup=False, emoji=False, width=1 << 16
    )
    for line in lines:
        console.print(style_line(line), end="", soft_wrap=True)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def style_line(line: str) -> Text:
    from rich.text import Text  # rich, as in coloured_lines

    m = _FRAME.match(line)
    if m:
        text = Text()
        index, address, function, where, suffix = m.groups()
        if address and function.startswith("in ") and where is None:
            # `0x... in OBJECT+0xOFFSET`: the pc is the function's place, unknown
            address, function, where = None, address.rstrip(), " " + function
        text.append(index, "dim")
        if address:
            text.append(address, "dim")
        text.append(function, "dim" if function.startswith("0x") else "bold")
        if where:
            text.append(where, "green" if where.startswith(" at ") else "dim")
        if suffix:
            text.append(suffix, "italic dim")
        return text
    m = _SECTION.match(line)
    if m:
        head, key, status, rest = m.groups()
        text = Text(head, "bold cyan")
        text.append(key, "bold cyan")
        text.append(status, "bold " + _BAD.get(status, "red"))
        text.append(rest, "cyan")
        return text
    if line.startswith(("deadlock:", "unknown_frames:")):
        return Text(line, "bold red")
    if line.startswith(("summary:", "stats:", "tids:", "object ")):
        return Text(line, "dim")
    key, sep, value = line.partition(": ")
    if sep and " " not in key:
        text = Text(key + sep, "dim")
        text.append(value)
        return text
    return Text(line)
