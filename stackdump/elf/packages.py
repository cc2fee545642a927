"""Which Debian package ships a file, and so which package has its debug symbols: the fix
the report suggests for an object whose frames have no names (`dpkg -S`, read-only)."""

from __future__ import annotations

import subprocess
from typing import Optional

_DPKG_TIMEOUT_S = 5.0
# Packages whose debug files are not the usual PACKAGE-dbgsym from the debian-debug archive.
_DEBUG_PACKAGES = {"libc6": "libc6-dbg"}


def owning_package(path: str) -> Optional[str]:
    """The package that installed `path` (also under its /usr-merged twin), or None."""
    candidates = [path]
    if path.startswith("/usr/"):
        candidates.append(path[4:])  # dpkg records /lib/... for files now under /usr/lib
    elif path.startswith("/"):
        candidates.append("/usr" + path)
    for candidate in candidates:
        try:
            done = subprocess.run(
                ["dpkg", "-S", candidate],
                capture_output=True,
                text=True,
                timeout=_DPKG_TIMEOUT_S,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode == 0 and done.stdout:
            # "libc6:amd64: /usr/lib/x86_64-linux-gnu/libc.so.6"
            package = done.stdout.split("\n", 1)[0].rsplit(": ", 1)[0]
            return package.split(":", 1)[0].split(",", 1)[0].strip() or None
    return None


def symbols_fix(path: str, build_id: Optional[str], debuginfod: bool = False) -> str:
    """What to do so that `path`'s functions get names. `debuginfod`: whether a server
    was set (DEBUGINFOD_URLS); when none was, setting one is a fix too."""
    where = "--debug-dir DIR with its debug file"
    if build_id:
        where += f" (DIR/.build-id/{build_id[:2]}/{build_id[2:]}.debug)"
        if not debuginfod:
            where += ", or DEBUGINFOD_URLS set to a debuginfod server that has it"
    package = owning_package(path)
    if package is not None:
        debug = _DEBUG_PACKAGES.get(package, f"{package}-dbgsym")
        archive = "" if package in _DEBUG_PACKAGES else " from the debian-debug archive"
        return f"apt install {debug}{archive}, or {where}"
    return f"rebuild it with symbols (do not strip it), or {where}"
