"""The text formatter against docs/FORMAT.md, line for line."""

from __future__ import annotations

import io

from stackdump.report import write_text
from stackdump.types import (
    CaptureMethod,
    FpStatus,
    InlinedCall,
    LocationMode,
    Report,
    ReportHeader,
    Summary,
    SymbolizedFrame,
    ThreadReport,
    ThreadStatus,
    UnwindStatus,
)

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def render(report: Report, show_addresses: bool = False) -> str:
    out = io.StringIO()
    write_text(report, out, show_addresses)
    return out.getvalue()


def make_report() -> Report:
    frames = tuple(
        SymbolizedFrame(
            pc=0x7F837BD26F36 + i, function="epoll_wait", module=LIBC, module_offset=0x1000 + i
        )
        for i in range(11)
    ) + (
        SymbolizedFrame(
            pc=0x55CAD18DFD21, function=None, module="/usr/bin/memcached", module_offset=0x1DD21
        ),
    )
    return Report(
        header=ReportHeader(
            pid=96543,
            exe="/usr/bin/memcached",
            thread_count=2,
            timeout_ms=100,
            mode=LocationMode.FAST,
            skip_blocking_syscalls=False,
            unwinder="frame_pointer_with_dwarf_cfi_fallback",
        ),
        threads=(
            ThreadReport(
                tid=12438,
                name="worker",
                status=ThreadStatus.OK,
                frames=frames,
                capture_method=CaptureMethod.FRAME_POINTER,
                fp_status=FpStatus.END_OF_CHAIN,
                stack_bounds=(0x7F2A1C000000, 0x7F2A1C800000),
                pause_us=38,
            ),
            ThreadReport(
                tid=12439,
                name="brpc_worker",
                status=ThreadStatus.SKIPPED_BLOCKING_SYSCALL,
                syscall_name="read",
                syscall_number=0,
            ),
        ),
        summary=Summary(
            captured=1,
            skipped=1,
            timed_out=0,
            remote_signal_attempts=1,
            elapsed_ms=812,
            max_pause_us=38,
            exited=0,
            errors=0,
        ),
    )


def test_text_matches_spec_line_for_line():
    lines = render(make_report()).split("\n")
    assert lines[:10] == [
        "stackdump thread stack traces",
        "pid: 96543",
        "exe: /usr/bin/memcached",
        "thread_count: 2",
        "timeout_ms_per_thread: 100",
        "dwarf_location_info_mode: fast",
        "skip_blocking_syscalls: false",
        "unwinder: frame_pointer_with_dwarf_cfi_fallback",
        "capture: auto",  # appended to Doris's header by issue 5
        "",
    ]
    assert lines[10] == (
        "----- thread 12438 (worker) status=ok capture_method=frame_pointer frames=12 "
        "fp_status=end_of_chain stack_bounds=0x7f2a1c000000-0x7f2a1c800000 pause_us=38 -----"
    )
    assert lines[11] == f"    0#  epoll_wait in {LIBC}"
    assert lines[20] == f"    9#  epoll_wait in {LIBC}"
    assert lines[21] == f"    10# epoll_wait in {LIBC}"
    assert lines[22] == "    11# 0x000055cad18dfd21 in /usr/bin/memcached+0x1dd21"
    assert lines[23:] == [
        "",
        "----- thread 12439 (brpc_worker) status=skipped_blocking_syscall syscall=read "
        "syscall_number=0 -----",
        "<no stack captured>",
        "",
        "summary: captured=1 skipped=1 timed_out=0 remote_signal_attempts=1",
        "stats: elapsed_ms=812 max_pause_us=38 exited=0 errors=0 cache_hits=0 cus_decoded=0 "
        "passive=0 interrupted=0 unsymbolized=0 reported=0 process_exited=0 foreign=0",
        # Appended by issue 15 because a frame is unknown; this report has no module table.
        "unknown_frames: 1 frame(s) have no function name, 0 of them in the objects below "
        "(1 in no mapped file)",
        "",
    ]


def test_addresses_put_the_pc_first_once():
    lines = render(make_report(), show_addresses=True).split("\n")
    assert lines[11] == f"    0#  0x00007f837bd26f36 epoll_wait in {LIBC}"
    assert lines[22] == "    11# 0x000055cad18dfd21 in /usr/bin/memcached+0x1dd21"


def test_hundredth_frame_keeps_a_space():
    frames = tuple(
        SymbolizedFrame(pc=i, function="f", module=None, module_offset=None) for i in range(101)
    )
    report = make_report()
    thread = ThreadReport(
        tid=1,
        name="t",
        status=ThreadStatus.OK,
        frames=frames,
        capture_method=CaptureMethod.FRAME_POINTER,
        fp_status=FpStatus.FRAME_LIMIT,
    )
    text = render(Report(report.header, (thread,), report.summary))
    assert "\n    100# f\n" in text


def test_error_is_quoted():
    report = make_report()
    thread = ThreadReport(
        tid=1, name="t", status=ThreadStatus.ATTACH_ERROR, pause_us=0, error='EPERM: "no"'
    )
    text = render(Report(report.header, (thread,), report.summary))
    assert '----- thread 1 (t) status=attach_error pause_us=0 error="EPERM: \\"no\\"" -----' in text


def test_passive_thread_line():
    report = make_report()
    thread = ThreadReport(
        tid=7,
        name="acceptor",
        status=ThreadStatus.OK,
        frames=report.threads[0].frames[:1],
        capture_method=CaptureMethod.PASSIVE_SYSCALL,
        unwind_status=UnwindStatus.END_OF_STACK,
        stack_bounds=(0x1000, 0x2000),
        pause_us=0,
        recovered_frame_pointers=1,
    )
    text = render(Report(report.header, (thread,), report.summary))
    assert (
        "----- thread 7 (acceptor) status=ok capture_method=passive_syscall frames=1 "
        "unwind_status=end_of_stack stack_bounds=0x1000-0x2000 pause_us=0 "
        "recovered_frame_pointers=1 -----"
    ) in text


def test_skipped_running_counts_as_skipped_line():
    report = make_report()
    thread = ThreadReport(tid=8, name="spin", status=ThreadStatus.SKIPPED_RUNNING)
    text = render(Report(report.header, (thread,), report.summary))
    assert "----- thread 8 (spin) status=skipped_running -----\n<no stack captured>\n" in text


def test_inlined_lines_carry_their_physical_frames_pc_with_addresses():
    # GIVEN one physical frame with one function inlined at its pc
    pc = 0x55CAD18DFD21
    helper = InlinedCall("helper", "x.c", 10)
    physical = SymbolizedFrame(pc, "caller", "/bin/x", 0x1D21, "x.c", 20, (helper,))
    report = make_report()
    thread = ThreadReport(
        tid=1,
        name="t",
        status=ThreadStatus.OK,
        frames=(physical,),
        capture_method=CaptureMethod.DWARF_CFI,
    )
    lines = render(Report(report.header, (thread,), report.summary), show_addresses=True)
    # THEN both lines show the pc (as eu-stack -i), both take an index, frames= counts one
    assert "----- thread 1 (t) status=ok capture_method=dwarf_cfi frames=1 -----" in lines
    assert f"    0#  0x{pc:016x} helper at x.c:10 (inlined)" in lines
    assert f"    1#  0x{pc:016x} caller at x.c:20" in lines
