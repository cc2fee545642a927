"""Parsers of /proc text, on real /proc content and on the formats FACTS.md recorded."""

from __future__ import annotations

import os
from pathlib import Path

from stackdump import proc


def test_parse_syscall_blocked_running_and_outside():
    line = "0 0x3 0x7ffff1428578 0x1 0x0 0x0 0x0 0x7ffff1428540 0x7f773bc502ec"
    state = proc.parse_syscall(line)
    assert state.number == 0 and not state.running
    assert state.args == (3, 0x7FFFF1428578, 1, 0, 0, 0)
    assert (state.sp, state.pc) == (0x7FFFF1428540, 0x7F773BC502EC)
    assert proc.parse_syscall("running\n").running
    outside = proc.parse_syscall("-1 0x7ffe0 0x401000")
    assert outside.number == -1 and outside.pc == 0x401000
    assert proc.parse_syscall("garbage") is None
    assert proc.parse_syscall("") is None


def test_parse_own_maps():
    maps = proc.read_maps(os.getpid())
    assert maps, "our own maps are readable"
    assert all(m.start < m.end for m in maps)
    assert any(m.path == "[stack]" and m.writable for m in maps)
    assert any(m.is_file and m.executable for m in maps)


def test_deleted_marker_is_stripped():
    (m,) = proc.parse_maps("7f00-7f10 r-xp 00001000 fd:01 42 /opt/app/bin (deleted)\n")
    assert m.deleted and m.file_path == "/opt/app/bin" and m.offset == 0x1000


def test_own_threads_and_names():
    pid = os.getpid()
    assert pid in proc.list_tids(pid)
    assert proc.read_comm(pid, pid)
    assert proc.read_comm(pid, 2**31 - 1) is None
    assert proc.tracer_of(pid) == 0
    assert not proc.is_kernel_thread(pid)


def test_status_lines_asked_by_key_equal_those_of_the_whole_file():
    """`read_status(..., keys)` (issue 31: a sample reads a few lines of several status
    files) finds a line exactly as the whole parse (a partition at the first colon and a
    strip per line) does, on every thread's status of this machine, and nothing for a key
    that is absent or only a prefix or a suffix of one."""
    compared = 0
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    text = f.read()
            except OSError:
                continue  # gone meanwhile
            whole = {}
            for line in text.splitlines():
                key, sep, value = line.partition(":")
                if sep:
                    whole[key] = value.strip()
            for key in (*whole, "Nope", "tate", "Stat", "Tgi", "id", ""):
                assert proc._value_of(text, key) == whole.get(key), key
            compared += 1
    assert compared > 10
    assert proc.read_status(os.getpid(), None, ("Tgid", "Nope")) == {"Tgid": str(os.getpid())}


def _blocked_in(pid: int) -> str:
    """The name of the system call a process's main thread is blocked in ("" if none)."""
    from helpers import read_syscall_line

    from stackdump.arch import host
    from stackdump.syscalls import syscall_name

    fields = (read_syscall_line(pid, pid) or "").split()
    if not fields or not fields[0].lstrip("-").isdigit():
        return ""
    return syscall_name(int(fields[0]), host()) or ""


def test_the_main_threads_state_in_one_look_agrees_with_each_reader():
    """`proc.leader_state` reads status and stat once for what `thread_leaving` and
    `tracer_of` read apart: on a live process, on a zombie, and on one that is gone."""
    import subprocess
    import time
    from pathlib import Path

    child = subprocess.Popen(["sleep", "30"])
    try:
        # Until it sleeps in its nanosleep: Popen returns while exec() may still be setting
        # up the image, and a thread blocked inside execve (or in the loader after it) is
        # not running either, with its stack's start not yet final.
        deadline = time.monotonic() + 30
        while _blocked_in(child.pid) not in ("clock_nanosleep", "nanosleep"):
            assert time.monotonic() < deadline, "sleep never blocked"
            os.sched_yield()
        live = proc.leader_state(child.pid)
        assert (live.leaving, live.tracer) == (False, 0)
        assert proc.leader_state(child.pid, with_tracer=False) == live
        assert live.leaving == proc.thread_leaving(child.pid, child.pid)
        stat = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        st = os.stat(f"/proc/{child.pid}/exe")
        assert live.image == (st.st_dev, st.st_ino, int(stat[19]), *map(int, stat[23:26]))
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # a zombie, not reaped
        dead = proc.leader_state(child.pid)
        assert dead.leaving and dead.image is None
        assert proc.leader_state(child.pid, with_tracer=False) == dead
        assert proc.thread_leaving(child.pid, child.pid)
    finally:
        child.kill()
        child.wait()
    gone = proc.leader_state(child.pid)
    assert gone.leaving and gone.image is None and gone.tracer == 0
    assert proc.leader_state(child.pid, with_tracer=False) == gone


def test_leaving_from_stat_alone_reads_state_flags_and_a_pending_sigkill():
    """What a capture's end reads (`leader_state(with_tracer=False)`): stat's state (field
    3), flags (9) and pending signals (31), on this process's own stat line with each field
    changed as the kernel would write it for a thread on its way out."""
    line = Path(f"/proc/{os.getpid()}/stat").read_text()
    head, tail = line.rsplit(")", 1)
    fields = tail.split()

    def variant(index: int, value: str) -> str:
        changed = list(fields)
        changed[index] = value
        return f"{head}) {' '.join(changed)}\n"

    assert not proc._stat_leaving(line)
    assert proc._stat_leaving(variant(0, "Z"))
    assert proc._stat_leaving(variant(0, "X"))
    assert proc._stat_leaving(variant(6, str(int(fields[6]) | proc.PF_EXITING)))
    assert proc._stat_leaving(variant(28, str(int(fields[28]) | proc.SIGKILL_BIT)))
    assert not proc._stat_leaving(variant(28, str(1 << 14)))  # SIGTERM pending: handled
    # A name with ") " in it: fields are counted after the last ')'.
    assert not proc._stat_leaving(line.replace("(", "(a) S 1 (", 1))
    assert proc._stat_leaving(None) and proc._stat_leaving("1 (x)")


def test_a_schedstat_of_zeros_is_unknown_not_unchanged():
    """A kernel that does not count writes "0 0 0" for every thread: equal every time, it
    would make a thread that ran look as if it had not (capture/unchanged.py, passive)."""
    assert proc.parse_schedstat("0 0 0\n") is None
    assert proc.parse_schedstat(b"0 0 0\n") is None
    assert proc.parse_schedstat("123 45 6\n") == (123, 6)
    own = proc.read_schedstat(os.getpid(), os.getpid())
    assert own is not None and own[1] > 0


def test_kept_files_read_afresh_and_let_go_of_a_gone_thread():
    """`proc.KeptFiles`: a kept file read again shows what is there now, a thread that has
    exited reads as gone and its descriptor is closed, and past the limit nothing more is
    kept open."""
    import threading
    import time

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    me = threading.get_native_id()
    comm = f"/proc/{os.getpid()}/task/{me}/comm"
    name = Path(comm).read_text()
    ready, done = threading.Event(), threading.Event()
    tids = []

    def worker() -> None:
        tids.append(threading.get_native_id())
        ready.set()
        done.wait()

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait()
    before = open_fds()
    try:
        with proc.KeptFiles(limit=2) as kept:
            assert kept.read(comm, proc.LINE) == name.encode()
            with open(comm, "w") as f:
                f.write("kept-files")
            assert kept.read(comm, proc.LINE) == b"kept-files\n"  # the same descriptor, read again
            stat = f"/proc/{os.getpid()}/task/{tids[0]}/stat"
            assert kept.read(stat, proc.LINE).startswith(f"{tids[0]} (".encode())
            assert open_fds() == before + 2
            # Past the limit: read, not kept.
            assert kept.read(f"/proc/{os.getpid()}/status", proc.SHOWN).startswith(b"Name:")
            assert open_fds() == before + 2
            done.set()
            thread.join()
            # join() returns as Python's thread ends; the system thread exits a moment later.
            deadline = time.monotonic() + 30
            while os.path.exists(f"/proc/{os.getpid()}/task/{tids[0]}"):
                assert time.monotonic() < deadline, "the thread never exited"
                os.sched_yield()
            assert kept.read(stat, proc.LINE) is None  # the thread has gone
            assert open_fds() == before + 1 and not kept.full
            kept.read(stat.replace(f"/{tids[0]}/", f"/{me}/"), proc.LINE)
            assert kept.full and open_fds() == before + 2
            kept.retain(lambda path: path == comm)
            assert open_fds() == before + 1 and not kept.full
        assert open_fds() == before
    finally:
        done.set()
        thread.join()
        with open(comm, "w") as f:
            f.write(name)


def test_kept_files_of_exited_threads_are_told_apart_by_path():
    """What a series lets go of once its kept files are full (capture/live.py): the files of
    threads no longer listed; the process's own and those of listed threads stay."""
    from stackdump.capture.live import _of_threads

    wanted = _of_threads(42, [42, 43])
    assert wanted("/proc/42/stat") and wanted("/proc/42/maps")
    assert wanted("/proc/42/task/42/maps") and wanted("/proc/42/task/43/schedstat")
    assert not wanted("/proc/42/task/44/stat")
    assert not wanted("/proc/42/task/4/stat") and not wanted("/proc/42/task/430/stat")


def test_a_file_the_kernel_shows_whole_is_read_in_one_read_and_a_longer_one_to_its_end(tmp_path):
    """`SHOWN` (a status file) takes a read that left the buffer room as the whole file:
    the next read says end of file. One that filled it is read on to its end."""
    fd = os.open(f"/proc/{os.getpid()}/status", os.O_RDONLY)
    try:
        data = proc._read_fd(fd, proc.SHOWN)
        assert data.startswith(b"Name:") and data.endswith(b"\n") and len(data) < 4096
        assert os.pread(fd, 4096, len(data)) == b""
    finally:
        os.close(fd)
    longer = tmp_path / "longer"
    longer.write_bytes(b"x" * 9000 + b"\n")
    fd = os.open(longer, os.O_RDONLY)
    try:
        assert proc._read_fd(fd, proc.SHOWN) == b"x" * 9000 + b"\n"
        assert proc._read_fd(fd, proc.LINE) == b"x" * 9000 + b"\n"  # no newline at 4096
    finally:
        os.close(fd)
