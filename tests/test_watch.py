"""`--watch`: each thread of a target whose threads are in known states (tests/targets/
progress.c: a deadlocked pair, a thread queued behind it, a spinning thread, a thread making
steady progress, idle workers) lands in its class, in the text and in JSON; the classifier's
rules on their own (progress.judge); and the options' errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from helpers import ROLE_SYSCALL, Target, assert_untouched, compile_target, run_stackdump

from stackdump.progress import (
    BLOCKED,
    DEADLOCKED,
    RUNNING,
    SPINNING,
    WAITING,
    Seen,
    judge,
)
from stackdump.types import ThreadReport, ThreadStatus

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "json-schema.json").read_text())
ROLES = {"ab": 1, "ba": 1, "queued": 1, "spinner": 1, "steady": 1, "idle": 3}
EXPECTED = {
    "ab": DEADLOCKED,
    "ba": DEADLOCKED,
    "queued": BLOCKED,
    "spinner": SPINNING,
    "steady": RUNNING,
    "idle": WAITING,
    "main": WAITING,  # reads its stdin, a pipe no one writes to
}
GROUP = re.compile(r"----- (\w+): (\d+) threads? \(.*?\) (.*) -----")


@pytest.fixture(scope="module")
def target(live, build_dir):
    assert ROLE_SYSCALL["idle"] == 202
    binary = compile_target("progress.c", build_dir, "progress", ["-O1", "-g"])
    with Target(binary, ROLES).wait_ready() as running:
        yield running
        assert_untouched(running.pid)


def _classes(text: str) -> Tuple[Dict[int, str], Dict[int, str]]:
    """tid -> class, tid -> its group line, from the text."""
    classes, lines = {}, {}
    current = None
    for line in text.splitlines():
        m = GROUP.fullmatch(line)
        if m:
            current = (m.group(1), line)
        elif line.startswith("tids: ") and current is not None:
            for part in line[6:].split(","):
                low, _, high = part.partition("-")
                for tid in range(int(low), int(high or low) + 1):
                    classes[tid], lines[tid] = current
    return classes, lines


def _expected(target) -> Dict[int, str]:
    return {tid: EXPECTED[role] for role, tids in target.tids.items() for tid in tids}


@pytest.mark.parametrize("round", range(3))
def test_every_thread_lands_in_its_class(target, round):
    result = run_stackdump("-p", str(target.pid), "--watch", "1", "--interval-ms", "250")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    classes, lines = _classes(text)
    assert classes == _expected(target), text
    # What did not move comes first: the classes in their order.
    order = [m.group(1) for m in GROUP.finditer(text)]
    ranks = [[DEADLOCKED, BLOCKED, SPINNING, WAITING, RUNNING].index(c) for c in order]
    assert ranks == sorted(ranks), order
    ab, ba = target.tid("ab"), target.tid("ba")
    cycle = f"deadlock={min(ab, ba)}->{max(ab, ba)}->{min(ab, ba)}"
    assert cycle in lines[ab] and f"held_by={ba}" in lines[ab]
    assert f"held_by={ab}" in lines[target.tid("queued")]
    assert "deadlock=" not in lines[target.tid("queued")]
    # The captures are 250 ms apart start to start: a slow capture only delays the next.
    stay = re.search(
        r"blocked (\d+\.\d) s\+ in the same place \(5 of 5 samples, 0 ms CPU\)", lines[ab]
    )
    assert stay and float(stay.group(1)) >= 0.9, lines[ab]
    spinning = re.search(r"\((\d) of 5 samples, (\d+) ms CPU\)", lines[target.tid("spinner")])
    assert spinning and int(spinning.group(2)) > 200, lines[target.tid("spinner")]
    summary = text.splitlines()[-2]
    assert summary == (
        "summary: threads=9 deadlocked=2 blocked=1 spinning=1 waiting=4 running=1 "
        "stuck_threads=4 interrupted=0"
    ), text
    assert text.splitlines()[-1] == f"deadlock: {min(ab, ba)} -> {max(ab, ba)} -> {min(ab, ba)}"


def test_the_json_document_carries_each_class(target):
    jsonschema = pytest.importorskip("jsonschema")
    result = run_stackdump(
        "-p", str(target.pid), "--watch", "1", "--interval-ms", "500", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    found = {t["tid"]: t["progress"] for t in document["threads"]}
    assert found == _expected(target)
    watch = document["watch"]
    assert watch["samples"] == 3 and watch["interval_ms"] == 500
    assert watch["stuck_threads"] == 4
    assert watch["counts"] == {
        "deadlocked": 2,
        "blocked": 1,
        "spinning": 1,
        "waiting": 4,
        "running": 1,
    }
    steady = next(t for t in document["threads"] if t["tid"] == target.tid("steady"))
    assert steady["watch"]["stack_changes"] == 2 and steady["watch"]["cpu_ms"] > 100
    ab = next(t for t in document["threads"] if t["tid"] == target.tid("ab"))
    assert ab["watch"]["cpu_ms"] == 0 and ab["watch"]["waits_on"].startswith("futex 0x")
    assert document["deadlocks"] == [sorted([target.tid("ab"), target.tid("ba")])]


def _seen(offset_s: float, stack: str, run_ms: int, **kw) -> Seen:
    values = dict(call=None, wait_object=None, state="S", in_cycle=False, lock_wait=False)
    values.update(kw)
    return Seen(
        offset_ns=int(offset_s * 1e9),
        stack=tuple(stack.split()),
        run=(run_ms * 1_000_000, 0),
        **values,
    )


_ANY = ThreadReport(tid=1, name="t", status=ThreadStatus.OK)


def _judge(series: List[Seen]) -> str:
    return judge(_ANY, series, series[-1].offset_ns).progress


def test_judge_reads_the_last_stay():
    read = dict(call="read", wait_object=3)
    # It moved, then sat in one read for the last three of four captures: still, waiting.
    series = [_seen(0, "f main", 0), *(_seen(t, "read g main", 5, **read) for t in (1, 2, 3))]
    progress = judge(_ANY, series, 3_000_000_000)
    assert (progress.progress, progress.still, progress.still_ns) == (WAITING, 3, 2_000_000_000)
    assert progress.cpu_ms == 0 and progress.waits_on == "fd 3"
    # The same stay in a write: blocked. On another descriptor each time: it moved.
    write = [_seen(t, "write g main", 0, call="write", wait_object=4) for t in (0, 1, 2)]
    assert _judge(write) == BLOCKED
    moving = [_seen(t, "read g main", 0, call="read", wait_object=t) for t in (0, 1, 2)]
    assert _judge(moving) == RUNNING
    # Only the last of three in that place: not enough to call it still.
    assert _judge([_seen(0, "a", 0), _seen(1, "b", 0), _seen(2, "c", 0)]) == RUNNING


def test_judge_tells_spinning_from_running_by_the_stack():
    busy_same = [_seen(t, "loop main", t * 900) for t in (0, 1, 2, 3)]
    assert _judge(busy_same) == SPINNING
    busy_moving = [_seen(t, f"step{t} main", t * 900) for t in (0, 1, 2, 3)]
    assert _judge(busy_moving) == RUNNING
    # A little CPU (a timed wait waking up) is not busy.
    idle = [_seen(t, "cond_wait main", t * 5, call="futex", wait_object=64) for t in (0, 1, 2)]
    assert _judge(idle) == WAITING
    # Seen once: it came or went. Still, but missing from the last capture: it went.
    assert _judge([_seen(0, "loop main", 0)]) == RUNNING
    assert judge(_ANY, idle, 3_000_000_000).progress == RUNNING


def test_judge_deadlocked_only_while_in_the_cycle():
    lock = dict(call="futex", wait_object=64, lock_wait=True)
    cycle = [_seen(t, "lll_lock_wait lock main", 0, in_cycle=True, **lock) for t in (0, 1, 2)]
    assert _judge(cycle) == DEADLOCKED
    # The cycle was found in the last capture only (its other half came later): blocked.
    late = [_seen(t, "lll_lock_wait lock main", 0, in_cycle=t == 2, **lock) for t in (0, 1, 2)]
    assert _judge(late) == BLOCKED


@pytest.mark.parametrize(
    "args,message",
    [
        (["--watch", "0"], 'invalid watch: 0, expected range [1, 3600] (--watch "0")'),
        (["--watch", "x"], "invalid watch: x"),
        (["--watch", "1", "--samples", "3"], "--watch and --samples/--duration-s are mutually"),
        (["--watch", "1", "--format", "pprof"], "a watch is written as text or json"),
        (["--watch", "1", "--interval-ms", "2000"], "longer than the watch (--watch 1)"),
        (["--watch", "1", "--sort", "cpu"], "--sort cpu orders one dump's threads"),
    ],
)
def test_watch_arguments_are_checked(args, message):
    result = run_stackdump("-p", "1", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert message in result.stderr, result.stderr


def test_a_sleeping_thread_over_two_captures_is_waiting(live, threads_bin):
    """The shortest watch, two captures: threads asleep in nanosleep stayed."""
    with Target(threads_bin("O2"), {"sleep": 2}).wait_ready() as target:
        result = run_stackdump(
            "-p", str(target.pid), "--watch", "1", "--interval-ms", "1000", "--format", "json"
        )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["watch"]["samples"] == 2
    progress = {t["tid"]: t["progress"] for t in document["threads"]}
    assert [progress[tid] for tid in target.tids["sleep"]] == [WAITING, WAITING]


def test_a_wait_our_stop_restarted_is_the_same_wait():
    """A sleep or timed wait a capture's stop interrupted is resumed by the kernel as
    restart_syscall, which /proc then shows: the same call on the same thing, not a move."""
    from stackdump.progress import Watcher
    from stackdump.types import ThreadContext

    watcher = Watcher(lambda: {})
    for call, wait_object in (("futex", 64), ("restart_syscall", None)):
        context = ThreadContext(state="S", wchan=None, cpu_ms=0, wait_object=wait_object)
        thread = ThreadReport(
            tid=1, name="t", status=ThreadStatus.OK, blocked_in=call, context=context
        )
        watcher._note(("thread", 1), thread, 0, None, False)
    first, second = watcher._seen[("thread", 1)]
    assert second.place() == first.place() == ((), "futex", 64)
