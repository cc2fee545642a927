"""How stackdump touches files it did not make, run as root against other users' processes
(docs/FORMAT.md "Files stackdump trusts"):

- every file it reads is opened non-blocking and checked on its descriptor to be a regular
  file, so a FIFO, a device or a socket planted where an object, a core, a debug file or a
  cache entry was expected is refused at once instead of hanging the dump (`open_regular`);
- what it derives from a file is shared with later dumps (the disk cache) only when the
  file's content can be changed by no one but root or the running user (`trusted`): a
  build-id is a claim the file makes, not proof of its content;
- a directory it keeps files in (its cache, debuginfod's) must belong to the running user and
  be writable by no one else (`open_private_dir`);
- a path it writes to or makes directories along is walked one component at a time, following
  only symlinks owned by the running user or by root (`resolve`), so nobody can steer a write
  through a link planted in /tmp.

Only the standard library is imported here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import List, Optional, Tuple

_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
_MAX_LINKS = 40  # the kernel's own bound on symlinks in one path


class NotRegularFile(OSError):
    """A path stackdump was to read is a FIFO, device, socket or directory."""

    def __init__(self, path: str, mode: int) -> None:
        super().__init__(errno.EINVAL, f"not a regular file ({kind_of(mode)})", path)


class UnsafePath(OSError):
    """A path reaches through a symlink the running user did not make, or a directory others
    can write: refused (the message says which part and whose it is)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(errno.EPERM, why, path)


def kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str, dir_fd: Optional[int] = None, follow: bool = True) -> int:
    """A read-only descriptor of the regular file at path. Never blocks in open (a FIFO
    without a writer, a tty); raises NotRegularFile for anything but a regular file, OSError
    when it cannot be opened. `follow=False`: a symlink as the last component is refused."""
    flags = _READ_FLAGS if follow else _READ_FLAGS | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise NotRegularFile(path, stat.S_IFLNK) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(path, st.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_binary(path: str):
    """open_regular as a buffered binary file object."""
    return os.fdopen(open_regular(path), "rb")


def trusted(st: os.stat_result) -> bool:
    """Whether only root or the running user can have written this file's content."""
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _owned_link(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def resolve(path: str, make_dirs: bool = False) -> Tuple[int, str]:
    """(descriptor of the directory that holds path's last component, that component), the
    directories on the way reached one at a time. A symlink on the way, or as the last
    component, is followed only when it belongs to the running user or to root; any other
    raises UnsafePath. `make_dirs`: missing directories on the way are made (mode 0700).
    The descriptor is an O_PATH one: use it as `dir_fd`, close it after."""
    if not path:
        raise FileNotFoundError(errno.ENOENT, "empty path", path)
    parts: List[str] = path.split("/")
    current = os.open("/" if path.startswith("/") else ".", _DIR_FLAGS)
    links = 0
    try:
        while True:
            while parts and parts[0] in ("", "."):
                parts.pop(0)
            if not parts:
                # The path named a directory ("/", "a/"): hand back that directory itself.
                return current, "."
            name = parts.pop(0)
            last = not any(p not in ("", ".") for p in parts)
            try:
                st = os.stat(name, dir_fd=current, follow_symlinks=False)
            except FileNotFoundError:
                if last:
                    return current, name
                if not make_dirs:
                    raise
                os.mkdir(name, 0o700, dir_fd=current)
                st = os.stat(name, dir_fd=current, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                if not _owned_link(st):
                    shown = _shown(path, parts, name)
                    raise UnsafePath(
                        path,
                        f"{shown} is a symlink owned by uid {st.st_uid}, which is neither you "
                        "nor root: not followed",
                    )
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(name, dir_fd=current)
                if target.startswith("/"):
                    os.close(current)
                    current = os.open("/", _DIR_FLAGS)
                parts = target.split("/") + parts
                continue
            if last:
                return current, name
            following = os.open(name, _DIR_FLAGS, dir_fd=current)
            os.close(current)
            current = following
    except BaseException:
        os.close(current)
        raise


def _shown(path: str, rest: List[str], name: str) -> str:
    """The part of path up to the offending component, for messages."""
    tail = "/".join(p for p in rest if p)
    if tail and path.endswith(tail):
        return path[: len(path) - len(tail)].rstrip("/") or name
    return path


def open_private_dir(path: str) -> Tuple[Optional[int], str]:
    """(read descriptor, "") of directory path, made (0700) with its missing parents when it
    does not exist, if it is safe to keep files in: reached through no symlink another user
    owns, itself no symlink, owned by the running user, writable by no one else. Else
    (None, why not)."""
    try:
        parent, name = resolve(os.path.abspath(path), make_dirs=True)
    except OSError as e:
        return None, e.strerror or str(e)
    try:
        return _own_dir(parent, name, create=True)
    finally:
        os.close(parent)


def open_private_subdir(parent: int, name: str, create: bool) -> Optional[int]:
    """A read descriptor of directory `name` in the private directory `parent`, made (0700)
    when missing and `create`; None when it is missing, a symlink, or not ours alone."""
    return _own_dir(parent, name, create)[0]


def _own_dir(parent: int, name: str, create: bool) -> Tuple[Optional[int], str]:
    """(read descriptor, "") of directory `name` in `parent` if it is no symlink and the
    running user's alone, else (None, why not)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, flags, dir_fd=parent)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            with contextlib.suppress(OSError):
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                return None, f"it is {kind_of(st.st_mode)}, owned by uid {st.st_uid}"
        return None, e.strerror or str(e)
    why = private_problem(os.fstat(fd))
    if why:
        os.close(fd)
        return None, why
    return fd, ""


def private_problem(st: os.stat_result) -> str:
    """Why a directory is not the running user's alone ("" when it is)."""
    if st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"others can write to it (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""
