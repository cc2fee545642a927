"""The escape rule of docs/FORMAT.md "Escaping": safe for terminals and parsers, and
reversible to the original bytes."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from stackdump.escape import escape, escape_also, quote

_SHORT = {"\\\\": b"\\", "\\n": b"\n", "\\t": b"\t", "\\r": b"\r", '\\"': b'"'}


def unescape(text: str) -> bytes:
    """The documented inverse: what a script would write to get the original bytes back."""
    out = b""
    for token in re.findall(r'\\x[0-9a-f]{2}|\\[\\ntr"]|.', text, re.S):
        if token in _SHORT:
            out += _SHORT[token]
        elif token.startswith("\\x"):
            out += bytes([int(token[2:], 16)])
        else:
            out += token.encode()
    return out


@given(st.binary(max_size=64))
def test_any_bytes_round_trip_and_print_no_control_character(raw):
    text = raw.decode("utf-8", "surrogateescape")
    for shown in (escape(text), escape(text, also=")="), quote(text)[1:-1]):
        assert shown.isprintable(), repr(shown)
        assert unescape(shown) == raw


def test_examples():
    assert escape("plain name") == "plain name"
    assert escape("naïve") == "naïve"
    assert escape("a\nb\x1b[2J") == "a\\nb\\x1b[2J"
    assert escape("x) status=ok", also=")=") == "x\\x29 status\\x3dok"
    assert escape("\u2028") == "\\xe2\\x80\\xa8"
    assert quote('say "hi"') == '"say \\"hi\\""'
    assert quote("") == '""'


@given(st.text(), st.sampled_from([";", ")=,"]))
def test_escaping_more_of_escaped_text_equals_escaping_it_so_at_once(original, also):
    """`stackdump merge` reads names escaped already: escape_also adds the separators its
    formats need without escaping the escapes again."""
    assert escape_also(escape(original), also) == escape(original, also=also)


@given(
    st.lists(st.tuples(st.text(), st.text()), max_size=4),
    st.text().filter(lambda t: "," not in t and "=" not in t),
)
def test_profiler_labels_are_percent_encoded_as_urllib_does(labels, stray):
    """Go's pprof labels as one word (`key=value,...`): each key and value encoded as
    `urllib.parse.quote(x, safe="")` would, and decoded back to what the program set; any
    text decodes as `unquote` decodes it (issue 31 dropped urllib.parse from start-up)."""
    from urllib.parse import quote as url_quote
    from urllib.parse import unquote

    from stackdump.runtimes.base import LABELS, labels_of, labels_text

    text = labels_text(labels)
    assert text == ",".join(f"{url_quote(k, safe='')}={url_quote(v, safe='')}" for k, v in labels)
    assert labels_of(((LABELS, text),)) == tuple(labels)
    assert labels_of(((LABELS, f"{stray}={stray}"),)) == ((unquote(stray), unquote(stray)),)
