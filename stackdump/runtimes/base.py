"""What a runtime (a language's, or a coroutine library's) may contribute to a dump: one
`Runtime` class whose every method says "nothing" unless a runtime overrides it, and the
view of a captured process that runtimes read.

The contributions, in the order a dump asks for them:
- `find(process)`: detect itself in a captured process, live or in a core, reading memory
  once every thread runs again; what it finds (`Found`) adds its words to threads
  (`annotate`) and lists its coroutines (`coroutines`).
- `own_code(loaded)`: for an object whose code it owns, the CFI rows, function starts and
  frame names there, asked before the object's own CFI and symbols.
- `anonymous_code(maps, pid)`: names for code in no object (JIT code).
- `stack_end(functions, coroutine)`: where a stack ends as the runtime's own tracebacks end
  it.
- `hints(header, threads)`: what would make its part of the report better, for stderr.

Nothing below the engine imports this package: the engine hands `unwind/` and `symbols/` the
hooks they call (`runtimes.own_code`), as drgn registers ordered symbol finders.
"""

from __future__ import annotations

import re
from typing import Any, Callable, List, Optional, Sequence, Tuple

from stackdump.capture.view import ProcessView
from stackdump.elf.store import LoadedObject
from stackdump.records import frozen
from stackdump.types import CaptureOptions, MemoryMap, ReportHeader, ThreadReport, ThreadSnapshot

__all__ = [
    "LABELS", "MAX_COROUTINES", "WAITED_S", "Coroutines", "Found", "ProcessView", "Runtime",
    "labels_of", "labels_text", "waited_s",
]  # fmt: skip

# The runtime key of a coroutine's profiler labels (Go's pprof labels), which profiles carry
# as pprof sample labels.
LABELS = "labels"


def labels_text(labels: Sequence[Tuple[str, str]]) -> str:
    """`key=value,key=value`, each key and value percent-encoded as in a URL (a space is
    %20, a comma %2C): one word, whatever the program put in them."""
    return ",".join(f"{_percent(k)}={_percent(v)}" for k, v in labels)


def labels_of(runtime_keys: Sequence[Tuple[str, str]]) -> Tuple[Tuple[str, str], ...]:
    """The labels a `LABELS` runtime key holds, decoded (`labels_text` undone)."""
    text = next((v for k, v in runtime_keys if k == LABELS), "")
    pairs = (item.partition("=") for item in text.split(",") if item)
    return tuple((_unpercent(k), _unpercent(v)) for k, _, v in pairs)


# What a URL keeps as it is (RFC 3986's unreserved characters): `urllib.parse.quote(text,
# safe="")`, without urllib.parse, which costs every dump's start-up ~5 ms (issue 31).
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_ENCODED = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def _percent(text: str) -> str:
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def _unpercent(text: str) -> str:
    """`urllib.parse.unquote`: each run of %XX is UTF-8, a bad sequence U+FFFD."""
    return _ENCODED.sub(
        lambda m: bytes.fromhex(m.group().replace("%", "")).decode("utf-8", "replace"), text
    )


# The runtime key of how long a coroutine has waited, in whole seconds, as its runtime counts
# it (`--watch` shows it beside its own measure).
WAITED_S = "wait_s"


def waited_s(runtime_keys: Sequence[Tuple[str, str]]) -> Optional[int]:
    value = next((v for k, v in runtime_keys if k == WAITED_S), "")
    return int(value) if value.isdigit() else None


# Bounds every runtime's search shares: coroutines kept per dump.
MAX_COROUTINES = 100_000


def _nothing_running(sp: int) -> Optional[int]:
    return None


@frozen
class Coroutines:
    """A runtime's suspended coroutines, each a snapshot the usual unwinder takes (already
    passed to `keep`), whether a bound cut the search short, and which coroutine a worker
    thread whose stack pointer is `sp` was running (`running(sp)`: its id, or None)."""

    snapshots: Tuple[ThreadSnapshot, ...] = ()
    truncated: bool = False
    running: Callable[[int], Optional[int]] = _nothing_running


class Found:
    """A runtime found in one process."""

    def annotate(self, threads: List[ThreadSnapshot]) -> List[ThreadSnapshot]:
        """The threads with the runtime's words for them (`runtime_keys`)."""
        return threads

    def coroutines(
        self, threads: Sequence[ThreadSnapshot], options: CaptureOptions, keep, pages
    ) -> Coroutines:
        """Its suspended coroutines (`--coroutines`); `pages` says which pages exist
        (`capture.pages.Pagemap`, `core.CorePages`), `keep` settles each snapshot."""
        return Coroutines()


class Runtime:
    """One runtime's contributions (module docstring); the defaults contribute nothing."""

    name = ""
    coroutines = ""  # what its coroutines are, for --help ('' when it lists none)

    def find(self, process: ProcessView) -> Optional[Found]:
        return None

    def own_code(self, loaded: LoadedObject) -> Optional[Any]:
        """For an object whose code this runtime owns, an object with `cfi_row(vaddr)`,
        `function_start(vaddr)` (`unwind.cfi.OwnRows`) and `frame(physical, frame, vaddr,
        mode)` (`symbols.symbolizer.OwnNames`); None for any other object."""
        return None

    def anonymous_code(self, maps: Sequence[MemoryMap], pid: Optional[int]) -> Optional[Any]:
        """Names for code in no object (`symbols.symbolizer.AnonymousCode`), or None."""
        return None

    def stack_end(self, functions: Sequence[Optional[str]], coroutine: str) -> Optional[int]:
        """The index of a stack's outermost frame as this runtime's tracebacks end it (what
        lies beyond is not this stack's), or None."""
        return None

    def waits_for_lock(self, runtime_keys: Sequence[Tuple[str, str]]) -> bool:
        """Whether a coroutine with these keys waits to take a lock (`--watch`: blocked, not
        waiting), as its runtime's own words say."""
        return False

    def hints(self, header: ReportHeader, threads: Sequence[ThreadReport]) -> Tuple[str, ...]:
        """What would make this runtime's part of the report better (a flag to run the
        program with), said on stderr when the threads show it is needed."""
        return ()
