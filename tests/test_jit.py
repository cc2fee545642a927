"""JIT code: frames in anonymous executable memory say so (` in [jit]`), and take their names
from the perf map the runtime writes (node --perf-basic-prof; a JVM's, written on
`jcmd PID Compiler.perfmap`), unless that map could be a forgery (another user's, or
writable by others)."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import need_tool
from helpers import TARGETS, parse_report, run_stackdump

pytestmark = pytest.mark.usefixtures("live")
# V8's name for the optimized function: `JS:*f file:line:column` (Node.js 20, V8 11), and
# `LazyCompile:*f file:line` (Debian 12's Node.js 18, V8 10.2).
JIT_NAME = re.compile(r"^(JS|LazyCompile):\*hotLoopInJavaScript .*spin\.js:\d+(:\d+)? in \[jit\]$")
OPTIMIZED = re.compile(r"^\S+ \S+ (JS|LazyCompile):\*hotLoopInJavaScript ", re.M)
JIT_BARE = re.compile(r"^0x[0-9a-f]{16} in \[jit\]$")


@pytest.fixture
def node_target(tmp_path):
    node = need_tool("node", "nodejs")
    process = subprocess.Popen(
        # Synchronous on-stack replacement: the main thread compiles the loop and enters the
        # code at once, so the map naming it means the thread runs it. (Concurrent OSR
        # names it from another thread first: a dump was seen in the interpreter then.)
        [
            node,
            "--perf-basic-prof",
            "--no-concurrent-osr",
            "--no-concurrent-recompilation",
            str(TARGETS / "spin.js"),
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,  # V8 writes isolate-*.log files into its working directory
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("ready js "), line
        perf_map = Path(f"/tmp/perf-{process.pid}.map")
        # Until V8 has compiled the loop: its optimized code is then on the stack for good.
        deadline = time.monotonic() + 60
        while not OPTIMIZED.search(_text(perf_map)):
            assert time.monotonic() < deadline, "V8 never optimized the loop"
            assert process.poll() is None, "node exited"
            time.sleep(0.05)  # polling a condition with a deadline
        yield process.pid, perf_map
    finally:
        process.kill()
        process.wait()
        Path(f"/tmp/perf-{process.pid}.map").unlink(missing_ok=True)


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _main_frames(pid: int, with_stderr: bool = False):
    out = run_stackdump("-p", str(pid), "--thread-id", str(pid), "--mode", "disabled")
    assert out.returncode in (0, 1), out.stderr
    frames = parse_report(out.stdout).thread(pid).frames
    return (frames, out.stderr) if with_stderr else frames


def _names_v8_builtins(pid: int) -> bool:
    """Whether the node the target runs has V8's builtins in its symbol tables: Node.js's
    own builds do; Debian's (its code in libnode.so.108) has only the exported symbols."""
    node_files = {
        line.split(maxsplit=5)[5]
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
        if len(line.split(maxsplit=5)) == 6 and "node" in os.path.basename(line.split()[-1])
    }
    for path in node_files:
        for table in ([], ["-D"]):
            listed = subprocess.run(["nm", *table, path], capture_output=True, text=True).stdout
            if " Builtins_InterpreterEntryTrampoline" in listed:
                return True
    return False


def test_jit_frames_are_named_from_the_perf_map(node_target):
    """Named, and the walk goes on past them into V8. The script's top level runs in V8's
    interpreter, whose frames say nothing of the JavaScript running there: where V8's
    builtins have names, stderr says which flag would; where they have none (Debian's
    node), it does not speak of a frame it cannot name."""
    pid, _ = node_target
    frames, stderr = _main_frames(pid, with_stderr=True)
    jit = [i for i, f in enumerate(frames) if JIT_NAME.match(f)]
    assert jit and jit[-1] < len(frames) - 1, frames
    assert "--perf-basic-prof" not in stderr, stderr
    need_tool("nm", "binutils")
    if _names_v8_builtins(pid):
        assert any(f.startswith("Builtins_InterpreterEntryTrampoline") for f in frames), frames
        assert "run node with --interpreted-frames-native-stack" in stderr, stderr
    else:
        assert not any(f.startswith("Builtins_") for f in frames), frames
        assert "--interpreted-frames-native-stack" not in stderr, stderr


def test_jit_frames_without_a_map_say_they_are_jit_code(node_target):
    pid, perf_map = node_target
    perf_map.rename(perf_map.with_suffix(".hidden"))
    try:
        frames, stderr = _main_frames(pid, with_stderr=True)
    finally:
        perf_map.with_suffix(".hidden").rename(perf_map)
    assert any(JIT_BARE.match(f) for f in frames), frames
    assert not any("hotLoopInJavaScript" in f for f in frames)
    assert "have no name: run node with --perf-basic-prof" in stderr, stderr


@pytest.mark.parametrize("forgery", ["other_owner", "world_writable"])
def test_a_perf_map_anyone_else_could_have_written_is_ignored(node_target, forgery):
    pid, perf_map = node_target
    if forgery == "other_owner":
        os.chown(perf_map, 65534, 65534)  # nobody
    else:
        perf_map.chmod(0o666)
    frames = _main_frames(pid)
    assert any(JIT_BARE.match(f) for f in frames), frames
    assert not any("hotLoopInJavaScript" in f for f in frames)


@pytest.fixture
def java_target(build_dir):
    javac = need_tool("javac", "openjdk-17-jdk-headless")
    jcmd = need_tool("jcmd", "openjdk-17-jdk-headless")
    java = need_tool("java", "openjdk-17-jdk-headless")
    classes = build_dir / "java"
    if not (classes / "Spin.class").exists():
        subprocess.run([javac, "-d", str(classes), str(TARGETS / "Spin.java")], check=True)
    process = subprocess.Popen(
        [java, "-cp", str(classes), "Spin"], stdout=subprocess.PIPE, text=True
    )
    perf_map = Path(f"/tmp/perf-{process.pid}.map")
    try:
        line = process.stdout.readline()
        assert line.startswith("ready java "), line
        # Until the JIT has compiled the loop (the map lists what is compiled when asked).
        deadline = time.monotonic() + 60
        while "Spin.hotLoopInJava" not in _text(perf_map):
            assert time.monotonic() < deadline, "the JIT never compiled the loop"
            assert process.poll() is None, "java exited"
            subprocess.run([jcmd, str(process.pid), "Compiler.perfmap"], capture_output=True)
            time.sleep(0.2)  # polling a condition with a deadline
        yield process.pid
    finally:
        process.kill()
        process.wait()
        perf_map.unlink(missing_ok=True)


def test_java_jit_frames_are_named_from_the_jvms_perf_map(java_target):
    out = run_stackdump("-p", str(java_target), "--mode", "disabled")
    assert out.returncode in (0, 1), out.stderr
    frames = [f for t in parse_report(out.stdout).threads for f in t.frames]
    assert "long Spin.hotLoopInJava(long) in [jit]" in frames, frames
    assert "Compiler.perfmap" not in out.stderr, out.stderr


def test_java_jit_frames_without_a_map_say_how_to_get_one(java_target):
    perf_map = Path(f"/tmp/perf-{java_target}.map")
    perf_map.rename(perf_map.with_suffix(".hidden"))
    try:
        out = run_stackdump("-p", str(java_target), "--mode", "disabled")
    finally:
        perf_map.with_suffix(".hidden").rename(perf_map)
    assert f"have no name: `jcmd {java_target} Compiler.perfmap` writes" in out.stderr


def test_a_jvm_walk_that_stops_in_jit_code_names_the_flag_that_helps():
    """A JVM thread whose walk ends in compiled code (code keeping no frame pointer, without
    -XX:+PreserveFramePointer) gets the flag said; one that ends normally does not. (Which
    JIT code keeps a frame pointer is the JIT's choice: this checks the rule itself.)"""
    from stackdump.runtimes.jit import JIT_MODULE, Jit
    from stackdump.types import (
        CaptureMode,
        LocationMode,
        ReportHeader,
        SymbolizedFrame,
        ThreadReport,
        ThreadStatus,
        UnwindStatus,
    )  # fmt: skip

    java = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
    header = ReportHeader(
        pid=42, exe=java, thread_count=1, timeout_ms=100, mode=LocationMode.FAST,
        skip_blocking_syscalls=False, unwinder="x", capture=CaptureMode.AUTO,
    )  # fmt: skip
    jit = SymbolizedFrame(0x7F0000001000, "long Spin.hotLoopInJava(long)", JIT_MODULE, None)
    stuck = ThreadReport(1, "main", ThreadStatus.OK, frames=(jit,),
                         unwind_status=UnwindStatus.STEP_ERROR)  # fmt: skip
    whole = dataclasses.replace(stuck, unwind_status=UnwindStatus.END_OF_STACK)
    (said,) = Jit().hints(header, [stuck])
    assert "stop in JIT code" in said and "-XX:+PreserveFramePointer" in said
    assert Jit().hints(header, [whole]) == ()
