"""Reading /proc/<pid>/...: threads, names, memory map, status, blocked syscall, stat flags.

Every reader returns None (or an empty result) when the task has gone, because threads come
and go while we look; callers turn that into `thread_exited`, never into an exception.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from stackdump.escape import escape
from stackdump.records import record
from stackdump.types import MemoryMap, SyscallState

PROC = "/proc"
PF_KTHREAD = 0x00200000  # include/linux/sched.h
PF_EXITING = 0x00000004


class KeptFiles:
    """/proc files kept open across the captures of a series (a profile, a watch) and read
    again from their start: a sample reads the same few of the process and of each thread
    each time, and opening one by its path costs more than reading it (~4 us of ~7 for a
    stat file). A descriptor stays bound to the task it was opened for: when it reads as gone
    (ESRCH), the path is opened once more, for a thread that took the dead one's TID. At most
    `limit` stay open; any other file is opened for each read. Close it to release them."""

    def __init__(self, limit: int = 8) -> None:
        self._limit = limit
        self._fds: Dict[str, int] = {}

    def __enter__(self) -> KeptFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)

    @property
    def full(self) -> bool:
        return len(self._fds) >= self._limit

    def retain(self, wanted: Callable[[str], bool]) -> None:
        """Close every kept file whose path is not `wanted` (those of exited threads)."""
        for path in [p for p in self._fds if not wanted(p)]:
            self.forget(path)

    def forget(self, path: str) -> None:
        """Close the file at `path` if it is kept (its thread has exited)."""
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def descriptor(self, path: str) -> Optional[int]:
        """The kept descriptor of `path`, opened now if there is room; None when there is
        none or it cannot be opened."""
        fd = self._fds.get(path)
        if fd is not None or len(self._fds) >= self._limit:
            return fd
        try:
            fd = self._fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        return fd

    def read(self, path: str, whole: int) -> Optional[bytes]:
        """The file's bytes as a read from its start gives them now; None when it cannot be
        read. `whole`: how to know the read has them all (`LINE`, `SHOWN`, `WHOLE`)."""
        fd = self._fds.get(path)
        if fd is not None:
            try:
                return _read_fd(fd, whole)
            except OSError:
                self.forget(path)
        if len(self._fds) >= self._limit:
            return _read_bytes(path, whole)
        fd = self.descriptor(path)
        if fd is None:
            return None
        try:
            return _read_fd(fd, whole)
        except OSError:
            self.forget(path)
            return None


# How a read of a /proc file knows it has the whole of it. The kernel makes a one-line file
# (stat, syscall, comm, wchan) and a file shown by one call (status: a single_open seq_file)
# whole before the first read copies any of it, so the read that would only say "end of
# file" is skipped: for a LINE when the line came whole (it ends in a newline or left the
# buffer room), for SHOWN when the file left the buffer room. A file of many records (maps)
# is made a page at a time, and is read on to an empty read (WHOLE).
LINE, SHOWN, WHOLE = 0, 1, 2


def _read_fd(fd: int, whole: int) -> bytes:
    """The bytes of an open /proc file from its start (`whole`: LINE, SHOWN, WHOLE)."""
    data = os.pread(fd, 4096, 0)
    if len(data) < 4096 and whole != WHOLE:
        return data
    if whole == LINE and data.endswith(b"\n"):
        return data
    chunks, offset = [data], len(data)
    while data:
        data = os.pread(fd, 65536, offset)
        chunks.append(data)
        offset += len(data)
    return b"".join(chunks)


def _read_bytes(path: str, whole: int) -> Optional[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        # ENOENT, ESRCH from a task being torn down, EACCES: all read as "not there".
        return None
    try:
        return _read_fd(fd, whole)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_text(path: str, kept: Optional[KeptFiles] = None, whole: int = WHOLE) -> Optional[str]:
    # os.open/os.read, not open(): a dump reads four or five small files per thread, and the
    # buffered file object costs ~2 us more each (10,000 threads: ~0.1 s).
    data = _read_bytes(path, whole) if kept is None else kept.read(path, whole)
    # surrogateescape: bytes that are not UTF-8 survive, for paths to open and for
    # stackdump.escape to show exactly
    return None if data is None else data.decode("utf-8", "surrogateescape")


def _read_line(path: str, kept: Optional[KeptFiles] = None) -> Optional[str]:
    """A one-line file (stat, syscall, comm, wchan): read in one read when it came whole."""
    data = _read_bytes(path, LINE) if kept is None else kept.read(path, LINE)
    return None if data is None else data.decode("utf-8", "surrogateescape")


def process_exists(pid: int) -> bool:
    return os.path.isdir(f"{PROC}/{pid}")


def thread_exists(pid: int, tid: int) -> bool:
    return os.path.isdir(f"{PROC}/{pid}/task/{tid}")


def list_tids(pid: int) -> List[int]:
    try:
        names = os.listdir(f"{PROC}/{pid}/task")
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


def read_comm(pid: int, tid: int, kept: Optional[KeptFiles] = None) -> Optional[str]:
    text = _read_line(f"{PROC}/{pid}/task/{tid}/comm", kept)
    # Interned: the threads of a pool share a name, and a dump can hold 10,000 of them.
    return None if text is None else sys.intern(_drop_newline(text))


def _drop_newline(text: str) -> str:
    """The kernel ends comm with one newline; a name may itself end in one."""
    return text[:-1] if text.endswith("\n") else text


def read_status(
    pid: int,
    tid: Optional[int] = None,
    keys: Optional[Sequence[str]] = None,
    kept: Optional[KeptFiles] = None,
) -> Dict[str, str]:
    """The lines of a process's or a thread's status file, by key; only `keys` (those
    present) when given, found without parsing the other ~56 lines: a sample asks a few of
    them per thread (issue 31)."""
    path = f"{PROC}/{pid}/status" if tid is None else f"{PROC}/{pid}/task/{tid}/status"
    text = _read_text(path, kept, SHOWN)
    fields: Dict[str, str] = {}
    if text is None:
        return fields
    if keys is not None:
        for key in keys:
            value = _value_of(text, key)
            if value is not None:
                fields[key] = value
        return fields
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def _value_of(text: str, key: str) -> Optional[str]:
    """The value of the line `key:` in a status file's text, as `read_status` gives it."""
    if text.startswith(key + ":"):
        start = 0
    else:
        start = text.find(f"\n{key}:") + 1
        if start == 0:
            return None
    end = text.find("\n", start)
    return text[start + len(key) + 1 : end if end >= 0 else len(text)].strip()


def read_exe(pid: int, tid: Optional[int] = None) -> str:
    """`tid`: read it through that thread (see live_thread)."""
    where = f"{PROC}/{pid}" if tid is None else f"{PROC}/{pid}/task/{tid}"
    try:
        return os.readlink(f"{where}/exe")
    except OSError:
        return "?"


def thread_state(pid: int, tid: int, kept: Optional[KeptFiles] = None) -> str:
    """The State letter of a thread (R, S, D, T, t, Z, X...), '' when it is gone."""
    return read_status(pid, tid, ("State",), kept).get("State", "")[:1]


def is_exited(state: str) -> bool:
    return state in ("", "Z", "X")


SIGKILL_BIT = 1 << 8


def thread_leaving(pid: int, tid: int) -> bool:
    """The thread has exited, or is about to: a fatal signal (SIGKILL, or exit_group)
    marks every thread with SIGKILL pending until each has gone."""
    return _stat_leaving(_read_line(f"{PROC}/{pid}/task/{tid}/stat"))


def live_thread(pid: int, tids: Optional[List[int]] = None) -> Optional[int]:
    """A thread whose /proc entries show the process's memory: the leader, unless it has
    exited while others run on (pthread_exit in main: its maps, exe and mem are empty then),
    else the first thread that has not. None when the whole process has exited or is being
    killed. The threads are listed only when the leader is leaving (a sample asks ~3 times)."""
    if not thread_leaving(pid, pid):
        return pid
    for tid in tids if tids is not None else list_tids(pid):
        if tid != pid and not thread_leaving(pid, tid):
            return tid
    return None


def thread_group(tid: int) -> Optional[int]:
    """The process (Tgid) a thread id belongs to, whatever process it is in; None if none."""
    try:
        return int(read_status(tid, None, ("Tgid",)).get("Tgid", ""))
    except ValueError:
        return None


def _task_flags(path: str) -> Optional[int]:
    """The flags field of /proc/.../stat (PF_*), None when unreadable."""
    text = _read_text(path)
    return None if text is None else _stat_flags(text)


def _stat_flags(text: str) -> Optional[int]:
    # comm may contain spaces and parentheses: fields resume after the last ')'.
    rest = text[text.rfind(")") + 2 :].split()
    try:
        return int(rest[6])
    except (IndexError, ValueError):
        return None


def is_kernel_thread(pid: int) -> bool:
    return bool((_task_flags(f"{PROC}/{pid}/stat") or 0) & PF_KTHREAD)


def _unmangle(path: str) -> str:
    """The kernel writes a newline in a mapped file's path as \\012 (seq_file_path)."""
    return path.replace("\\012", "\n")


@functools.lru_cache(maxsize=4)
def parse_maps(text: str) -> Tuple[MemoryMap, ...]:
    maps = []
    # Only "\n" ends a line: str.splitlines() would also split a path at \x1c-\x1e or \x85.
    for line in text.split("\n"):
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            start_s, end_s = parts[0].split("-")
            maps.append(
                MemoryMap(
                    start=int(start_s, 16),
                    end=int(end_s, 16),
                    # Interned: 10,000 thread stacks are 20,000 lines with the same few.
                    perms=sys.intern(parts[1]),
                    offset=int(parts[2], 16),
                    dev=sys.intern(parts[3]),
                    inode=int(parts[4]),
                    path=_unmangle(parts[5]) if len(parts) > 5 else "",
                )
            )
        except ValueError:
            continue
    return tuple(maps)


def maps_path(pid: int, tid: Optional[int] = None) -> str:
    """`tid`: read it through that thread (see live_thread)."""
    return f"{PROC}/{pid}/maps" if tid is None else f"{PROC}/{pid}/task/{tid}/maps"


def read_maps(
    pid: int, tid: Optional[int] = None, kept: Optional[KeptFiles] = None
) -> Tuple[MemoryMap, ...]:
    """`tid`: read it through that thread (see live_thread)."""
    text = _read_text(maps_path(pid, tid), kept)
    return () if text is None else parse_maps(text)


def parse_syscall(text: str) -> Optional[SyscallState]:
    """Parse `NR a1..a6 SP PC`, `-1 SP PC` or `running`."""
    fields = text.split()
    if not fields:
        return None
    if fields[0] == "running":
        return SyscallState(running=True, number=None)
    try:
        values = [int(f, 0) for f in fields]
    except ValueError:
        return None
    number = values[0]
    if number == -1 and len(values) >= 3:
        return SyscallState(running=False, number=-1, sp=values[1], pc=values[2])
    if len(values) >= 9:
        return SyscallState(
            running=False, number=number, args=tuple(values[1:7]), sp=values[7], pc=values[8]
        )
    return None


def read_syscall(pid: int, tid: int, kept: Optional[KeptFiles] = None) -> Optional[SyscallState]:
    text = _read_line(f"{PROC}/{pid}/task/{tid}/syscall", kept)
    return None if text is None else parse_syscall(text)


def parse_context_switches(text: str) -> Optional[Tuple[int, int]]:
    """(voluntary, nonvoluntary) from the text of /proc/<pid>/task/<tid>/status."""
    voluntary = nonvoluntary = None
    for line in reversed(text.splitlines()):
        key, _, value = line.partition(":")
        try:
            if key == "voluntary_ctxt_switches":
                voluntary = int(value)
            elif key == "nonvoluntary_ctxt_switches":
                nonvoluntary = int(value)
        except ValueError:
            return None
        if voluntary is not None and nonvoluntary is not None:
            return voluntary, nonvoluntary
    return None


def read_context_switches(pid: int, tid: int) -> Optional[Tuple[int, int]]:
    text = _read_text(f"{PROC}/{pid}/task/{tid}/status", None, SHOWN)
    return None if text is None else parse_context_switches(text)


def parse_schedstat(text: Union[str, bytes]) -> Optional[Tuple[int, int]]:
    """(nanoseconds on a CPU, times put on one) from /proc/<pid>/task/<tid>/schedstat; None
    when never put on one: a kernel that does not count (it writes "0 0 0" for every
    thread) would make every thread look as if it had not run since."""
    fields = text.split()
    try:
        times = (int(fields[0]), int(fields[2])) if len(fields) >= 3 else None
    except ValueError:
        return None
    return times if times is not None and times[1] else None


def read_schedstat(
    pid: int, tid: int, kept: Optional[KeptFiles] = None
) -> Optional[Tuple[int, int]]:
    text = _read_line(f"{PROC}/{pid}/task/{tid}/schedstat", kept)
    return None if text is None else parse_schedstat(text)


def read_run_times(pid: int) -> Dict[int, Tuple[int, int]]:
    """tid -> (ns on a CPU, times put on one) for every thread of the process now."""
    out = {}
    for tid in list_tids(pid):
        times = read_schedstat(pid, tid)
        if times is not None:
            out[tid] = times
    return out


def fd_is_socket(pid: int, fd: int) -> bool:
    try:
        return os.readlink(f"{PROC}/{pid}/fd/{fd}").startswith("socket:")
    except (OSError, ValueError):
        return False


def tracer_of(pid: int, tid: Optional[int] = None) -> int:
    try:
        return int(read_status(pid, tid, ("TracerPid",)).get("TracerPid", "0"))
    except ValueError:
        return 0


def describe_process(pid: int) -> str:
    """`1234 (gdb)`, for messages that name another process."""
    comm = _read_text(f"{PROC}/{pid}/comm")
    return f"{pid} ({escape(_drop_newline(comm))})" if comm else str(pid)


def parse_stat(text: str) -> Optional[Tuple[str, int]]:
    """(state letter, user + system clock ticks) from /proc/<pid>/task/<tid>/stat. The name
    in parentheses may itself hold ')' and spaces: fields are counted after the last ')'."""
    _, sep, rest = text.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 13:
        return None
    try:
        return fields[0], int(fields[11]) + int(fields[12])
    except ValueError:
        return None


def read_stat(pid: int, tid: int, kept: Optional[KeptFiles] = None) -> Optional[Tuple[str, int]]:
    text = _read_line(f"{PROC}/{pid}/task/{tid}/stat", kept)
    return None if text is None else parse_stat(text)


@record
class Leader:
    """A process's main thread as one look at its status and stat files shows it."""

    leaving: bool  # as thread_leaving(pid, pid)
    tracer: int  # as tracer_of(pid)
    # What exec() changes and nothing else does: the executable's device and inode, when
    # the process started (a pid given to another process after this one exited), and where
    # the kernel put the image (start_code, end_code, startstack: a new address space,
    # placed afresh). None once its main thread has exited (its exe is no longer shown).
    image: Optional[Tuple[int, ...]]


def leader_state(pid: int, kept: Optional[KeptFiles] = None, with_tracer: bool = True) -> Leader:
    """The main thread's state from one read of /proc/PID/stat, and who traces it from one
    of /proc/PID/status (a capture looks at its start and its end: ~20 us less than reading
    each part apart). Without `with_tracer`, stat alone (`tracer` is then 0): what a
    capture's end asks."""
    stat = _read_line(f"{PROC}/{pid}/stat", kept)
    tracer = 0
    if with_tracer:
        field = read_status(pid, None, ("TracerPid",), kept).get("TracerPid", "0")
        tracer = int(field) if field.isdigit() else 0
    return Leader(_stat_leaving(stat), tracer, _image_of(pid, stat))


def _stat_leaving(text: Optional[str]) -> bool:
    """Whether a thread has exited or is about to (`thread_leaving`), from its stat text:
    its state (field 3), its flags (9: PF_EXITING) and its pending signals (31: status's
    SigPnd in its low 31 bits, where SIGKILL is). None (unreadable) is gone."""
    if text is None:
        return True
    rest = text[text.rfind(")") + 2 :].split()
    try:
        state, flags, pending = rest[0], int(rest[6]), int(rest[28])
    except (IndexError, ValueError):
        return True
    return is_exited(state[:1]) or bool(pending & SIGKILL_BIT) or bool(flags & PF_EXITING)


def _image_of(pid: int, text: Optional[str]) -> Optional[Tuple[int, ...]]:
    """`Leader.image` from the text of /proc/PID/stat, read just before."""
    try:
        st = os.stat(f"{PROC}/{pid}/exe")
    except OSError:
        return None
    if text is None:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    try:
        # fields[0] is field 3 (state); starttime is field 22, start_code..startstack 26-28.
        return (st.st_dev, st.st_ino, int(fields[19]), *(int(f) for f in fields[23:26]))
    except (IndexError, ValueError):
        return None


def read_wchan(pid: int, tid: int, kept: Optional[KeptFiles] = None) -> Optional[str]:
    """The kernel function a sleeping thread waits in; None when running or not shown."""
    text = _read_line(f"{PROC}/{pid}/task/{tid}/wchan", kept)
    if not text or text.strip() == "0":
        return None
    return sys.intern(text.strip())


def parse_kernel_stack(text: str) -> Tuple[str, ...]:
    """`[<0>] futex_wait_queue+0x60/0x90` lines -> ("futex_wait_queue+0x60/0x90", ...)."""
    frames = []
    for line in text.split("\n"):
        _, sep, frame = line.partition("] ")
        if sep and frame.strip():
            frames.append(sys.intern(frame.strip()))
    return tuple(frames)


def read_kernel_stack(pid: int, tid: int) -> Optional[Tuple[str, ...]]:
    """The thread's kernel stack, innermost first; None when the kernel does not show it
    (`kernel_stack_refusal` says why)."""
    text = _read_text(f"{PROC}/{pid}/task/{tid}/stack")
    return None if text is None else parse_kernel_stack(text)


def kernel_stack_refusal(pid: int) -> Optional[str]:
    """Why /proc/PID/task/*/stack cannot be read here, or None when it can."""
    try:
        with open(f"{PROC}/{pid}/stack", "rb") as f:
            f.read()
    except PermissionError:
        return "the kernel shows thread kernel stacks to root only (CAP_SYS_ADMIN)"
    except FileNotFoundError:
        return "this kernel has no /proc/PID/stack (CONFIG_STACKTRACE is off)"
    except OSError as e:
        return f"/proc/{pid}/stack: {e.strerror or e}"
    return None


def read_cmdline(pid: int, kept: Optional[KeptFiles] = None) -> Optional[Tuple[str, ...]]:
    """argv as the process shows it now: a server that renames itself (`postgres:
    checkpointer`) writes one string with spaces, or leaves NULs behind."""
    text = _read_text(f"{PROC}/{pid}/cmdline", kept)
    if text is None:
        return None
    return tuple(text.rstrip("\0").split("\0")) if text else ()
