"""`stackdump merge` and `stackdump diff` over real dumps: two processes of one PIE program
(their addresses differ: ASLR) dumped by the real stackdump, their JSON documents given the
hosts of a fleet, merged by name and file:line; folded counts summed; pprof read by `go tool
pprof`; JSON checked against docs/merge-schema.json; bad inputs named."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import need_tool
from helpers import Target, run_stackdump

ROOT = Path(__file__).parent.parent
SCHEMA = json.loads((ROOT / "docs" / "merge-schema.json").read_text())
A_ROLES = {"read": 2, "cond": 3}
B_ROLES = {"read": 1, "cond": 1, "sleep": 2}


@pytest.fixture(scope="module")
def dumps(live, threads_bin, tmp_path_factory):
    """{"a": (json text, folded text), "b": ...} of two processes of one binary."""
    out = {}
    binary = threads_bin("O2")
    for name, roles in (("a", A_ROLES), ("b", B_ROLES)):
        with Target(binary, roles).wait_ready() as target:
            result = run_stackdump("-p", str(target.pid), "--format", "json")
            assert result.returncode == 0, result.stderr
            folded = run_stackdump("-p", str(target.pid), "--format", "folded")
            assert folded.returncode == 0, folded.stderr
            out[name] = (result.stdout, folded.stdout)
    return out


def _fleet(dumps, directory: Path, hosts_a: int, hosts_b: int) -> Path:
    """`hosts_a` hosts running process a, then `hosts_b` running b: one JSON dump each,
    named by host as the README's collection loop names them."""
    directory.mkdir()
    for i in range(hosts_a + hosts_b):
        document = json.loads(dumps["a" if i < hosts_a else "b"][0])
        document["header"]["host"] = f"host{i:02d}"
        (directory / f"host{i:02d}.json").write_text(json.dumps(document))
    return directory


def _sections(text: str):
    """[(header line, [frame function names])]."""
    out = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith("----- "):
            names = [re.sub(r"^\s+\d+#\s+", "", line).split(" ")[0] for line in lines[1:]]
            out.append((lines[0], names))
    return out


def test_stacks_merge_across_hosts_by_name_not_address(dumps, tmp_path):
    a, b = (json.loads(dumps[k][0]) for k in "ab")

    def pcs(document, function):
        return {
            f["pc"] for t in document["threads"] for f in t["frames"] if f["function"] == function
        }

    assert pcs(a, "read_main") and pcs(a, "read_main").isdisjoint(pcs(b, "read_main"))  # ASLR
    fleet = _fleet(dumps, tmp_path / "out", hosts_a=20, hosts_b=1)
    result = run_stackdump("merge", *sorted(str(p) for p in fleet.iterdir()))
    assert result.returncode == 0, result.stderr
    sections = _sections(result.stdout)
    by_leaf = {tuple(names): header for header, names in sections}
    read = next(h for names, h in by_leaf.items() if "read_main" in names)
    assert read.startswith("----- x41 threads on 21 of 21 hosts, 21 processes (threads-O2 x41)")
    cond = next(h for names, h in by_leaf.items() if "cond_main" in names)
    assert cond.startswith("----- x61 threads on 21 of 21 hosts, 21 processes")
    sleep = next(h for names, h in by_leaf.items() if "sleep_main" in names)
    assert sleep.startswith("----- x2 threads on 1 of 21 hosts, 1 process ")
    assert "outlier=1 hosts=host20" in sleep and "outlier" not in read
    counts = [int(re.match(r"----- x(\d+)", h).group(1)) for h, _ in sections]
    assert counts == sorted(counts, reverse=True)
    assert result.stdout.splitlines()[-1] == (
        "summary: inputs=21 hosts=21 processes=21 threads=125 distinct_stacks=4 outliers=1 "
        "skipped_inputs=0"
    )


def test_merged_json_follows_its_schema(dumps, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    fleet = _fleet(dumps, tmp_path / "out", hosts_a=3, hosts_b=1)
    result = run_stackdump("merge", "--format", "json", str(fleet))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    assert [s["count"] for s in document["stacks"]] == [10, 7, 4, 2]
    assert sum(s["count"] for s in document["stacks"]) == document["summary"]["threads"] == 23
    assert {i["host"] for i in document["inputs"]} == {"host00", "host01", "host02", "host03"}


def test_folded_counts_are_the_sums_of_the_inputs(dumps, tmp_path):
    inputs = []
    for i, key in enumerate("aab"):
        path = tmp_path / f"h{i}.folded"
        path.write_text(dumps[key][1])
        inputs.append(path)
    result = run_stackdump("merge", "--format", "folded", *map(str, inputs))
    assert result.returncode == 0, result.stderr
    expected: Counter = Counter()
    for path in inputs:
        for line in path.read_text().splitlines():
            stack, count = line.rsplit(" ", 1)
            expected[stack] += int(count)
    merged = Counter()
    for line in result.stdout.splitlines():
        stack, count = line.rsplit(" ", 1)
        merged[stack] += int(count)
    assert merged == expected
    # The same from the JSON dumps: folded stacks by name, whatever the input.
    for i, key in enumerate("aab"):
        (tmp_path / f"j{i}.json").write_text(dumps[key][0])
    jsons = [str(tmp_path / f"j{i}.json") for i in range(3)]
    from_json = run_stackdump("merge", "--format", "folded", *jsons)
    assert Counter(dict(line.rsplit(" ", 1) for line in from_json.stdout.splitlines())) == Counter(
        {stack: str(count) for stack, count in expected.items()}
    )


def test_go_tool_pprof_reads_the_merge_with_a_host_label(dumps, tmp_path):
    go = need_tool("go", "golang-go")
    fleet = _fleet(dumps, tmp_path / "out", hosts_a=2, hosts_b=1)
    out = tmp_path / "merged.pb.gz"
    result = run_stackdump("merge", "--format", "pprof", "-o", str(out), str(fleet))
    assert result.returncode == 0, result.stderr
    gzip.decompress(out.read_bytes())  # a gzip file
    env = {**os.environ, "HOME": str(tmp_path), "GOCACHE": str(tmp_path / "gocache")}
    raw = subprocess.run(
        [go, "tool", "pprof", "-raw", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert raw.returncode == 0, raw.stderr
    per_host: Counter = Counter()
    for count, host in re.findall(r"^\s+(\d+): [\d ]+\n\s+host:\[(\w+)\]", raw.stdout, re.M):
        per_host[host] += int(count)
    assert per_host == {"host00": 6, "host01": 6, "host02": 5}, raw.stdout
    top = subprocess.run(
        [go, "tool", "pprof", "-top", "-tagfocus=host=host02", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert top.returncode == 0, top.stderr
    assert "sleep_forever" in top.stdout and "of 17 total" in top.stdout, top.stdout


def test_diff_ranks_what_grew_per_process(dumps, tmp_path):
    healthy = _fleet(dumps, tmp_path / "healthy", hosts_a=4, hosts_b=0)
    sick = tmp_path / "sick.json"
    document = json.loads(dumps["b"][0])
    document["header"]["host"] = "sick"
    sick.write_text(json.dumps(document))
    result = run_stackdump("diff", str(healthy), str(sick))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("----- ")]
    # Per process: cond 3 -> 1 (-2), sleep 0 -> 2 (+2, new), read 2 -> 1 (-1); main 1 -> 1.
    assert lines[0].startswith("----- -2.0 threads per process: 3.0 -> 1.0 shrank")
    assert lines[1].startswith("----- +2.0 threads per process: 0.0 -> 2.0 new (before none")
    assert lines[2].startswith("----- -1.0 threads per process: 2.0 -> 1.0 shrank")
    assert "(before x8 on 4 hosts, after x1 on 1 host; threads-O2 x1)" in lines[2]
    assert len(lines) == 3
    assert result.stdout.splitlines()[0:3] == [
        "stackdump diff",
        "before: inputs=4 hosts=4 processes=4 threads=24",
        "after: inputs=1 hosts=1 processes=1 threads=5",
    ]
    assert result.stdout.splitlines()[-1] == "summary: grew=1 shrank=2 new=1 gone=0 unchanged=1"
    jsonschema = pytest.importorskip("jsonschema")
    as_json = run_stackdump("diff", "--format", "json", str(healthy), str(sick))
    document = json.loads(as_json.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    assert [c["delta_per_process"] for c in document["changes"]][2] == -1.0


def _bad_inputs(dumps, directory: Path):
    directory.mkdir()
    good = directory / "good.json"
    good.write_text(dumps["a"][0])
    text = dumps["a"][0]
    cases = {
        "truncated.json": (text[: len(text) // 2], "truncated JSON"),
        # Cut inside a string, and between a key and its value.
        "cut-string.json": (text[: text.index('"threads"') + 4], "truncated JSON"),
        "cut-value.json": (text[: text.index('"threads"') + 11], "truncated JSON"),
        "schema2.json": (text.replace('"schema": 1', '"schema": 2', 1), "a dump of schema 2"),
        "notjson.json": ("{this is not json}\n", "not JSON: "),
        "other.json": ('{"hello": 1}\n', 'JSON, but not a stackdump dump (no "schema" key)'),
        "empty.json": ("", "empty"),
        "garbage.folded": ("one two three\n", "line 1 is not 'NAME;FRAME;... COUNT'"),
        "binary.pb": ("\udcff\udcfe\x00\x01", "neither a JSON dump nor folded stacks (binary"),
    }
    for name, (content, _) in cases.items():
        (directory / name).write_bytes(content.encode("utf-8", "surrogateescape"))
    cases["bad.json.gz"] = ("", "gzip data that cannot be inflated")
    (directory / "bad.json.gz").write_bytes(b"\x1f\x8b" + b"not deflate data" * 4)
    fifo = directory / "fifo.json"
    os.mkfifo(fifo)
    cases["fifo.json"] = ("", "not a regular file")
    return good, {directory / name: why for name, (_, why) in cases.items()}


def test_a_bad_input_is_named_and_stops_the_merge(dumps, tmp_path):
    good, bad = _bad_inputs(dumps, tmp_path / "in")
    for path, why in bad.items():
        result = run_stackdump("merge", str(good), str(path))
        assert result.returncode == 2, (path, result.stderr)
        assert result.stdout == ""
        assert f'stackdump: error: "{path}": {why}' in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_gzipped_dumps_merge_like_plain_ones(dumps, tmp_path):
    plain, packed = tmp_path / "h1.json", tmp_path / "h2.json.gz"
    plain.write_text(dumps["a"][0])
    packed.write_bytes(gzip.compress(dumps["a"][0].encode()))
    result = run_stackdump("merge", str(plain), str(packed))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(
        "summary: inputs=2 hosts=1 processes=2 threads=12 "
    )


def test_keep_going_merges_the_rest(dumps, tmp_path):
    good, bad = _bad_inputs(dumps, tmp_path / "in")
    result = run_stackdump("merge", "--keep-going", str(good), *map(str, bad))
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[-1].endswith(f"skipped_inputs={len(bad)}")
    assert "threads=6" in result.stdout.splitlines()[-1]
    for path, why in bad.items():
        assert f'warning: skipped "{path}": {why}' in result.stderr
    nothing = run_stackdump("merge", "--keep-going", *map(str, bad))
    assert nothing.returncode == 2 and "no input could be read" in nothing.stderr


def test_merge_usage_errors():
    assert run_stackdump("merge").returncode == 2
    result = run_stackdump("merge", "--format", "speedscope", "x.json")
    assert result.returncode == 2
    assert "invalid format: speedscope, expected one of text, json, folded, pprof, flamegraph" in (
        result.stderr
    )
    result = run_stackdump("diff", "--format", "pprof", "a", "b")
    assert result.returncode == 2 and "expected one of text, json" in result.stderr
    # The dump itself is as before: its options, its messages.
    assert "invalid pid: 0" in run_stackdump("-p", "0").stderr


def test_a_dump_cut_anywhere_is_called_truncated(tmp_path):
    """A JSON dump cut at any byte (a copy that did not finish) is named truncated, not
    malformed; one with a byte too many is not."""
    from stackdump.merge import BadInput, read_input

    text = json.dumps(
        {
            "schema": 1,
            "header": {"pid": 7, "host": None, "exe": "/bin/x", "flag": True, "none": None},
            "threads": [{"tid": 7, "name": "x\\\\y", "status": "ok", "frames": []}],
        },
        indent=1,
    )
    path = tmp_path / "cut.json"
    for cut in range(1, len(text.rstrip())):
        if not text[:cut].strip():
            continue
        path.write_text(text[:cut])
        with pytest.raises(BadInput) as e:
            read_input(str(path))
        assert e.value.why.startswith("truncated JSON"), (cut, text[:cut][-20:], e.value.why)
    path.write_text(text + "}")
    with pytest.raises(BadInput) as e:
        read_input(str(path))
    assert e.value.why.startswith("not JSON: Extra data")


def test_a_dump_as_written_reads_like_one_parsed_whole(dumps, tmp_path):
    """The fast reading of stackdump's own layout (a thread per line, each stack's frames
    parsed once) gives what parsing the whole document gives; another layout (jq's indented
    one) takes the slow path to the same answer."""
    from stackdump import merge

    for key in "ab":
        text = dumps[key][0]
        written = merge._as_written(text.encode())
        assert written is not None
        document = json.loads(text)
        assert written[1] == merge._members(document["threads"], merge.THREAD)
        assert written[0]["header"] == document["header"]
        assert merge._as_written(json.dumps(document, indent=2).encode()) is None
        fast = tmp_path / f"{key}.json"
        fast.write_text(text)
        slow = tmp_path / f"{key}-indented.json"
        slow.write_text(json.dumps(document, indent=2))
        assert merge.read_input(str(fast)).members == merge.read_input(str(slow)).members
