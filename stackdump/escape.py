"""Text from outside (what a user typed, names and paths read from the target and its files)
made safe for a terminal and for line-oriented parsers, reversibly (docs/FORMAT.md "Escaping").

The rule: a backslash is written `\\\\`; a newline, tab and carriage return `\\n`, `\\t`, `\\r`;
every other byte of a control or non-printable character, or of bytes that are not valid
UTF-8 (surrogate-escaped by Python), is written `\\xHH`, one per byte of its UTF-8 encoding.
Printable text, non-ASCII letters included, is left as it is; a quoted value also writes `"`
as `\\"`. Undoing it gives back the original bytes.
"""

from __future__ import annotations

_SHORT = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_QUOTED = {**_SHORT, '"': '\\"'}


def escape(text: str, also: str = "", short_forms=_SHORT) -> str:
    """`text` with the rule above applied; characters in `also` are escaped as `\\xHH` too
    (`)` and `=` in a thread name, where they could end it or forge a key)."""
    # The common case, without a loop in Python: a printable text has no newline, tab or
    # carriage return, so only a backslash and the extra characters need looking for.
    special = also + '"' if '"' in short_forms else also
    if text.isprintable() and "\\" not in text and not any(c in text for c in special):
        return text
    out = []
    for c in text:
        short = short_forms.get(c)
        if short is not None:
            out.append(short)
        elif c.isprintable() and c not in also:
            out.append(c)
        else:
            out.append("".join(f"\\x{b:02x}" for b in _utf8(c)))
    return "".join(out)


def escape_also(escaped: str, also: str) -> str:
    """Text escaped already (read back from a JSON dump or folded stacks) with the characters
    in `also` escaped too, as `escape(original, also)` would have written them: its
    backslashes are escapes already and stay as they are."""
    for c in also:
        if c in escaped:
            escaped = escaped.replace(c, "".join(f"\\x{b:02x}" for b in _utf8(c)))
    return escaped


def _utf8(c: str) -> bytes:
    try:
        return c.encode("utf-8", "surrogateescape")  # a byte Python could not decode
    except UnicodeEncodeError:
        return c.encode("utf-8", "surrogatepass")  # any other lone surrogate


def quote(text: str) -> str:
    """A value in double quotes, escaped (a quote inside as `\\"`), so that spaces and empty
    strings show."""
    return '"' + escape(text, short_forms=_QUOTED) + '"'
