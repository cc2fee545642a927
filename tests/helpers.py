"""Live-test support: build targets with gcc, run them, wait for known states, run stackdump.

Synchronization is always on an observable state (a `ready` line from the target, a
/proc/<pid>/task/<tid>/syscall value, a counter the target reports), bounded by a deadline that
only turns a hang into a failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

TARGETS = Path(__file__).parent / "targets"
DEADLINE_S = 20.0

# What each role's thread is blocked in once ready (x86_64 numbers); None: it runs.
ROLE_SYSCALL = {
    "read": 0,
    "cond": 202,
    "sleep": 230,
    "vfork": 58,
    "main": 0,
    "spin": None,
    "epoll": 232,
    "poll": 7,
    "accept": 43,
    "sigalt": 0,
    "recurse": 230,
    "nap": 230,
    "worker": 0,
    "waiter": 202,
    "thrower": 0,
    # tests/targets/progress.c
    "idle": 202,
    # tests/targets/fiber_pool.cpp
    "pool": 0,
    "runner": 0,
    # tests/targets/eintr.c
    "epoll_pwait": 281,
    "semop": 220,  # glibc's semop is semtimedop with no timeout
    "sigtimedwait": 128,
    "recv": 45,
    "futex": 202,
    "nanosleep": 230,
    # tests/targets/swaplibs.c
    "swap": 0,
    # tests/targets/locks.c
    "ab": 202,
    "ba": 202,
    "queued": 202,
    "holder": 230,
    "blocked": 202,
    "owner": 202,  # and its "waiter"s: futex too (listed above)
    # tests/targets/names.c
    "name": 0,
    # tests/targets/crafted.c
    "crafted": 232,
}


def compile_target(source: str, out_dir: Path, name: str, flags: Sequence[str]) -> Path:
    out = out_dir / name
    if not out.exists():
        compiler = "g++" if source.endswith(".cpp") else "gcc"
        cmd = [compiler, *flags, "-pthread", str(TARGETS / source), "-o", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


CACHE = Path(os.environ.get("STACKDUMP_TEST_CACHE", Path.home() / ".cache" / "stackdump-tests"))


def cached_generated_target(generator: str, flags: Sequence[str]) -> Path:
    """A target whose C source tests/targets/GENERATOR writes, built once into the test
    cache (outside the repository) under a key of the generator, the flags and gcc's
    version, and reused by later runs."""
    script = TARGETS / generator
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(script.read_bytes() + repr(flags).encode() + gcc.encode())
    out_dir = CACHE / "targets" / f"{script.stem}-{key.hexdigest()[:16]}"
    binary = out_dir / script.stem
    if not binary.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        source = out_dir / f"{script.stem}.c"
        subprocess.run([sys.executable, str(script), str(source)], check=True)
        partial = out_dir / f"{script.stem}.partial"
        subprocess.run(["gcc", *flags, str(source), "-o", str(partial)], check=True)
        partial.rename(binary)
    return binary


def link_two_units(lib: Path, out: Path, extra: Sequence[str] = ()) -> Path:
    """targets/two_units_main.c linked with `lib` (an object or a shared library) into `out`;
    two_units takes no arguments and starts one thread blocked in read inside `lib`."""
    if not out.exists():
        cmd = ["gcc", "-O1", "-g", "-pthread", str(TARGETS / "two_units_main.c"), str(lib)]
        subprocess.run([*cmd, *extra, "-o", str(out)], check=True)
    return out


class LineReader:
    """Lines from a pipe with a deadline, without mixing select() and buffered reads."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(fd, selectors.EVENT_READ)

    def readline(self, deadline: float) -> Optional[str]:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("target did not answer in time")
            if not self._selector.select(remaining):
                continue
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


class Target:
    """A running target from tests/targets; kill() it in a finally block."""

    def __init__(
        self,
        binary: Path,
        roles: Dict[str, int],
        extra_args: Sequence[str] = (),
        wrap: Optional[Sequence[str]] = None,
    ):
        """`wrap`: a command whose last argument is a shell command line ending in `exec`
        (e.g. `unshare --mount sh -c "mount ... && exec"`); the target's command line is
        appended to it, so the target keeps the launched process's pid."""
        self.roles_wanted = dict(roles)
        args = [f"{role}={count}" for role, count in roles.items()]
        argv = [str(binary), *args, *extra_args]
        if wrap is not None:
            argv = [*wrap[:-1], f"{wrap[-1]} {' '.join(argv)}"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = self.proc.pid
        self.binary_name = Path(binary).name[:15]  # its comm
        self._reader = LineReader(self.proc.stdout.fileno())
        self.tids: Dict[str, List[int]] = {}

    def wait_ready(self) -> Target:
        deadline = time.monotonic() + DEADLINE_S
        expected = sum(self.roles_wanted.values()) + 1
        seen = 0
        while seen < expected:
            line = self._reader.readline(deadline)
            if line is None:
                raise RuntimeError(f"target exited early ({self.proc.poll()})")
            m = re.fullmatch(r"ready (\w+) (\d+)", line)
            if m:
                self.tids.setdefault(m.group(1), []).append(int(m.group(2)))
                seen += 1
        for role, tids in self.tids.items():
            nr = ROLE_SYSCALL.get(role)
            for tid in tids:
                if nr is not None:
                    wait_for_syscall(self.pid, tid, nr)
        if "spin" in self.tids:
            self.wait_spinning()
        return self

    def tid(self, role: str) -> int:
        return self.tids[role][0]

    def _ask(self, command: str, answer: str) -> str:
        """Send a command line on stdin; the first output line that starts with `answer`."""
        self.proc.stdin.write(f"{command}\n".encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + DEADLINE_S
        while True:
            line = self._reader.readline(deadline)
            if line is None:
                raise RuntimeError("target exited")
            if line.startswith(answer):
                return line

    def status(self) -> Dict[str, int]:
        line = self._ask("status", "status ")
        return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}

    def rename(self, tid: int, name: str) -> None:
        """threads.c: the main thread renames thread `tid` (which keeps sleeping)."""
        self.proc.stdin.write(f"name {tid} {name}\n".encode())
        self.proc.stdin.flush()
        self.status()  # a round trip: the rename was done before this returns

    def release(self) -> int:
        """locks.c with handoff=3: the owner unlocks mutex D; the TID of the waiter that took
        it, once that one sleeps holding it."""
        took = int(self._ask("release", "took ").split()[1])
        wait_for_syscall(self.pid, took, ROLE_SYSCALL["nanosleep"])
        return took

    def reset_stall(self) -> None:
        """threads.c: the spinner starts measuring its longest stall afresh."""
        self.proc.stdin.write(b"reset\n")
        self.proc.stdin.flush()
        self.status()  # a round trip: the reset was read before this returns

    def wait_spinning(self) -> None:
        """Until the spinning thread's counter moves: it is then inside leaf's loop for good."""
        deadline = time.monotonic() + DEADLINE_S
        first = self.status()["spin"]
        while self.status()["spin"] == first:
            if time.monotonic() > deadline:
                raise TimeoutError("spinning thread does not spin")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                f.close()

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


@contextlib.contextmanager
def churning(build_dir: Path):
    """tests/targets/churn.c, creating and ending threads without pause, once it says it
    is ready: (the process, a reader of its stdout). Killed on the way out."""
    binary = compile_target("churn.c", build_dir, "churn", ["-O2", "-g"])
    with subprocess.Popen(
        [str(binary), "1000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as churn:
        try:
            reader = LineReader(churn.stdout.fileno())
            assert reader.readline(time.monotonic() + DEADLINE_S).startswith("ready main")
            yield churn, reader
        finally:
            churn.kill()


def read_syscall_line(pid: int, tid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            return f.read().strip()
    except OSError:
        return None


def any_thread_running(pid: int) -> bool:
    """Whether some thread of the process is on a CPU or runnable, not blocked in a system
    call (a thread that exits meanwhile counts as not running)."""
    return any(
        read_syscall_line(pid, int(tid)) == "running" for tid in os.listdir(f"/proc/{pid}/task")
    )


def wait_for_syscall(pid: int, tid: int, nr: int) -> str:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        line = read_syscall_line(pid, tid)
        if line and line.split()[0] == str(nr):
            return line
        if time.monotonic() > deadline:
            raise TimeoutError(f"thread {tid} never blocked in syscall {nr} (last: {line!r})")
        os.sched_yield()


def run_stackdump(*args: str, timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stackdump", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def finish(proc: subprocess.Popen, timeout: float = DEADLINE_S) -> Tuple[str, str]:
    """(stdout, stderr) of a stackdump started with pipes; killed if it outlives timeout."""
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def thread_states(pid: int) -> Dict[int, Tuple[str, int]]:
    """tid -> (State letter, TracerPid) for every thread of pid."""
    out = {}
    for name in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{name}/status") as f:
                text = f.read()
        except OSError:
            continue
        state = re.search(r"^State:\s+(\S)", text, re.M).group(1)
        tracer = int(re.search(r"^TracerPid:\s+(\d+)", text, re.M).group(1))
        out[int(name)] = (state, tracer)
    return out


def assert_untouched(pid: int) -> None:
    """No thread of the target is left stopped or traced by us."""
    for tid, (state, tracer) in thread_states(pid).items():
        assert state not in ("t", "T"), f"thread {tid} left in state {state}"
        assert tracer == 0, f"thread {tid} still traced by {tracer}"


# -- report parsing ---------------------------------------------------------------------------

HEADER_KEYS = [
    "pid",
    "exe",
    "thread_count",
    "timeout_ms_per_thread",
    "dwarf_location_info_mode",
    "skip_blocking_syscalls",
    "unwinder",
    "capture",
]
THREAD_RE = re.compile(r"----- thread (\d+) \((.*)\) (status=\S+.*?) -----")
COROUTINE_RE = re.compile(
    r"----- (fiber|bthread|goroutine) (0x[0-9a-f]+|\d+) (status=\S+.*?) -----"
)
FRAME_RE = re.compile(r"    (\d+)# +(\S.*)")
SUMMARY_RE = re.compile(
    r"summary: captured=(\d+) skipped=(\d+) timed_out=(\d+) remote_signal_attempts=(\d+)"
)


@dataclass
class ThreadSection:
    tid: int
    name: str
    keys: Dict[str, str]
    key_order: List[str]
    frames: List[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.keys["status"]

    def functions(self) -> List[str]:
        """Function part of each frame line (up to ' at ' / ' in ')."""
        return [re.split(r" at | in ", f, maxsplit=1)[0] for f in self.frames]


@dataclass
class ParsedReport:
    header: Dict[str, str]
    threads: List[ThreadSection]
    summary: Dict[str, int]
    stats: Dict[str, int]
    deadlocks: List[List[int]] = field(default_factory=list)
    objects: List[Dict[str, str]] = field(default_factory=list)
    coroutines: List[ThreadSection] = field(default_factory=list)
    coroutine_stats: Dict[str, int] = field(default_factory=dict)

    def thread(self, tid: int) -> ThreadSection:
        matches = [t for t in self.threads if t.tid == tid]
        assert len(matches) == 1, f"thread {tid}: {len(matches)} sections"
        return matches[0]


def _parse_keys(text: str) -> Tuple[Dict[str, str], List[str]]:
    keys: Dict[str, str] = {}
    order: List[str] = []
    for m in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', text):
        keys[m.group(1)] = m.group(2)
        order.append(m.group(1))
    return keys, order


def _read_frames(lines: List[str], i: int, section: ThreadSection) -> int:
    """A section's frame lines (or `<no stack captured>`) and its closing blank line, from
    line i; returns the line after."""
    if lines[i] == "<no stack captured>":
        i += 1
    else:
        while lines[i] != "":
            fm = FRAME_RE.fullmatch(lines[i])
            assert fm, f"bad frame line {lines[i]!r}"
            assert int(fm.group(1)) == len(section.frames), "frame indices count up from 0"
            width = len(fm.group(1)) + 1
            assert lines[i][4 + width :].startswith(" " * max(1, 4 - width)), lines[i]
            section.frames.append(fm.group(2))
            i += 1
    assert lines[i] == "", "blank line after each section"
    return i + 1


def parse_report(text: str) -> ParsedReport:
    """Strict parser of the text format (docs/FORMAT.md): any deviation fails an assertion."""
    lines = text.split("\n")
    assert lines[0] == "stackdump thread stack traces", lines[0]
    header: Dict[str, str] = {}
    for i, key in enumerate(HEADER_KEYS, start=1):
        k, sep, v = lines[i].partition(": ")
        assert sep and k == key, f"header line {i}: {lines[i]!r}, expected key {key}"
        header[k] = v
    i = len(HEADER_KEYS) + 1
    while lines[i] != "":  # keys appended to the header (docs/FORMAT.md allows it)
        k, sep, v = lines[i].partition(": ")
        repeats = k == "core_problem"  # one line per problem (docs/FORMAT.md)
        assert sep and re.fullmatch(r"[a-z_]+", k) and (repeats or k not in header), lines[i]
        header[k] = f"{header[k]}\n{v}" if k in header else v
        i += 1
    assert lines[i] == "", "blank line after header"
    i += 1
    threads: List[ThreadSection] = []
    while lines[i].startswith("----- thread "):
        m = THREAD_RE.fullmatch(lines[i])
        assert m, f"bad thread line {lines[i]!r}"
        keys, order = _parse_keys(m.group(3))
        section = ThreadSection(int(m.group(1)), m.group(2), keys, order)
        i = _read_frames(lines, i + 1, section)
        threads.append(section)
    coroutines: List[ThreadSection] = []
    while lines[i].startswith(("----- fiber ", "----- bthread ", "----- goroutine ")):
        m = COROUTINE_RE.fullmatch(lines[i])
        assert m, f"bad coroutine line {lines[i]!r}"
        keys, order = _parse_keys(m.group(3))
        section = ThreadSection(int(m.group(2), 0), m.group(1), keys, order)
        i = _read_frames(lines, i + 1, section)
        coroutines.append(section)
    m = SUMMARY_RE.fullmatch(lines[i])
    assert m, f"bad summary line {lines[i]!r}"
    summary = dict(
        zip(("captured", "skipped", "timed_out", "remote_signal_attempts"), map(int, m.groups()))
    )
    stats_line = lines[i + 1]
    assert stats_line.startswith("stats: "), stats_line
    stats = {k: int(v) for k, v in (kv.split("=") for kv in stats_line[7:].split())}
    rest = lines[i + 2 :]
    coroutine_stats: Dict[str, int] = {}
    if rest and rest[0].startswith("coroutines: "):
        coroutine_stats = {k: int(v) for k, v in (kv.split("=") for kv in rest[0][12:].split())}
        rest = rest[1:]
    deadlocks = []
    while rest and rest[0].startswith("deadlock: "):
        cycle = [int(t) for t in rest[0][len("deadlock: ") :].split(" -> ")]
        assert len(cycle) >= 2 and cycle[0] == cycle[-1], rest[0]
        deadlocks.append(cycle[:-1])
        rest = rest[1:]
    objects = []
    if rest and rest[0].startswith("unknown_frames: "):
        rest = rest[1:]
        while rest and rest[0].startswith("object "):
            m = re.fullmatch(r'object ("(?:[^"\\]|\\.)*") (.*)', rest[0])
            assert m, rest[0]
            keys, _ = _parse_keys(m.group(2))
            keys["path"] = m.group(1)[1:-1]
            objects.append(keys)
            rest = rest[1:]
    assert rest == [""], f"trailing text: {rest!r}"
    return ParsedReport(
        header, threads, summary, stats, deadlocks, objects, coroutines, coroutine_stats
    )


KEY_ORDER = [
    "status",
    "syscall",
    "syscall_number",
    "capture_method",
    "frames",
    "fp_status",
    "unwind_status",
    "stack_bounds",
    "pause_us",
    "error",
    "recovered_frame_pointers",
]


def assert_key_order(section: ThreadSection) -> None:
    order = section.key_order
    if section.status != "skipped_blocking_syscall":
        # Any other blocked thread's syscall= is thread context, appended at the end.
        order = [k for k in order if k != "syscall"]
    known = [k for k in order if k in KEY_ORDER]
    assert known == sorted(known, key=KEY_ORDER.index), section.key_order


def locations(frames: List[str]) -> List[Tuple[str, Optional[str], Optional[int], bool]]:
    """(function, file, line, inlined) of each frame line."""
    out = []
    for text in frames:
        inlined = text.endswith(" (inlined)")
        text = text[: -len(" (inlined)")] if inlined else text
        m = re.fullmatch(r"(.*) at (.*):(\d+)", text)
        if m:
            out.append((m.group(1), m.group(2), int(m.group(3)), inlined))
        else:
            out.append((re.split(r" in ", text, maxsplit=1)[0], None, None, inlined))
    return out


def eu_stack(pid: int, env=None) -> Dict[int, List[Tuple[str, Optional[str], Optional[int]]]]:
    out = subprocess.run(
        ["eu-stack", "-p", str(pid), "-s", "-i"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    ).stdout
    threads: Dict[int, list] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"TID (\d+):", line)
        if m:
            current = threads.setdefault(int(m.group(1)), [])
            continue
        m = re.match(r"#\d+\s+0x[0-9a-f]+\s*(.*)", line)
        if m and current is not None:
            current.append([m.group(1) or None, None, None])
            continue
        m = re.match(r"\s+(.*?):(\d+)(?::\d+)?$", line)
        if m and current:
            current[-1][1], current[-1][2] = m.group(1), int(m.group(2))
    return {tid: [tuple(f) for f in frames] for tid, frames in threads.items()}


def parse_gdb_frames(output: str) -> Tuple[Dict[int, List[int]], Dict[int, List[str]]]:
    """Per thread, the physical frames' pcs and gdb's names for them, from what
    tests/gdb_pcs.py printed (`THREAD tid pc...` and `NAMES tid<TAB>name...` lines)."""
    pcs: Dict[int, List[int]] = {}
    names: Dict[int, List[str]] = {}
    for line in output.splitlines():
        if line.startswith("THREAD "):
            fields = line.split()
            pcs[int(fields[1])] = [int(pc, 16) for pc in fields[2:]]
        elif line.startswith("NAMES "):
            head, *rest = line.split("\t")
            names[int(head.split()[1])] = rest
    return pcs, names


def crash_on_request(
    argv: Sequence[str], cwd: Path, timeout: float
) -> Tuple[int, Dict[str, List[int]]]:
    """Run tests/targets/crash.c (natively or under qemu), cores allowed, until its four
    threads are ready, tell it to crash, and wait up to `timeout` seconds: (its exit
    status, role -> TIDs)."""
    import resource

    def allow_cores():
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=allow_cores,
    )
    tids: Dict[str, List[int]] = {}
    for _ in range(4):  # two readers, the crasher, then main
        line = process.stdout.readline()
        assert line, "the target exited before it was ready"
        _, role, tid = line.split()
        tids.setdefault(role, []).append(int(tid))
    # Every thread blocked (main in pause, the crasher in its read of stdin) before the crash:
    # a thread still running on its way there would leave a stack no oracle can pin down.
    deadline = time.monotonic() + DEADLINE_S
    while any_thread_running(process.pid):
        assert time.monotonic() < deadline, "the target's threads never all blocked"
        time.sleep(0.001)  # polling a condition with a deadline
    process.stdin.write("crash\n")
    process.stdin.flush()
    return process.wait(timeout=timeout), tids
