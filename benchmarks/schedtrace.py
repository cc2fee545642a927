"""How long a dumper kept each thread of a target stopped, as the kernel's scheduler saw it.

The target's own spinner (threads.c) measures its longest gap with the TSC, which counts every
reason it lost the CPU, the hypervisor's included; on a small VM that noise (0.05-2 ms) is as
large as any dumper's stop. The scheduler's trace points name the cause: a thread that
switches out in state `t` (ptrace stop) is stopped by the dumper until its `sched_wakeup`
(the detach). Dumpers that report nothing themselves (eu-stack, gdb) are measured the same
way as stackdump and the C loop. (The switch back in is not used: the trace drops some of
those from idle, and a stopped spinner's CPU is idle, so it runs again within microseconds
of the wake-up.)

Needs root and tracefs (mounted at /sys/kernel/tracing, or mountable there); `SchedTrace.open`
returns None otherwise and the benchmark leaves those columns empty.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional

TRACEFS = "/sys/kernel/tracing"

_SWITCH = re.compile(
    r"\s(\d+\.\d+): sched_switch: prev_comm=.* prev_pid=(\d+) prev_prio=\d+ "
    r"prev_state=(\S+) ==> next_comm=.* next_pid=(\d+)"
)
_WAKEUP = re.compile(r"\s(\d+\.\d+): sched_wakeup: comm=.* pid=(\d+) ")


@dataclass(frozen=True)
class Switch:
    seconds: float
    prev: int
    prev_state: str
    next: int


def switch_on(line: str) -> Optional[Switch]:
    """The sched_switch event on one line of a trace, if it holds one."""
    m = _SWITCH.search(line)
    if not m:
        return None
    return Switch(float(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4)))


@dataclass(frozen=True)
class Stops:
    """Per thread id: how long each of its ptrace stops lasted (stop to wake-up), in
    microseconds."""

    stopped_us: Dict[int, List[float]]

    def all_stopped(self) -> List[float]:
        return [us for stops in self.stopped_us.values() for us in stops]

    def longest(self, tid: int) -> Optional[float]:
        values = self.stopped_us.get(tid)
        return max(values) if values else None


def parse(text: str, tids: Optional[set] = None) -> Stops:
    """Stops of the threads in `tids` (all threads when None) in a sched_switch/sched_wakeup
    trace."""
    stopped_at: Dict[int, float] = {}
    stopped: Dict[int, List[float]] = {}
    for line in text.splitlines():
        switch = switch_on(line)
        if switch:
            prev = switch.prev
            if switch.prev_state.startswith(("t", "T")) and (tids is None or prev in tids):
                stopped_at[prev] = switch.seconds
            continue
        m = _WAKEUP.search(line)
        if m:
            tid = int(m.group(2))
            if tid in stopped_at:
                stopped.setdefault(tid, []).append((float(m.group(1)) - stopped_at.pop(tid)) * 1e6)
    return Stops(stopped)


class SchedTrace:
    """sched_switch and sched_wakeup of one process's threads (by comm), on demand."""

    def __init__(self, root: str, comm: str) -> None:
        self._root = root
        self._comm = comm[:15]  # the kernel's TASK_COMM_LEN

    @classmethod
    def open(cls, comm: str) -> Optional[SchedTrace]:
        if not os.path.isdir(os.path.join(TRACEFS, "events")):
            if os.geteuid() != 0:
                return None
            subprocess.run(
                ["mount", "-t", "tracefs", "nodev", TRACEFS], capture_output=True, check=False
            )
        trace = cls(TRACEFS, comm)
        try:
            trace._write("tracing_on", "0")
            trace._write("trace_clock", "mono")  # one clock for all CPUs
            trace._write("buffer_size_kb", "32768")
            quoted = f'"{trace._comm}"'
            trace._write(
                "events/sched/sched_switch/filter",
                f"prev_comm == {quoted}",
            )
            trace._write("events/sched/sched_wakeup/filter", f"comm == {quoted}")
            trace._write("events/sched/sched_switch/enable", "1")
            trace._write("events/sched/sched_wakeup/enable", "1")
        except OSError:
            return None
        return trace

    def start(self) -> None:
        self._write("trace", "")
        self._write("tracing_on", "1")

    def stop(self, tids: Optional[set] = None) -> Stops:
        return parse(self.stop_raw(), tids)

    def stop_raw(self) -> str:
        self._write("tracing_on", "0")
        with open(os.path.join(self._root, "trace")) as f:
            return f.read()

    def follow(self, tids) -> None:
        """Trace these threads (by id) instead of the process's threads named like it: a
        server's threads often have names of their own (redis's bio_*, io_thd_*)."""
        self._write(
            "events/sched/sched_switch/filter", " || ".join(f"prev_pid == {t}" for t in tids)
        )
        self._write("events/sched/sched_wakeup/filter", " || ".join(f"pid == {t}" for t in tids))

    def filter_switches(self, expression: str) -> None:
        """Trace the sched_switch events matching `expression` instead of the process's."""
        self._write("events/sched/sched_switch/filter", expression)

    def close(self) -> None:
        for name in ("sched_switch", "sched_wakeup"):
            try:
                self._write(f"events/sched/{name}/enable", "0")
                self._write(f"events/sched/{name}/filter", "0")
            except OSError:
                pass

    def _write(self, name: str, value: str) -> None:
        with open(os.path.join(self._root, name), "w") as f:
            f.write(value)
