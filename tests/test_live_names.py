"""Issue 13: names that come from the target (thread names, the executable and object paths)
are escaped, reversibly, so they can neither split or forge a line nor reach the engineer's
terminal as control sequences (docs/FORMAT.md "Escaping")."""

from __future__ import annotations

import shutil

from helpers import Target, compile_target, parse_report, run_stackdump

from stackdump.escape import escape

HOSTILE = ["a\nb", "x) status=ok", "\x1b]0;pwned\x07", "\x1b[2J\rz", "\udcff\udcfe=\\"]
EXE_NAME = "evil\nexe\x1b[31m"


def test_hostile_thread_names_and_paths_are_escaped(live, build_dir, tmp_path):
    # GIVEN threads named with a newline, a forged key, escape sequences and non-UTF-8 bytes,
    # in an executable whose own path holds a newline and an escape sequence
    built = compile_target("names.c", build_dir, "names", ["-O1", "-g"])
    binary = tmp_path / EXE_NAME
    shutil.copy(built, binary)
    with Target(binary, {"name": len(HOSTILE)}).wait_ready() as target:
        # WHEN it is dumped, with and without locations
        for mode in ("disabled", "fast"):
            result = run_stackdump("-p", str(target.pid), "--mode", mode)
            assert result.returncode == 0, result.stderr
            out = result.stdout
            # THEN no control character but the line ends reaches the output
            assert not any(c < " " and c != "\n" for c in out), repr(out)
            assert "\x7f" not in out
            report = parse_report(out)  # every line is where the format says
            assert report.header["exe"] == escape(str(binary))
            assert "\\n" in report.header["exe"] and "\\x1b" in report.header["exe"]
            names = sorted(report.thread(tid).name for tid in target.tids["name"])
            assert names == sorted(escape(n, also=")=") for n in HOSTILE)
            assert "x\\x29 status\\x3dok" in names
            assert "\\xff\\xfe\\x3d\\\\" in names
            for section in report.threads:
                assert section.status == "ok", section.keys
                assert section.key_order.count("status") == 1
            if mode == "disabled":
                main = report.thread(target.tid("main"))
                assert any(f.endswith(f" in {escape(str(binary))}") for f in main.frames), main
