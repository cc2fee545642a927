"""Pure pieces of issue 15 on real bytes: /proc stat and kernel-stack text as the kernel
writes it, the waits-for cycle finder, TID ranges, folded-line escaping."""

from __future__ import annotations

from pathlib import Path

from stackdump import proc
from stackdump.locks import find_cycles
from stackdump.report import cmdline_text
from stackdump.views import tid_ranges


def test_stat_of_a_name_with_parentheses_and_spaces():
    text = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 1 0 0 0 17 4 0 0 20 0 3 0 1 2 3\n"
    assert proc.parse_stat(text) == ("S", 21)
    assert proc.parse_stat("4242 (x") is None


def test_stat_of_this_process_as_the_kernel_writes_it():
    state, ticks = proc.parse_stat(Path("/proc/self/stat").read_text())
    assert state == "R" and ticks >= 0


def test_kernel_stack_lines():
    text = "[<0>] futex_wait_queue+0x60/0x90\n[<0>] do_syscall_64+0x38/0x90\n"
    frames = ("futex_wait_queue+0x60/0x90", "do_syscall_64+0x38/0x90")
    assert proc.parse_kernel_stack(text) == frames
    assert proc.parse_kernel_stack("") == ()


def test_cycles_only_where_waits_close():
    # 1 <-> 2 deadlock, 3 queued behind it, 4 waits for 5 who waits for nobody,
    # 6 -> 7 -> 8 -> 6 a three-way cycle.
    holders = {1: 2, 2: 1, 3: 1, 4: 5, 6: 7, 7: 8, 8: 6}
    assert find_cycles(holders) == ((1, 2), (6, 7, 8))
    assert find_cycles({9: 9}) == ((9,),)  # a thread relocking its own normal mutex
    assert find_cycles({}) == ()


def test_mutex_waits_found_again_by_report_equal_found_afresh():
    """Sampling keeps each thread report's mutex wait by its identity (`with_mutex_waits`'
    `known`): the same reports must give the same waits and cycles, for the offset kept."""
    from stackdump.locks import OWNER_OFFSET, with_mutex_waits
    from stackdump.types import SymbolizedFrame, ThreadContext, ThreadReport, ThreadStatus

    def waiting(tid: int, owner: int, mutex: int) -> ThreadReport:
        words = (0).to_bytes(8, "little") + owner.to_bytes(4, "little") + bytes(4)
        frames = tuple(
            SymbolizedFrame(pc=0x1000 + i, function=name, module="libc.so.6", module_offset=i)
            for i, name in enumerate(("__futex_abstimed_wait", "__lll_lock_wait", "main"))
        )
        context = ThreadContext(state="S", wchan="futex_wait", cpu_ms=0, futex=(mutex, words))
        ok = ThreadStatus.OK
        return ThreadReport(tid=tid, name="t", status=ok, frames=frames, context=context)

    idle = ThreadReport(tid=3, name="t", status=ThreadStatus.OK)
    reports = (waiting(1, 2, 0xA0), waiting(2, 1, 0xB0), idle)
    afresh = with_mutex_waits(reports, OWNER_OFFSET)
    known: dict = {}
    assert with_mutex_waits(reports, OWNER_OFFSET, known) == afresh
    assert len(known) == 3
    again = with_mutex_waits((reports[0], reports[1], waiting(3, 1, 0xA0)), OWNER_OFFSET, known)
    assert again[1] == ((1, 2),) and again[0][2].waits_for_mutex == 0xA0
    assert afresh[1] == ((1, 2),) and afresh[0][0].mutex_holder == 2


def test_tid_ranges():
    assert tid_ranges([107, 101, 102, 103]) == "101-103,107"
    assert tid_ranges([5]) == "5"


def test_cmdline_quotes_what_needs_it():
    assert cmdline_text(("postgres: checkpointer", "", "-D", "/var/lib/x\ny")) == (
        '"postgres: checkpointer" "" -D /var/lib/x\\ny'
    )


def test_the_format_table_drives_the_cli():
    """Every --format value, the profile-only ones, the --help text and the messages come
    from writers.registry (issue 29): a format added there is offered and checked."""
    from click.testing import CliRunner

    from stackdump.cli import command
    from stackdump.writers import registry

    assert registry.names() == (
        "text", "json", "folded", "pprof", "flamegraph", "speedscope", "chrome-trace"
    )  # fmt: skip
    assert registry.profile_only() == ("pprof", "speedscope", "chrome-trace")
    assert registry.for_profiles() == (
        "text", "folded", "pprof", "flamegraph", "speedscope", "chrome-trace"
    )  # fmt: skip
    assert registry.for_kind("watch") == ("text", "json")
    assert registry.for_kind("merge") == ("text", "json", "folded", "pprof", "flamegraph")
    assert registry.for_kind("diff") == ("text", "json")
    help_text = "".join(CliRunner().invoke(command, ["--help"]).output.split())
    assert "".join(registry.help_text().split()) in help_text  # (click wraps at hyphens too)
    assert all(registry.find(n).name == n for n in registry.names())
