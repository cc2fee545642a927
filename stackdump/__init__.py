"""stackdump: print the native stack of every thread of a live Linux process.

The library's names (`stackdump.api`) load on first use: `python -m stackdump` imports this
package before it can catch a Ctrl-C, and must not wait for the engine's imports first.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "AnalysisOptions",
    "CaptureOptions",
    "CoreFile",
    "DumpOptions",
    "LocationMode",
    "Process",
    "ObjectFile",
    "Profile",
    "Report",
    "dump",
    "profile",
    "symbolize",
    "watch",
    "Watch",
]

_HOMES = {
    "dump": "stackdump.api",
    "Process": "stackdump.api",
    "CoreFile": "stackdump.api",
    "ObjectFile": "stackdump.api",
    "profile": "stackdump.api",
    "symbolize": "stackdump.api",
    "watch": "stackdump.api",
    "Watch": "stackdump.progress",
    "Profile": "stackdump.profiles",
    "DumpOptions": "stackdump.engine",
    "AnalysisOptions": "stackdump.types",
    "CaptureOptions": "stackdump.types",
    "LocationMode": "stackdump.types",
    "Report": "stackdump.types",
}


def __getattr__(name: str) -> Any:
    """PEP 562: a library name, imported where it lives on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'stackdump' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
