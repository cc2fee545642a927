"""Issue 12: SIGINT/SIGTERM in every phase (start-up, capture, symbolization, writing) end
stackdump the documented way, never in a traceback; and the terminal progress bar shows only
for dumps that last (docs/FORMAT.md "Exit status", "Interrupts")."""

from __future__ import annotations

import contextlib
import os
import pty
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import BinaryIO, Dict, Optional, Sequence, Tuple

import pytest
from helpers import (
    DEADLINE_S,
    Target,
    assert_untouched,
    cached_generated_target,
    compile_target,
    finish,
    parse_report,
    thread_states,
)

STACKDUMP = [sys.executable, "-m", "stackdump"]
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
RAW_FRAME = re.compile(r"0x[0-9a-f]{16} in \S+\+0x[0-9a-f]+")


def _start(*args: str, **kwargs) -> subprocess.Popen:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([*STACKDUMP, *args], **kwargs)


def _until(predicate, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        os.sched_yield()


def _handler_installed(pid: int) -> bool:
    """stackdump catches SIGTERM from the first line of its entry point on; the interpreter
    alone does not (it catches only SIGINT)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(line for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return True  # already gone: let communicate() tell
    return bool(int(caught.split()[1], 16) & SIGTERM_BIT)


def _assert_no_traceback(err: str) -> None:
    assert "Traceback" not in err and "internal error" not in err and "Fatal" not in err, err


@pytest.fixture(scope="module")
def readers(live, threads_bin):
    """300 threads blocked in read: a report of about 300 KB, more than a pipe holds."""
    with Target(threads_bin("O2"), {"read": 300}).wait_ready() as target:
        yield target


@pytest.fixture(scope="module")
def big_cu(live):
    """A target whose one thread is in a unit with a line table pyelftools needs over a
    second to decode: cold FAST symbolization is slow enough to interrupt."""
    binary = cached_generated_target("big_cu.py", ["-O0", "-g"])
    with Target(binary, {}).wait_ready() as target:
        yield target, binary


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_starting_ends_by_that_signal_without_traceback(readers, sig):
    dumper = _start("-p", str(readers.pid))
    _until(lambda: _handler_installed(dumper.pid), "stackdump never installed its handler")
    dumper.send_signal(sig)
    out, err = dumper.communicate(timeout=DEADLINE_S)
    assert dumper.returncode == -sig, err
    assert out == b""
    assert err.decode().splitlines() == [
        f"stackdump: error: interrupted by {sig.name} while starting: no thread was stopped, "
        "no report written"
    ]
    assert_untouched(readers.pid)


_HELD_IMPORT = """
import sys
from stackdump.interrupts import Interrupted, Interrupts
interrupts = Interrupts()
interrupts.install()
for deferred in (False, True):
    sys.modules.pop("signals_itself", None)
    phase = interrupts.deferred() if deferred else contextlib.nullcontext()
    try:
        with phase, interrupts.held():
            import signals_itself
        print("deferred" if deferred else "immediate", "kept", interrupts.requested())
    except Interrupted as e:
        print("deferred" if deferred else "immediate", "raised", e.name,
              "signals_itself" in sys.modules)
"""


def test_a_signal_inside_an_import_is_acted_on_once_the_import_is_done(tmp_path):
    """An exception a handler raises inside the import machinery can be printed as
    "Exception ignored" and lost (CI saw it once in the random-points test below), and a
    module cut in half stays broken: during imports a signal is only recorded."""
    (tmp_path / "signals_itself.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nDONE = True\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import contextlib\n" + _HELD_IMPORT],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"},
    )
    assert result.stderr == ""
    assert result.stdout.splitlines() == ["immediate raised SIGINT True", "deferred kept True"]


def test_signal_at_random_points_is_always_clean(readers):
    rng = random.Random(12)
    outcomes = set()
    for _ in range(20):
        dumper = _start("-p", str(readers.pid), "--mode", "disabled")
        _until(lambda d=dumper: _handler_installed(d.pid), "no handler")
        time.sleep(rng.uniform(0, 0.6))  # a random point, not a synchronization
        dumper.send_signal(signal.SIGINT)
        out, err = dumper.communicate(timeout=DEADLINE_S)
        _assert_no_traceback(err.decode())
        outcomes.add(dumper.returncode)
        if dumper.returncode in (0, 1):
            report = parse_report(out.decode())
            assert report.stats["interrupted"] == (dumper.returncode == 1)
        else:
            assert dumper.returncode == -signal.SIGINT
            assert b"interrupted by SIGINT" in err
        assert_untouched(readers.pid)
    assert outcomes <= {0, 1, -signal.SIGINT}


def test_signal_during_symbolization_prints_the_rest_raw_and_exits_1(big_cu):
    target, binary = big_cu
    dumper = _start("-p", str(target.pid), "--mode", "fast", "--no-cache")

    def opened_binary_twice() -> bool:
        try:
            fds = os.listdir(f"/proc/{dumper.pid}/fd")
        except OSError:
            return True
        opened = 0
        for fd in fds:
            with contextlib.suppress(OSError):
                opened += os.readlink(f"/proc/{dumper.pid}/fd/{fd}") == str(binary)
        return opened >= 2

    # Before capture the mapped files are opened once (pinned); unwinding opens the target's
    # binary a second time, to read its CFI, as soon as the (only) thread is captured, and
    # symbolization then reads its DWARF. A signal at either point stops symbolization.
    _until(opened_binary_twice, "stackdump never opened the target binary for analysis")
    sent = time.monotonic()
    dumper.send_signal(signal.SIGINT)
    out, err = dumper.communicate(timeout=DEADLINE_S)
    took = time.monotonic() - sent
    err_text = err.decode()
    _assert_no_traceback(err_text)
    assert dumper.returncode == 1, err_text
    # Left alone, this dump takes about 3 s (the next test); interrupted, 0.35-0.45 s here, a
    # little more on a loaded machine (0.54 s seen in CI). Well under half the full run: the
    # signal stopped the work, which the raw frames below show too.
    assert took < 1.5, f"{took:.3f} s from SIGINT to exit"
    assert "interrupted by SIGINT: symbolization stopped" in err_text
    report = parse_report(out.decode())
    assert report.stats["interrupted"] == 1
    assert report.stats["unsymbolized"] > 0
    main = report.thread(target.tid("main"))
    assert main.status == "ok"
    waiter = next(f for f in main.frames if str(binary) in f)
    assert RAW_FRAME.fullmatch(waiter), main.frames
    assert_untouched(target.pid)


def test_uninterrupted_symbolization_of_the_same_target_names_the_frame(big_cu):
    """The test above can fail: left alone, the same dump names `waiter` with its line."""
    target, _ = big_cu
    result = subprocess.run(
        [*STACKDUMP, "-p", str(target.pid), "--mode", "fast", "--no-cache"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    main = parse_report(result.stdout).thread(target.tid("main"))
    assert any(re.match(r"waiter at \S+big_cu\.c:\d+$", f) for f in main.frames), main.frames


def test_signal_while_blocked_writing_to_a_full_pipe(readers):
    # GIVEN stackdump writing a report larger than the pipe, and nobody reading
    read_end, write_end = os.pipe()
    dumper = _start("-p", str(readers.pid), "--mode", "disabled", stdout=write_end)
    os.close(write_end)
    try:

        def blocked_in_write() -> bool:
            """In poll(), waiting for the pipe to take more (write() itself when the
            pipe's room was misjudged)."""
            try:
                with open(f"/proc/{dumper.pid}/syscall") as f:
                    return f.read().split()[0] in ("1", "7")
            except (OSError, IndexError):
                return True

        _until(blocked_in_write, "stackdump never blocked in write")
        # WHEN it is interrupted there, and only then read
        dumper.send_signal(signal.SIGINT)
        chunks = []
        while True:
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        err = dumper.stderr.read().decode()
        dumper.wait(DEADLINE_S)
    finally:
        os.close(read_end)
        if dumper.poll() is None:
            dumper.kill()
            dumper.wait()
    # THEN the report is whole, or the exit is not 0 and stderr says why
    _assert_no_traceback(err)
    text = b"".join(chunks).decode()
    if dumper.returncode == 0:
        parse_report(text)
    else:
        assert dumper.returncode == -signal.SIGINT
        assert "summary:" not in text
        assert err.splitlines() == [
            "stackdump: error: interrupted by SIGINT while writing the report: what reached "
            "standard output is an incomplete report"
        ]
    assert_untouched(readers.pid)


def _stderr_on_a_terminal(*args: str) -> tuple:
    """Run stackdump with stderr on a pseudo-terminal: (exit status, what the terminal
    received). The terminal says it is an xterm, whatever the tests run under: rich draws
    no progress bar on TERM=dumb (a fresh machine's console, `env -i` with TERM=dumb)."""
    master, slave = pty.openpty()
    try:
        env = {**os.environ, "TERM": "xterm"}
        dumper = _start(*args, stderr=slave, stdout=subprocess.DEVNULL, env=env)
        os.close(slave)
        received = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not chunk:
                break
            received += chunk
        dumper.wait(DEADLINE_S)
    finally:
        os.close(master)
    return dumper.returncode, received.decode(errors="replace")


def test_no_progress_bar_for_a_short_dump_or_an_early_error(readers):
    code, terminal = _stderr_on_a_terminal("-p", str(readers.pid), "--thread-id", str(readers.pid))
    assert code == 0
    assert terminal == ""
    code, terminal = _stderr_on_a_terminal("-p", "abc")
    assert code == 2
    assert "capturing" not in terminal and "symbolizing" not in terminal
    assert "invalid pid: abc" in terminal


def test_progress_bar_covers_symbolization(big_cu):
    target, _ = big_cu
    code, terminal = _stderr_on_a_terminal("-p", str(target.pid), "--no-cache")
    assert code == 0
    assert "symbolizing" in terminal


# -- job control (issue 28) ------------------------------------------------------------------


@pytest.fixture
def fifty(live, threads_bin):
    """50 threads, 8 of them spinning: on a small machine a spinner reaches its stop only
    when the scheduler runs it, so a stop window lasts long enough for a signal to land in.
    (Per test: its spinners would slow every later test of the module.)"""
    with Target(threads_bin("O2"), {"spin": 8, "read": 41}).wait_ready() as target:
        yield target


def _new_group(*args: str) -> subprocess.Popen:
    """stackdump in a process group of its own in our session: a job, as a shell starts it.
    (A group with no parent outside it in the session is orphaned, and the kernel discards
    SIGTSTP's stop there.)"""
    return _start(*args, process_group=0)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _seized_by(target: Target, dumper: int) -> bool:
    return any(tracer == dumper for _, tracer in thread_states(target.pid).values())


def _stopped_mid_capture(target: Target, sig: int, delay: float) -> Dict[int, str]:
    """Dump `target`, send `sig` to stackdump `delay` seconds after it seized its first
    thread, and once stackdump is stopped (or gone) return the target's thread states then
    ({} when it never stopped); SIGCONT it and check the dump ends whole."""
    dumper = _new_group("-p", str(target.pid), "--mode", "disabled")
    seen: Dict[int, str] = {}
    try:
        _until(
            lambda: _seized_by(target, dumper.pid) or dumper.poll() is not None,
            "stackdump never seized a thread",
        )
        time.sleep(delay)  # a random point of the capture, not a synchronization
        dumper.send_signal(sig)
        _until(lambda: _state(dumper.pid) in ("T", "Z", "gone"), "stackdump never stopped")
        if _state(dumper.pid) == "T":
            seen = {tid: state for tid, (state, _) in thread_states(target.pid).items()}
        dumper.send_signal(signal.SIGCONT)
        out, err = finish(dumper)
    finally:
        if dumper.poll() is None:
            dumper.kill()
            dumper.wait()
    # Once continued, the dump ends whole.
    assert dumper.returncode == 0, err
    assert parse_report(out.decode()).summary["captured"] == 50
    assert_untouched(target.pid)
    return seen


def test_job_control_stop_waits_until_no_thread_is_stopped(fifty):
    rng = random.Random(28)
    stopped_with_us = 0
    for sig in [signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU] * 4:
        states = _stopped_mid_capture(fifty, sig, rng.uniform(0, 0.004))
        # While stackdump is stopped, no thread of the target is.
        assert all(state != "t" for state in states.values()), states
        stopped_with_us += bool(states)
    assert stopped_with_us >= 6


def test_sigstop_holds_at_most_one_thread_until_sigcont(fifty):
    """SIGSTOP cannot be caught: the one thread being copied stays stopped with stackdump
    (docs/FORMAT.md "Never harming the target"), and SIGCONT releases it."""
    rng = random.Random(5)
    for _ in range(6):
        states = _stopped_mid_capture(fifty, signal.SIGSTOP, rng.uniform(0, 0.004))
        held = [tid for tid, state in states.items() if state == "t"]
        assert len(held) <= 1, held


@pytest.fixture(scope="module")
def cxx(live, build_dir):
    """A C++ target whose cold FULL_WITH_INLINE dump reads DWARF for about two seconds (its
    own, libstdc++'s symbols, libc's debug file when installed)."""
    binary = compile_target("cxx_threads.cpp", build_dir, "interrupt-cxx", ["-O2", "-g"])
    # Every role it starts, so that no thread is still being created when it is dumped.
    with Target(binary, {"worker": 1, "waiter": 1, "thrower": 1, "spin": 1}).wait_ready() as target:
        yield target


def _cpu_ns(pid: int) -> Optional[int]:
    """The CPU time a (single-threaded) process has run, in ns, as the scheduler counts it;
    None once it is reaped. A zombie's is its last."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _holds(pid: int, path: str) -> bool:
    """Whether the process has `path` open."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for name in names:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{name}") == path:
                return True
    return False


def _unwinding_or_gone(dumper: subprocess.Popen, target: Target) -> bool:
    """stackdump opens the target's modules once it has read the maps, just before its first
    seize, and keeps them open to the end: from then on it is past start-up. (A seize is too
    short to be seen reliably.) Reads /proc only: the dumper is not reaped."""
    return _state(dumper.pid) in ("Z", "gone") or _holds(
        dumper.pid, os.readlink(f"/proc/{target.pid}/exe")
    )


def _to_files(*args: str) -> Tuple[subprocess.Popen, BinaryIO, BinaryIO]:
    """stackdump writing to files, not pipes: a report never waits for its reader."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - closed by _collected
    return _start(*args, stdout=out, stderr=err), out, err


def _collected(proc: subprocess.Popen, out: BinaryIO, err: BinaryIO) -> Tuple[str, str]:
    with out, err:
        proc.wait(timeout=DEADLINE_S)
        out.seek(0)
        err.seek(0)
        return out.read().decode(), err.read().decode()


def _cpu_past_start_up(args: Sequence[str], target: Target) -> Tuple[int, str]:
    """How much CPU a whole dump spends from its capture to its exit (ns), and its report."""
    whole, out, err = _to_files(*args)
    try:
        _until(lambda: _unwinding_or_gone(whole, target), "no capture")
        at_start = _cpu_ns(whole.pid)
        # Exited but not reaped: its schedstat still reads, and is final.
        os.waitid(os.P_PID, whole.pid, os.WEXITED | os.WNOWAIT)
        at_exit = _cpu_ns(whole.pid)
    finally:
        report, text = _collected(whole, out, err)
    assert whole.returncode == 0, text
    assert at_start is not None and at_exit is not None
    return at_exit - at_start, report


def test_one_sigterm_anywhere_in_symbolization_gives_a_partial_report(cxx):
    """SIGTERM at twenty points of a cold FULL_WITH_INLINE dump, from its capture to its
    end. The points are fractions of the CPU a whole dump spends from there, read from the
    dumper's own schedstat: points of its progress, not of the wall clock, which on a busy
    machine says little about how far it got."""
    args = ("-p", str(cxx.pid), "--mode", "full_with_inline", "--no-cache")
    _cpu_past_start_up(args, cxx)  # the first run brings the files into the page cache
    span, whole = _cpu_past_start_up(args, cxx)
    threads = len(parse_report(whole).threads)
    partial = 0
    for k in range(20):
        dumper, out, err = _to_files(*args)
        _until(lambda d=dumper: _unwinding_or_gone(d, cxx), "no capture")
        point = (_cpu_ns(dumper.pid) or 0) + span * k // 20
        _until(
            lambda d=dumper, p=point: _state(d.pid) in ("Z", "gone") or (_cpu_ns(d.pid) or 0) >= p,
            "no progress",
        )
        dumper.send_signal(signal.SIGTERM)
        report_text, text = _collected(dumper, out, err)
        _assert_no_traceback(text)
        assert "again" not in text, text
        if k < 10:
            # Half its work or less done: it cannot have finished (runs differ in CPU by far
            # less than that).
            assert dumper.returncode == 1, (k, text)
        if dumper.returncode == 0:  # the signal came once the report was complete
            parse_report(report_text)
            continue
        if dumper.returncode == -signal.SIGTERM:
            # ... or while it was being written: that phase ends by the signal
            # (docs/FORMAT.md "Interrupts"), and says so
            assert "while writing the report" in text, text
            continue
        # THEN what is known is printed, marked interrupted, exit 1
        assert dumper.returncode == 1, text
        report = parse_report(report_text)
        assert report.stats["interrupted"] == 1
        # (a signal during capture, where each thread is unwound as it runs again, reports
        # the threads captured before it: none, when it came before the first seize)
        assert len(report.threads) <= threads
        assert report.header["thread_count"] == str(threads)
        if len(report.threads) < threads:  # came during capture
            says = f"the report covers the {len(report.threads)} of {threads} thread(s)"
        else:  # during symbolization
            says = f"symbolization stopped: {report.stats['unsymbolized']} frame(s)"
        assert f"interrupted by SIGTERM: {says}" in text, text
        partial += 1
        assert_untouched(cxx.pid)
    assert partial >= 10


def test_a_signal_once_the_report_is_out_leaves_the_exit_status_the_reports(readers):
    """The report's last line has reached the reader: a SIGTERM now changes nothing."""
    dumper = _start("-p", str(readers.pid), "--mode", "disabled")
    received = []
    for line in dumper.stdout:
        received.append(line)
        if line.startswith(b"stats: "):
            break
    dumper.send_signal(signal.SIGTERM)
    out, err = finish(dumper)
    text = err.decode()
    _assert_no_traceback(text)
    assert dumper.returncode == 0, text
    assert text == ""
    report = parse_report(b"".join(received + [out]).decode())
    assert report.summary["captured"] == 301
    assert_untouched(readers.pid)
