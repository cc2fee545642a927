"""Code named by a `module:attribute` spec, loaded only when it is used (a dump loads what
it uses, docs/ARCHITECTURE.md): the writers the format registry names and the subcommands.
(The package's own library names load the same way in `stackdump/__init__.py`, which may
import nothing else.)"""

from __future__ import annotations

import importlib
from typing import Any


def load(spec: str) -> Any:
    """The attribute a `module:attribute` spec names, its module imported now."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)
