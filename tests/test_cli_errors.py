"""Invalid arguments (exit 2) and targets that cannot be dumped (exit 3), per docs/FORMAT.md."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import Target, run_stackdump

INVALID = [
    (["--thread-id", "abc"], "invalid thread_id: abc"),
    (["--thread-id", "-1"], "invalid thread_id: -1"),
    (["--thread-id", "0"], "invalid thread_id: 0"),
    (["--thread-id", "2147483648"], "invalid thread_id: 2147483648"),
    (["--thread-id", "1,,2"], "invalid thread_id: empty token"),
    (["--thread-id", ",1"], "invalid thread_id: empty token"),
    (["--thread-id", "1,"], "invalid thread_id: empty token"),
    (["--tid", "1", "--thread-id", "2"], "tid and thread_id are mutually exclusive"),
    (["--timeout-ms", "0"], "invalid timeout_ms: 0, expected range [1, 10000]"),
    (["--timeout-ms", "10001"], "invalid timeout_ms: 10001, expected range [1, 10000]"),
    (["--timeout-ms", "x"], "invalid timeout_ms: x, expected range [1, 10000]"),
    (
        ["--mode", "unknown"],
        "invalid dwarf_location_info_mode: unknown, expected one of DISABLED, FAST, FULL, "
        "FULL_WITH_INLINE",
    ),
    (["--max-frames", "0"], "invalid max_frames: 0, expected range [1, 4096]"),
    (["--capture", "gdb"], "invalid capture: gdb, expected one of auto, ptrace, passive"),
    (["--stack-bytes", "100"], "invalid stack_bytes: 100, expected range [4096, 67108864]"),
    # Digits that str.isdigit() accepts and int() rejects or misreads
    (["--timeout-ms", "²"], "invalid timeout_ms: ², expected range [1, 10000]"),
    (["--thread-id", "¹"], "invalid thread_id: ¹"),
    (["--thread-id", "١٢"], "invalid thread_id: ١٢"),
    (["--max-frames", "٣"], "invalid max_frames: ٣, expected range [1, 4096]"),
]


@pytest.mark.parametrize("args,message", INVALID)
def test_invalid_argument(args, message):
    result = run_stackdump("-p", "1", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize("pid", ["0", "abc", "²", "1\u0663", "", " "])
def test_invalid_pid(pid):
    result = run_stackdump("-p", pid)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f'stackdump: error: invalid pid: {pid} (-p "{pid}")']


@pytest.mark.parametrize(
    "args,message",
    [
        (["--symbolize", "-0x10", "-p", "1"], 'invalid symbolize: "-0x10" is negative'),
        (["--symbolize", "at -0x4011a0", "--object", "/bin/true"], '"-0x4011a0" is negative'),
        (["--symbolize", "0x10", "--object", "/bin/true", "--load-address", "-5"], "load_address"),
    ],
)
def test_a_negative_address_is_a_usage_error(args, message):
    """Read without its sign, -0x10 would be named as the address 0x10."""
    result = run_stackdump(*args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert message in result.stderr


@pytest.mark.parametrize(
    "args,suffix",
    [
        (["-p", "1", "--tid", "1,x"], '(--tid "1,x")'),
        (["-p", "1", "--thread-id", " 7"], '(--thread-id " 7")'),
        (["-p", "1", "--mode", " fast"], '(--mode " fast")'),
        (
            ["-p", "1", "--dwarf-location-info-mode", "fast\t"],
            '(--dwarf-location-info-mode "fast\\t")',
        ),
        (["--pid", "1 "], '(--pid "1 ")'),
        (["-p1x"], '(-p "1x")'),
        (["-p", "1", "--timeout-ms", ""], '(--timeout-ms "")'),
        (["-p", "1", "--thread-id", "1\n2"], '(--thread-id "1\\n2")'),
    ],
)
def test_messages_name_the_option_typed_and_quote_the_value(args, suffix):
    result = run_stackdump(*args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith(suffix), result.stderr


def test_missing_debug_dir_warns(tmp_path):
    # The warning comes before the target is looked at: pid_max + 1 exists nowhere.
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) + 1
    result = run_stackdump("-p", str(pid), "--debug-dir", str(tmp_path / "nope"))
    assert result.returncode == 3
    assert f'stackdump: warning: --debug-dir "{tmp_path}/nope": no such directory, ignored' in (
        result.stderr.splitlines()
    )


def test_missing_pid_option_is_a_usage_error():
    result = run_stackdump()
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "--pid" in result.stderr


def test_mode_any_case_and_long_option_wins():
    # Validation happens before the target is looked at: pid 1 is never touched here.
    result = run_stackdump("-p", "1", "--mode", "bogus", "--dwarf-location-info-mode", "full")
    assert "dwarf_location_info_mode" not in result.stderr


def test_help_and_version():
    assert run_stackdump("--help").returncode == 0
    version = run_stackdump("--version")
    assert version.returncode == 0 and version.stdout.startswith("stackdump, version ")


def test_missing_process_exits_3():
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) + 1  # no process can have this pid
    result = run_stackdump("-p", str(pid))
    assert result.returncode == 3
    assert result.stdout == ""
    assert f"no such process: {pid}" in result.stderr


def _a_kernel_thread():
    from stackdump.proc import is_kernel_thread

    return next(
        (int(p) for p in os.listdir("/proc") if p.isdigit() and is_kernel_thread(int(p))), None
    )


def test_dumping_itself_is_explained():
    # `bash -c 'stackdump -p $$'` execs stackdump in the shell's place: $$ is stackdump.
    result = subprocess.run(
        ["bash", "-c", f"exec {sys.executable} -m stackdump -p $$"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    assert "is this stackdump itself" in result.stderr
    assert "hint:" not in result.stderr


def test_kernel_thread_exits_3():
    pid = _a_kernel_thread()
    if pid is None:
        pytest.skip("no kernel thread is visible in this pid namespace")
    result = run_stackdump("-p", str(pid))
    assert result.returncode == 3
    assert "kernel thread" in result.stderr


@pytest.mark.usefixtures("live")
def test_already_traced_process_names_the_tracer(threads_bin, tracer_bin):
    with Target(threads_bin("O0"), {"sleep": 1}).wait_ready() as target:
        tracer = subprocess.Popen(
            [str(tracer_bin), str(target.pid)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert tracer.stdout.readline() == b"traced\n"
            result = run_stackdump("-p", str(target.pid))
            assert result.returncode == 3
            assert result.stdout == ""
            assert f"already traced by process {tracer.pid} (tracer)" in result.stderr, (
                result.stderr
            )
        finally:
            tracer.kill()
            tracer.wait()
