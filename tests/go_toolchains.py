"""Go toolchains of every release stackdump's goroutine layouts cover, for the tests that build
the Go target with each: Debian's own golang-1.N packages (bookworm's 1.19 is installed by
.ci/run; 1.21-1.23 from bookworm-backports, 1.24 from trixie, 1.25 from trixie-backports,
1.26-1.27 from sid). Each .deb is checked against the SHA256 its suite's Packages index gives
and unpacked with `dpkg-deb -x` into the test cache, never installed: a newer suite's package
would pull its libc along. Go's toolchain is self-contained, so the unpacked GOROOT runs.

Debian's delve comes the same way, from sid (`delve()`). Run as a script, this fetches every
release and delve ahead of the tests (`python3 tests/go_toolchains.py`).
"""

from __future__ import annotations

import functools
import hashlib
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Dict

MIRROR = os.environ.get("STACKDUMP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("STACKDUMP_TEST_CACHE", Path.home() / ".cache" / "stackdump-tests"))
# Go release -> the Debian suite that carries golang-<release>-go for amd64.
SUITES = {
    "1.21": "bookworm-backports",
    "1.22": "bookworm-backports",
    "1.23": "bookworm-backports",
    "1.24": "trixie",
    "1.25": "trixie-backports",
    "1.26": "sid",
    "1.27": "sid",
}


def goroot(release: str) -> Path:
    """GOROOT of Go `release` (bookworm's own for 1.19), fetched and unpacked once."""
    if release == "1.19":
        system = Path("/usr/lib/go-1.19")
        if not (system / "bin" / "go").exists():
            raise RuntimeError("golang-go (Go 1.19) is not installed (.ci/run installs it)")
        return system
    index = _packages(SUITES[release])
    root = _unpacked(
        f"go-{release}", (index[f"golang-{release}-go"], index[f"golang-{release}-src"])
    )
    return root / "usr" / "lib" / f"go-{release}"


def _unpacked(name: str, packages) -> Path:
    """A directory of the test cache with the packages unpacked in it, once per their
    SHA256s (a `.complete` marker says an earlier unpacking finished)."""
    key = hashlib.sha256("".join(p["SHA256"] for p in packages).encode()).hexdigest()[:16]
    root = CACHE / f"{name}-{key}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for package in packages:
            deb = _download(package)
            try:
                subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            finally:
                deb.unlink()
        (root / ".complete").touch()
    return root


@functools.cache
def _packages(suite: str) -> Dict[str, Dict[str, str]]:
    """The suite's Go toolchain and delve packages, by name (its index is read once per
    test session, not once per build)."""
    url = f"{MIRROR}/dists/{suite}/main/binary-amd64/Packages.xz"
    with urllib.request.urlopen(url, timeout=120) as response:
        text = lzma.decompress(response.read()).decode("utf-8", "replace")
    out: Dict[str, Dict[str, str]] = {}
    for stanza in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        name = fields.get("Package", "")
        if name == "delve" or name.startswith("golang-1.") and name.endswith(("-go", "-src")):
            out[name] = fields
    return out


def _download(package: Dict[str, str]) -> Path:
    handle, name = tempfile.mkstemp(suffix=".deb", dir=CACHE)
    digest = hashlib.sha256()
    with (
        os.fdopen(handle, "wb") as out,
        urllib.request.urlopen(f"{MIRROR}/{package['Filename']}", timeout=600) as response,
    ):
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != package["SHA256"]:
        os.unlink(name)
        raise RuntimeError(f"{package['Filename']}: SHA256 differs from the Packages index")
    return Path(name)


def delve() -> Path:
    """Debian's newest delve (sid's), which reads every Go release here (bookworm's 1.20
    stops at Go 1.20): unpacked once, like the toolchains. It needs only libc."""
    return _unpacked("delve", (_packages("sid")["delve"],)) / "usr" / "bin" / "dlv"


if __name__ == "__main__":
    for wanted in sys.argv[1:] or ["1.19", *SUITES, "delve"]:
        print(wanted, delve() if wanted == "delve" else goroot(wanted))
