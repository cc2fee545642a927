"""A debuginfod client: debug files (and executables) by build-id from the servers in
`DEBUGINFOD_URLS`, kept in libdebuginfod's own cache so that gdb, eu-stack and stackdump
share their downloads.

What libdebuginfod does (elfutils debuginfod/debuginfod-client.c), and so what this does:
- the cache is `$DEBUGINFOD_CACHE_PATH`, else `~/.debuginfod_client_cache` if it exists,
  else `$XDG_CACHE_HOME/debuginfod_client` (`~/.cache/debuginfod_client`); a file lives at
  `CACHE/BUILDID/debuginfo` (or `executable`), mode 0400, in a 0700 directory, written to a
  temporary name and renamed into place;
- an empty file there is a negative hit (the servers said 404): no server is asked again
  until it is older than `CACHE/cache_miss_s` seconds (600 when that file is missing);
- `DEBUGINFOD_TIMEOUT` (seconds, default 90) bounds each connection and read, and
  `DEBUGINFOD_MAXSIZE` (bytes) refuses a bigger file (also sent as `X-DEBUGINFOD-MAXSIZE`).

Two things more: what arrives must carry the build-id asked for, or it is dropped (a rogue or
broken server cannot rename frames), and nothing is cached for it; and the cache is used only
when it is the running user's alone (safefs.open_private_dir: root with another user's HOME
or DEBUGINFOD_CACHE_PATH must not read files that user planted, nor write through their
links): otherwise files are downloaded into a private directory for this run, removed at the
end, and `problem` says why. Called only after capture, while every thread of the target
runs: `prefetch` asks for the files a dump needs a few at a time, so a hung server costs one
timeout, not one per file, and `summary` says what could not be fetched and why (printed
whether or not stderr is a terminal: a script must learn that symbols are missing).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from stackdump import safefs
from stackdump.elf.image import file_build_id
from stackdump.types import DebuginfodSettings

_BUILD_ID = re.compile(r"[0-9a-f]{2,128}")
_DEFAULT_TIMEOUT_S = 90.0
_CACHE_MISS_DEFAULT_S = 600
_CHUNK = 1 << 16
# Files fetched at once: libdebuginfod asks one server per thread; a few suffice to make a
# hung server cost one timeout.
_PARALLEL = 4
# How often a prefetch that waits looks whether it was asked to stop (SIGINT).
_POLL_S = 0.1
Progress = Callable[[str, int, int], None]


def settings_from_environ(environ: Mapping[str, str]) -> Optional[DebuginfodSettings]:
    """The settings libdebuginfod would use, or None when no server is set."""
    urls = tuple(u.rstrip("/") for u in environ.get("DEBUGINFOD_URLS", "").split() if u)
    if not urls:
        return None
    return DebuginfodSettings(
        urls=urls,
        cache_path=cache_path(environ),
        timeout_s=_number(environ.get("DEBUGINFOD_TIMEOUT"), _DEFAULT_TIMEOUT_S),
        max_size=int(_number(environ.get("DEBUGINFOD_MAXSIZE"), 0)),
    )


def cache_path(environ: Mapping[str, str]) -> str:
    explicit = environ.get("DEBUGINFOD_CACHE_PATH")
    if explicit:
        return explicit
    home = environ.get("HOME") or "/"
    legacy = os.path.join(home, ".debuginfod_client_cache")
    if os.path.isdir(legacy):
        return legacy
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return os.path.join(xdg, "debuginfod_client")


def _number(text: Optional[str], default: float) -> float:
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if value >= 0 else default


class Debuginfod:
    """Finds files by build-id: in the cache, else from each server in turn."""

    def __init__(self, settings: DebuginfodSettings, progress: Optional[Progress] = None) -> None:
        self.settings = settings
        self.progress = progress
        self.downloads = 0  # files fetched from a server by this client (tests count them)
        self.problem = ""  # why the shared cache was not used ("" when it was)
        self._cache: Optional[str] = None  # the directory in use, chosen on first find
        self._private: Optional[str] = None  # this run's own, when the shared one is unsafe
        # label -> why it could not be fetched ("" for: no server has it), for `summary`.
        self.failures: Dict[str, str] = {}
        # (build_id, kind) asked for in vain: not asked again in this run.
        self._failed: Set[Tuple[str, str]] = set()
        self._lock = threading.Lock()

    def cache_dir(self) -> str:
        """The shared cache when it is safe to use, else a private one for this run."""
        if self._cache is None:
            fd, why = safefs.open_private_dir(self.settings.cache_path)
            if fd is not None:
                os.close(fd)
                self._cache = self.settings.cache_path
            else:
                import tempfile  # only this case needs it (~2 ms to import)

                self._private = self._cache = tempfile.mkdtemp(prefix="stackdump-debuginfod-")
                self.problem = (
                    f"debuginfod cache {self.settings.cache_path} not used: {why}; "
                    "downloads are kept for this run only"
                )
        return self._cache

    def close(self) -> None:
        """Remove this run's private cache, if one was made (open files stay readable)."""
        if self._private is not None:
            import shutil  # only a private cache needs it

            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None

    def prefetch(
        self, wanted: Sequence[Tuple[str, str, str]], stop: Callable[[], bool] = lambda: False
    ) -> None:
        """Fetch (build_id, kind, label) into the cache, `_PARALLEL` at a time, so that the
        `find`s that follow are cache hits. Returns when all are done, or at once when `stop()`
        says so (the threads are daemons: a hung server never holds stackdump's exit)."""
        pending: List[Tuple[str, str, str]] = list(dict.fromkeys(wanted))
        if not pending:
            return
        self.cache_dir()  # chosen once, before the threads share it
        done = threading.Event()
        left = [len(pending)]

        def work() -> None:
            while True:
                with self._lock:
                    if not pending:
                        return
                    build_id, kind, label = pending.pop(0)
                try:
                    self.find(build_id, kind, label)
                finally:
                    with self._lock:
                        left[0] -= 1
                        if not left[0]:
                            done.set()

        progress, self.progress = self.progress, None  # one bar cannot show parallel files
        try:
            for _ in range(min(_PARALLEL, len(pending))):
                threading.Thread(target=work, name="debuginfod", daemon=True).start()
            while not done.wait(_POLL_S):
                if stop():
                    return
        finally:
            self.progress = progress

    def summary(self) -> str:
        """One line of what could not be fetched and why ("" when everything was)."""
        with self._lock:
            failures = dict(self.failures)
        if not failures:
            return ""
        by_reason: Dict[str, List[str]] = {}
        for label, why in failures.items():
            by_reason.setdefault(why or "no server has it", []).append(label)
        parts = [f"{', '.join(labels)} ({why})" for why, labels in by_reason.items()]
        servers = " ".join(self.settings.urls)
        return (
            f"debuginfod ({servers}): {len(failures)} file(s) could not be fetched, their "
            f"frames named without them: {'; '.join(parts)}"
        )

    def find(self, build_id: str, kind: str = "debuginfo", label: str = "") -> Optional[str]:
        """The cached path of `kind` ("debuginfo" or "executable") for `build_id`, fetched
        if need be; None when no server has it (or it could not be fetched). Safe to call
        from several threads."""
        build_id = build_id.lower()
        if not _BUILD_ID.fullmatch(build_id) or kind not in ("debuginfo", "executable"):
            return None
        if (build_id, kind) in self._failed:
            return None  # one timeout per file and run, not one per question
        cache = self.cache_dir()
        directory = os.path.join(cache, build_id)
        target = os.path.join(directory, kind)
        cached = self._cached(target)
        if cached is not None:
            return cached or None
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError:
            return None
        all_missing = True
        reasons = []
        for url in self.settings.urls:
            outcome, why = self._download(
                f"{url}/buildid/{build_id}/{kind}", target, build_id, label
            )
            if outcome == "ok":
                with self._lock:
                    self.failures.pop(label or build_id, None)
                return target
            all_missing = all_missing and outcome == "missing"
            if why:
                reasons.append(f"{why} at {url}")
        if all_missing:
            with contextlib.suppress(OSError):
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        with self._lock:
            self.failures[label or build_id] = "; ".join(reasons)
            self._failed.add((build_id, kind))
        return None

    def _cached(self, target: str) -> Optional[str]:
        """The target when cached; "" for a negative hit still fresh; None to ask a server."""
        try:
            st = os.stat(target)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > 0:
            return target
        if time.time() - st.st_mtime <= self._cache_miss_s():
            return ""
        with contextlib.suppress(OSError):
            os.unlink(target)
        return None

    def _cache_miss_s(self) -> float:
        try:
            fd = safefs.open_regular(os.path.join(self.cache_dir(), "cache_miss_s"))
            with os.fdopen(fd) as f:
                return float(f.read(64).split()[0])
        except (OSError, ValueError, IndexError):
            return _CACHE_MISS_DEFAULT_S

    def _download(self, url: str, target: str, build_id: str, label: str) -> Tuple[str, str]:
        """("ok" | "missing" (the server said 404) | "failed", why it failed)."""
        import tempfile  # (its import costs every run ~3 ms; only a download needs it)
        import urllib.error  # (urllib costs every run ~10 ms; only a download needs it)
        import urllib.request

        headers = {"User-Agent": "stackdump"}
        if self.settings.max_size:
            headers["X-DEBUGINFOD-MAXSIZE"] = str(self.settings.max_size)
        request = urllib.request.Request(url, headers=headers)
        timeout = self.settings.timeout_s or None
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".stackdump-")
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
                except urllib.error.HTTPError as e:
                    return ("missing", "") if e.code == 404 else ("failed", f"HTTP {e.code}")
                except (OSError, ValueError) as e:
                    return "failed", self._why(e)
                with response:
                    copied = self._copy(response, out, label or build_id)
                    if copied:
                        return "failed", copied
            if file_build_id(tmp) != build_id:
                # Not what was asked for: never cached, never used.
                return "failed", "the server sent a file with another build-id"
            os.chmod(tmp, 0o400)
            os.rename(tmp, target)
            tmp = ""
            with self._lock:
                self.downloads += 1
            return "ok", ""
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _why(self, e: BaseException) -> str:
        import socket  # loaded by urllib's download already; at the top it costs every dump ~3 ms

        reason = getattr(e, "reason", e)  # urllib wraps the socket's error
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return f"no answer within DEBUGINFOD_TIMEOUT={self.settings.timeout_s:g} s"
        return str(getattr(reason, "strerror", None) or reason)

    def _copy(self, response, out, label: str) -> str:
        """Copy the body; "" when it arrived whole, else why not."""
        limit = self.settings.max_size
        try:
            total = int(response.headers.get("Content-Length") or 0)
        except ValueError:
            total = 0
        if limit and total > limit:
            return f"bigger than DEBUGINFOD_MAXSIZE={limit}"
        done = 0
        try:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                done += len(chunk)
                if limit and done > limit:
                    return f"bigger than DEBUGINFOD_MAXSIZE={limit}"
                out.write(chunk)
                if self.progress is not None:
                    self.progress(f"downloading {label}", done >> 10, max(total, done) >> 10)
        except OSError as e:
            return self._why(e)
        return "" if not total or done == total else f"cut short ({done} of {total} bytes)"
