"""Which Debian package ships a file, and so which package has its debug symbols: the fix
the report suggests for an object whose frames have no names (`dpkg -S`, read-only)."""

from __future__ import annotations

import os
from typing import Optional

from stackdump.cache import DiskCache

_DPKG_TIMEOUT_S = 5.0
# Packages whose debug files are not the usual PACKAGE-dbgsym from the debian-debug archive.
_DEBUG_PACKAGES = {"libc6": "libc6-dbg"}
# What dpkg changes whenever a package is installed or removed.
_DPKG_STATE = ("/var/lib/dpkg/status", "/var/lib/dpkg/info")


class _Fix:
    """A fix's text as the disk cache holds it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def to_fields(self) -> dict:
        return {"text": [self.text]}

    @classmethod
    def from_fields(cls, fields: dict) -> _Fix:
        (text,) = fields["text"]
        if not isinstance(text, str):
            raise ValueError("inconsistent cached fix")
        return cls(text)


def cached_symbols_fix(
    cache: DiskCache,
    path: str,
    build_id: Optional[str],
    debuginfod: bool = False,
    missing: bool = False,
) -> str:
    """`symbols_fix`, kept in the disk cache until dpkg's state changes: `dpkg -S` reads
    every package's file list (~0.1 s, 0.2 s of CPU with dpkg-query), which a server dumped
    every few seconds would pay each time."""
    try:
        stamp = "/".join(str(os.stat(p).st_mtime_ns) for p in _DPKG_STATE)
    except OSError:
        stamp = None  # no dpkg: nothing to cache, and symbols_fix asks nothing of it
    key = f"fix/{path}/{build_id}/{int(debuginfod)}{int(missing)}/{stamp}" if stamp else None
    fix = cache.fetch(key, _Fix, lambda: _Fix(symbols_fix(path, build_id, debuginfod, missing)))
    return fix.text if fix is not None else symbols_fix(path, build_id, debuginfod, missing)


def owning_package(path: str) -> Optional[str]:
    """The package that installed `path` (also under its /usr-merged twin), or None."""
    candidates = [path]
    if path.startswith("/usr/"):
        candidates.append(path[4:])  # dpkg records /lib/... for files now under /usr/lib
    elif path.startswith("/"):
        candidates.append("/usr" + path)
    for candidate in candidates:
        done = _dpkg("dpkg", "-S", candidate)
        if done is None:
            return None
        if done.returncode == 0 and done.stdout:
            # "libc6:amd64: /usr/lib/x86_64-linux-gnu/libc.so.6"
            package = done.stdout.split("\n", 1)[0].rsplit(": ", 1)[0]
            return package.split(":", 1)[0].split(",", 1)[0].strip() or None
    return None


def symbols_fix(
    path: str, build_id: Optional[str], debuginfod: bool = False, missing: bool = False
) -> str:
    """What to do so that `path`'s functions get names, each suggestion checked against
    this machine first. `debuginfod`: whether a server was set (DEBUGINFOD_URLS); when
    none was, setting one is a fix too. `missing`: the file itself was not found (a core
    from another machine, a file deleted since)."""
    server = ", or DEBUGINFOD_URLS set to a debuginfod server that has it"
    if missing:
        # Its debug file alone would not do: the code and its CFI are in the file.
        return (
            "the file is not on this machine as the process saw it: --sysroot DIR (the root "
            "it was under) or --exe PATH (the program)"
            + (f", a copy with build-id {build_id}" if build_id else "")
            + (server if build_id and not debuginfod else "")
        )
    where = "--debug-dir DIR with its debug file"
    if build_id:
        where += f" (DIR/.build-id/{build_id[:2]}/{build_id[2:]}.debug)"
        if not debuginfod:
            where += server
    package = owning_package(path)
    if package is not None:
        debug = _DEBUG_PACKAGES.get(package, f"{package}-dbgsym")
        if is_installed(debug):
            # Installed, yet no debug file for this build: the process maps another version
            # of the package than the one installed (upgraded since it started).
            return (
                f"{debug} is installed but has no debug file for this build"
                + (f" ({build_id})" if build_id else "")
                + f": the process runs another version of {package} than the one installed "
                f"(restart it, or install the matching {debug}), or {where}"
            )
        archive = "" if package in _DEBUG_PACKAGES else " from the debian-debug archive"
        return f"apt install {debug}{archive}, or {where}"
    if build_id is None:
        return f"rebuild it with symbols (do not strip it) and a build-id, or {where}"
    return f"rebuild it with symbols (do not strip it), or {where}"


def is_installed(package: str) -> bool:
    """Whether dpkg has `package` installed (for this machine's architecture or any)."""
    done = _dpkg("dpkg-query", "-W", "-f=${Status}\n", package)
    return done is not None and done.returncode == 0 and "install ok installed" in done.stdout


def _dpkg(*command: str):
    """The finished dpkg command (a CompletedProcess), or None when it could not run."""
    import subprocess  # only a stripped object's hint runs dpkg: ~3 ms of every start-up

    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=_DPKG_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
