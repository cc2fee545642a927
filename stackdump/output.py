"""Where the report goes (`-o`, stdout): chosen and opened before any thread is stopped,
then written whole, or failing with a message that names what the user typed.

stackdump runs as root from scripts, so it must never replace a file that is not its to
replace (docs/FORMAT.md "Output destination"):

- the path is walked one directory at a time, following only symlinks owned by the running
  user or root (safefs.resolve): a link another user planted in /tmp is refused (exit 2)
  before anything is touched, and the directory found is held open, so the temporary file
  and the rename land in it even if the path is swapped meanwhile;
- a new path, or an existing regular file with one link: a temporary file beside it,
  renamed over it once the whole report is in it, so the file appears
  complete or not at all; an existing file keeps its mode and owner, a new one gets the
  umask's mode;
- a regular file with other hard links, or whose owner cannot be kept: written in place;
- a character device, FIFO or Unix socket (`/dev/null`, `/dev/stdout`, a named pipe): opened
  and written in place, never replaced;
- anything else (a directory, a block device): refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
from typing import Callable, Iterable, List, Optional

from stackdump import safefs
from stackdump.errors import InvalidArgument, OutputError
from stackdump.escape import quote

STDOUT_NAME = "standard output"
_CHUNK = 1 << 20
# How long a write waits for a slow reader before looking for a signal again.
_POLL_MS = 50


class Destination:
    """An opened destination. `write` the report, then `commit`; `abort` on any failure
    removes what is not the user's (the temporary file) and leaves the target untouched."""

    def __init__(
        self,
        shown: str,
        fd: int,
        owns_fd: bool,
        temp: Optional[str] = None,
        final: Optional[str] = None,
        truncate: bool = False,
        dir_fd: Optional[int] = None,
    ) -> None:
        self.shown = shown  # for messages: what the user typed, quoted
        self._fd = fd
        self._owns_fd = owns_fd
        self._temp = temp
        self._final = final
        self._truncate = truncate  # in place into a regular file: only once we have a report
        self._dir_fd = dir_fd  # the directory temp and final are names in
        # Called between chunks; raises to stop writing (a signal, see stackdump.interrupts).
        self.check: Callable[[], None] = _nothing

    def write(self, data: bytes) -> None:
        try:
            if self._truncate:
                os.ftruncate(self._fd, 0)
                self._truncate = False
            _write_all(self._fd, data, self.check)
        except OSError as e:
            raise self._error(e) from None

    def write_lines(self, lines: Iterable[str]) -> None:
        """Text lines, each ended by a newline, encoded and written about a megabyte at a
        time: a 10,000-thread report is never held whole as text and as bytes at once."""
        chunk: List[str] = []
        size = 0
        for line in lines:
            chunk.append(line)
            size += len(line) + 1
            if size >= _CHUNK:
                self.write(_encode(chunk))
                chunk, size = [], 0
        if chunk:
            self.write(_encode(chunk))

    def commit(self) -> None:
        try:
            if self._owns_fd:
                fd, self._fd = self._fd, -1
                os.close(fd)
            if self._temp is not None and self._final is not None:
                os.rename(self._temp, self._final, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
                self._temp = None
        except OSError as e:
            raise self._error(e) from None
        self._close_dir()

    def abort(self) -> None:
        if self._owns_fd and self._fd >= 0:
            fd, self._fd = self._fd, -1
            _quietly(os.close, fd)
        if self._temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temp, dir_fd=self._dir_fd)
            self._temp = None
        self._close_dir()

    def _close_dir(self) -> None:
        if self._dir_fd is not None:
            fd, self._dir_fd = self._dir_fd, None
            _quietly(os.close, fd)

    def cut_note(self) -> str:
        """What an interrupted or failed write left behind, for the message."""
        if self._temp is not None:
            return f"{self.shown} was left as it was"
        return f"what reached {self.shown} is an incomplete report"

    def _error(self, e: OSError) -> OutputError:
        if e.errno == errno.EPIPE:
            why = "the reader closed the pipe before the report was complete"
        else:
            why = e.strerror or str(e)
        return OutputError(f"cannot write the report to {self.shown}: {why}; {self.cut_note()}")


def open_destination(path: Optional[str], stdout_usable: bool = True) -> Destination:
    """Open where the report goes. Raises InvalidArgument (exit 2) for a destination that
    cannot take it, before anything has touched the target."""
    if path is None or path == "-":
        if not stdout_usable:
            raise InvalidArgument(
                "standard output is closed: nowhere to write the report (give -o FILE)"
            )
        return Destination(STDOUT_NAME, 1, owns_fd=False)
    shown = quote(path)
    if path == "":
        raise InvalidArgument("invalid output: -o takes a file name, not an empty string")

    def refuse(why: str) -> InvalidArgument:
        return InvalidArgument(f"cannot write the report to {shown}: {why}")

    try:
        followed: Optional[os.stat_result] = os.stat(path)
    except OSError:
        followed = None
    if followed is not None:
        # Our own stdout or stderr (`-o /dev/stdout`, `-o /proc/self/fd/2`, or a file the
        # shell redirected one of them to): write to that descriptor, never rename over it.
        for fd in (1, 2):
            if _same_file(followed, fd):
                return Destination(shown, fd, owns_fd=False)
    try:
        dir_fd, name = safefs.resolve(path)
    except OSError as e:
        raise refuse(e.strerror or str(e)) from None
    try:
        return _open_in(dir_fd, name, shown, refuse)
    except BaseException:
        os.close(dir_fd)
        raise


def _open_in(dir_fd: int, name: str, shown: str, refuse) -> Destination:
    """The destination `name` in directory dir_fd (which the Destination then owns)."""
    try:
        st: Optional[os.stat_result] = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise refuse(e.strerror or str(e)) from None
    if st is not None:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            raise refuse("it is a directory")
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            # A FIFO's open waits for a reader, as the shell's `>` does; still nothing has
            # been stopped.
            fd = _open_in_place(name, dir_fd, refuse)
            os.close(dir_fd)
            return Destination(shown, fd, owns_fd=True)
        if stat.S_ISSOCK(mode):
            sock = _connect(f"/proc/self/fd/{dir_fd}/{name}", refuse)
            os.close(dir_fd)
            return Destination(shown, sock, owns_fd=True)
        if not stat.S_ISREG(mode):
            raise refuse("it is neither a regular file nor a character device, FIFO or socket")
        _check_planted(dir_fd, st, refuse)
    if st is not None and st.st_nlink > 1:
        return _in_place(shown, name, dir_fd, refuse)
    temp_fd, temp = _create_temp(dir_fd, name, refuse)
    try:
        if st is None:
            os.fchmod(temp_fd, 0o666 & ~_umask())
        else:
            os.fchmod(temp_fd, stat.S_IMODE(st.st_mode))
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(temp_fd, st.st_uid, st.st_gid)
    except PermissionError:
        # Not allowed to give the file its owner back: keep the file, write into it.
        os.close(temp_fd)
        _quietly_unlink(temp, dir_fd)
        return _in_place(shown, name, dir_fd, refuse)
    except OSError as e:
        os.close(temp_fd)
        _quietly_unlink(temp, dir_fd)
        raise refuse(e.strerror or str(e)) from None
    return Destination(shown, temp_fd, owns_fd=True, temp=temp, final=name, dir_fd=dir_fd)


def _check_planted(dir_fd: int, st: os.stat_result, refuse) -> None:
    """The kernel's protected_regular rule, kept whatever the sysctl says: in a sticky
    directory others can write (/tmp), a file owned by neither us nor the directory's owner
    may have been planted for us to fill (a hard link to a file of ours, or a file its owner
    then reads our report from): refused."""
    try:
        where = os.fstat(dir_fd)
    except OSError:
        return
    shared = where.st_mode & stat.S_ISVTX and where.st_mode & (stat.S_IWOTH | stat.S_IWGRP)
    if shared and st.st_uid not in (os.geteuid(), where.st_uid):
        raise refuse(
            f"it belongs to uid {st.st_uid} in a sticky directory others can write, so "
            "another user may have planted it: remove it or write elsewhere"
        )


def _same_file(st: os.stat_result, fd: int) -> bool:
    try:
        other = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)


def _open_in_place(name: str, dir_fd: int, refuse) -> int:
    try:
        flags = os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as e:
        raise refuse(e.strerror or str(e)) from None


def _in_place(shown: str, name: str, dir_fd: int, refuse) -> Destination:
    fd = _open_in_place(name, dir_fd, refuse)
    os.close(dir_fd)
    return Destination(shown, fd, owns_fd=True, truncate=True)


def _connect(path: str, refuse) -> int:
    import socket  # only a Unix socket destination needs it (~3 ms of every dump's start-up)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise refuse(e.strerror or str(e)) from None
    return sock.detach()


def _create_temp(dir_fd: int, name: str, refuse):
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    for attempt in range(100):
        temp = f".{name}.stackdump-{os.getpid()}-{attempt}.tmp"
        try:
            return os.open(temp, flags, 0o600, dir_fd=dir_fd), temp
        except FileExistsError:
            continue
        except OSError as e:
            raise refuse(e.strerror or str(e)) from None
    raise refuse("no free temporary file name beside it")


def _quietly_unlink(name: str, dir_fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _encode(lines: List[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8", "backslashreplace")


def _write_all(fd: int, data: bytes, check: Callable[[], None]) -> None:
    """All of `data`, calling `check` between writes and while the reader is slow, so a
    signal can stop a blocked report and one that comes after the last byte cannot. A
    pipe that polls writable takes PIPE_BUF bytes without blocking; a file never blocks."""
    view = memoryview(data)
    chunk = _CHUNK if stat.S_ISREG(os.fstat(fd).st_mode) else select.PIPE_BUF
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while view:
        check()
        if not poller.poll(_POLL_MS):
            continue
        try:
            n = os.write(fd, view[:chunk])
        except BlockingIOError:  # a non-blocking descriptor we inherited, full again
            continue
        view = view[n:]


def _nothing() -> None:
    pass


def _quietly(fn, arg) -> None:
    with contextlib.suppress(OSError):
        fn(arg)
