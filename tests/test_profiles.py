"""Issue 16: profiles over time, checked by the programs that read them: `go tool pprof`
(golang-go from Debian) for pprof, speedscope's published file-format schema (from its npm
package) for speedscope, and the Trace Event Format's rules for chrome-trace."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import ON_CI
from helpers import Target, compile_target, read_syscall_line, run_stackdump, thread_states

CACHE = Path(os.environ.get("STACKDUMP_TEST_CACHE", Path.home() / ".cache" / "stackdump-tests"))
SPEEDSCOPE_NPM = "speedscope@1.25.0"


def _unavailable(reason: str) -> None:
    if ON_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def _ok(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def spinner(live, threads_bin):
    with Target(threads_bin("O2"), {"spin": 1, "sleep": 3, "read": 2}).wait_ready() as target:
        yield target


def _sections(text: str):
    """[(count, state, first function)] of a text profile."""
    found = re.findall(
        r"^----- [\d.]+% (\d+) samples \(.*\) state=(\w+) frames=\d+ -----\n    0#  (\S+)",
        text,
        re.M,
    )
    return [(int(count), state, function) for count, state, function in found]


def test_spinner_dominates_running_samples_and_blocked_excludes_it(spinner):
    pid = str(spinner.pid)
    text = _ok(run_stackdump("-p", pid, "--samples", "20", "--interval-ms", "50"))
    assert "\nsamples: 20\n" in text and "\ninterval_ms: 50\n" in text
    sections = _sections(text)
    running = [s for s in sections if s[1] == "running"]
    assert running and sum(c for c, *_ in running) >= 18
    spin_running = sum(c for c, _, f in running if f == "leaf")
    assert spin_running >= 0.9 * sum(c for c, *_ in running)
    # 20 samples of 7 threads
    assert sum(c for c, *_ in sections) == 20 * 7
    blocked = _ok(
        run_stackdump("-p", pid, "--samples", "5", "--interval-ms", "20", "--state", "blocked")
    )
    assert "leaf" not in blocked and "\nstate: blocked\n" in blocked
    assert all(state == "blocked" for _, state, _ in _sections(blocked))


def test_pprof_read_by_go_tool_pprof(spinner, tmp_path):
    go = shutil.which("go")
    if go is None:
        _unavailable("go tool pprof is needed (apt install golang-go)")
    out = tmp_path / "cpu.pb.gz"
    pid = str(spinner.pid)
    _ok(
        run_stackdump(
            "-p", pid, "--samples", "6", "--interval-ms", "20", "-o", str(out), "--format", "pprof"
        )
    )
    folded = _ok(run_stackdump("-p", pid, "--samples", "1", "--format", "folded"))
    raw = _pprof_raw(go, out, tmp_path)
    assert "samples/count wall/nanoseconds" in raw
    samples = re.findall(r"^\s+(\d+)\s+(\d+): ([\d ]+)$", raw, re.M)
    assert sum(int(count) for count, *_ in samples) == 6 * 7
    assert all(int(wall) == int(count) * 20_000_000 for count, wall, _ in samples)
    locations = dict(re.findall(r"^\s+(\d+): 0x[0-9a-f]+ M=\d+ (.*)$", raw, re.M))
    named = {line.split(" ")[0] for line in locations.values()}
    for function in ("leaf", "spin_main", "sleep_main", "read_main", "clone3"):
        assert function in named, function
    leaf = next(v for v in locations.values() if v.startswith("leaf "))
    assert re.fullmatch(r"leaf \S*threads\.c:\d+ s=0", leaf), leaf
    # Per thread, our folded stacks (one sample) and pprof's samples name the same functions.
    stacks = Counter()
    for count, _, ids in samples:
        names = tuple(locations[i].split(" ")[0] for i in ids.split())
        stacks[tuple(reversed(names))] += int(count)
    ours = Counter()
    for line in folded.splitlines():
        path, count = line.rsplit(" ", 1)
        ours[tuple(path.split(";")[1:])] += int(count) * 6
    assert set(stacks) >= {s for s in ours if "leaf" not in s}


def _pprof_raw(go: str, profile: Path, home: Path) -> str:
    """`go tool pprof -raw` of a profile (its cache in a throwaway HOME)."""
    return subprocess.run(
        [go, "tool", "pprof", "-raw", str(profile)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HOME": str(home)},
    ).stdout


def test_labels_carry_thread_and_state(spinner, tmp_path):
    go = shutil.which("go")
    if go is None:
        _unavailable("go tool pprof is needed (apt install golang-go)")
    out = tmp_path / "p.pb.gz"
    _ok(run_stackdump("-p", str(spinner.pid), "--format", "pprof", "-o", str(out)))
    raw = _pprof_raw(go, out, tmp_path)
    assert f"tid:[{spinner.tid('spin')}]" in raw
    assert "state:[running]" in raw and "state:[blocked]" in raw and "syscall:[read]" in raw


@pytest.fixture(scope="session")
def speedscope_release() -> Path:
    """speedscope's web app and the schema it publishes, from its npm package, once per cache."""
    if shutil.which("npm") is None:
        _unavailable("npm is needed to fetch speedscope")
    where = CACHE / ("npm-" + SPEEDSCOPE_NPM.replace("@", "-"))
    release = where / "package" / "dist" / "release"
    if not (release / "index.html").exists():
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["npm", "pack", SPEEDSCOPE_NPM], cwd=where, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            _unavailable(f"npm pack {SPEEDSCOPE_NPM} failed: {done.stderr[-300:]}")
        with tarfile.open(next(where.glob("speedscope-*.tgz"))) as archive:
            for member in archive.getmembers():
                # Only plain files under package/: nothing outside `where`, no links.
                if (
                    member.isfile()
                    and member.name.startswith("package/")
                    and ".." not in member.name
                ):
                    target = where / member.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.extractfile(member).read())
    return release


@pytest.fixture(scope="session")
def speedscope_schema(speedscope_release) -> dict:
    return json.loads((speedscope_release / "file-format-schema.json").read_text())


def test_speedscope_validates_against_its_schema(spinner, speedscope_schema):
    jsonschema = pytest.importorskip("jsonschema")
    text = _ok(
        run_stackdump(
            "-p",
            str(spinner.pid),
            "--samples",
            "4",
            "--interval-ms",
            "20",
            "--format",
            "speedscope",
        )
    )
    document = json.loads(text)
    jsonschema.Draft7Validator(speedscope_schema).validate(document)
    assert len(document["profiles"]) == 7
    spin = next(p for p in document["profiles"] if p["name"].endswith(f"({spinner.tid('spin')})"))
    frames = document["shared"]["frames"]
    assert len(spin["samples"]) == 4
    assert frames[spin["samples"][0][-1]]["name"] == "leaf"  # innermost last
    assert frames[spin["samples"][0][0]]["name"] == "clone3"


def _load_in_speedscope(release: Path, document: str, name: str, tmp_path: Path) -> str:
    """The DOM of speedscope's own page after it imported `document` (served, with the app,
    from 127.0.0.1), rendered by Debian's headless chromium."""
    import functools
    import http.server
    import threading

    chromium = shutil.which("chromium")
    if chromium is None:
        _unavailable("chromium is needed to load the file in speedscope (apt install chromium)")
    site = tmp_path / "site"
    shutil.copytree(release, site)
    (site / name).write_text(document)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        url = f"{base}/index.html#profileURL={base}/{name}"
        return subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("fmt", ["chrome-trace", "speedscope"])
def test_speedscope_imports_it(spinner, speedscope_release, tmp_path, fmt):
    """speedscope's own importer (its Chrome-trace and file-format readers) opens the file:
    the page takes the file's name, and lists one profile per thread."""
    text = _ok(
        run_stackdump(
            "-p", str(spinner.pid), "--samples", "3", "--interval-ms", "20", "--format", fmt
        )
    )
    dom = _load_in_speedscope(speedscope_release, text, f"stacks-{fmt}.json", tmp_path)
    # speedscope names the page after the document's own name where it has one
    title = (
        f"stackdump -p {spinner.pid}: 3 samples" if fmt == "speedscope" else f"stacks-{fmt}.json"
    )
    assert f"<title>{title} - speedscope</title>" in dom, dom[:600]
    assert "(1/7)" in dom, dom[:2000]


def test_chrome_trace_follows_the_trace_event_format(spinner):
    text = _ok(
        run_stackdump(
            "-p",
            str(spinner.pid),
            "--samples",
            "3",
            "--interval-ms",
            "30",
            "--format",
            "chrome-trace",
        )
    )
    events = json.loads(text)["traceEvents"]
    names = {
        e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"
    }
    slices = [e for e in events if e["ph"] == "X"]
    assert len(names) == 7 and len(slices) == 3 * 7
    for e in slices:
        assert e["pid"] == spinner.pid and e["tid"] in names
        assert isinstance(e["ts"], (int, float)) and e["dur"] == 30_000
        assert e["name"] == e["args"]["stack"][-1]
    per_thread = Counter(e["tid"] for e in slices)
    assert set(per_thread.values()) == {3}
    spin = [e for e in slices if e["tid"] == spinner.tid("spin")]
    assert [e["ts"] for e in spin] == sorted(e["ts"] for e in spin)
    assert all(e["args"]["state"] == "running" for e in spin)


def _wait_sampling(proc: subprocess.Popen, binary: Path) -> None:
    """Until stackdump has begun sampling: it holds the target's mapped files open (pinned
    by the first capture, and kept while the maps stay the same)."""

    def sampling() -> bool:
        try:
            fds = os.listdir(f"/proc/{proc.pid}/fd")
        except OSError:
            return True  # it has ended: what it says will tell
        for fd in fds:
            try:
                if os.readlink(f"/proc/{proc.pid}/fd/{fd}") == str(binary):
                    return True
            except OSError:
                pass
        return False

    deadline = time.monotonic() + 30
    while not sampling():
        assert time.monotonic() < deadline, "stackdump never began sampling"
        os.sched_yield()


def _sampling(pid: int, out: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "stackdump", "-p", str(pid), "--samples", "100000"]
    if "--interval-ms" not in extra:
        argv += ["--interval-ms", "10"]
    argv += ["-o", str(out), *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_target_that_exits_unreaped_mid_profile_keeps_the_samples(live, threads_bin, tmp_path):
    """The target is killed between samples and its parent (this test) does not reap it: a
    zombie, which a dump refuses. The profile of the samples before is written all the
    same (it was thrown away with a "zombie" error before)."""
    out = tmp_path / "profile.txt"
    binary = threads_bin("O2")
    with Target(binary, {"read": 2}).wait_ready() as target:
        proc = _sampling(target.pid, out)
        _wait_sampling(proc, binary)
        target.proc.send_signal(signal.SIGKILL)  # not waited for: a zombie until kill()
        _, err = proc.communicate(timeout=60)
        state = Path(f"/proc/{target.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    assert state == "Z"  # it was a zombie while stackdump looked
    assert proc.returncode == 1, err
    assert re.search(rf"process {target.pid} exited (after|during) (sample )?\d+", err), err
    assert "the profile covers the samples taken before" in err
    taken = int(re.search(r"^samples: (\d+)$", out.read_text(), re.M).group(1))
    assert taken >= 1


def test_a_thread_that_timed_out_is_released_when_it_stops_mid_profile(live, threads_bin, tmp_path):
    """A thread in vfork() cannot stop: each sample's stop times out and leaves it seized,
    its interrupt pending (the kernel cannot cancel one). When its vfork child dies, it
    reaches that stop; stackdump must let it go at once, not hold it stopped until sampling
    ends (before, it stayed in `t` for the rest of the profile)."""
    out = tmp_path / "profile.txt"
    with Target(threads_bin("O2"), {"vfork": 1, "read": 1}).wait_ready() as target:
        stuck = target.tid("vfork")
        child = int(Path(f"/proc/{target.pid}/task/{stuck}/children").read_text().split()[0])
        proc = _sampling(target.pid, out, "--timeout-ms", "1", "--interval-ms", "50")
        try:
            _wait_sampling(proc, threads_bin("O2"))
            # Seized by stackdump while it sleeps between samples: a stop has timed out and
            # left the thread seized, its interrupt pending.
            deadline = time.monotonic() + 30
            while not (
                thread_states(target.pid).get(stuck, ("", 0))[1] == proc.pid and _sleeping(proc.pid)
            ):
                assert time.monotonic() < deadline and proc.poll() is None, "never left seized"
                os.sched_yield()
            os.kill(child, signal.SIGKILL)
            # Freed from vfork, the thread stops at the pending interrupt, is released, reaps
            # its child and exits: its task goes away while stackdump samples on.
            deadline = time.monotonic() + 10
            while stuck in (states := thread_states(target.pid)):
                state = states[stuck][0]
                assert time.monotonic() < deadline, f"the thread stayed in state {state}"
                os.sched_yield()
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "interrupted by SIGINT" in err
    assert re.search(r"^samples: \d+$", out.read_text(), re.M)


# time.sleep's system calls: clock_nanosleep, nanosleep.
_SLEEP_CALLS = {"x86_64": {"230", "35"}, "aarch64": {"115", "101"}}[platform.machine()]


def _sleeping(pid: int) -> bool:
    """Whether a process's main thread is in time.sleep."""
    line = read_syscall_line(pid, pid)
    return bool(line) and line.split()[0] in _SLEEP_CALLS


def test_a_target_that_becomes_another_program_ends_the_profile(live, build_dir, tmp_path):
    """exec_midway execs itself once a thread is stopped: the samples after would be of
    another program. Sampling ends there, keeping those before, and says why."""
    binary = compile_target("exec_midway.c", build_dir, "exec_midway", ["-O1", "-g"])
    out = tmp_path / "profile.txt"
    with Target(binary, {"busy": 2}).wait_ready() as target:
        proc = _sampling(target.pid, out, "--mode", "fast")
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    pattern = rf"process {target.pid} runs another program than at the first sample .* after \d+"
    assert re.search(pattern, err), err
    text = out.read_text()
    taken = int(re.search(r"^samples: (\d+)$", text, re.M).group(1))
    assert 1 <= taken < 100000
    assert "exec_midway" in text


def test_signal_during_sampling_writes_a_shorter_valid_profile(spinner, threads_bin, tmp_path):
    out = tmp_path / "short.txt"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stackdump",
            "-p",
            str(spinner.pid),
            "--samples",
            "1000",
            "--interval-ms",
            "20",
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_sampling(proc, threads_bin("O2"))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "interrupted by SIGINT: the profile covers the" in err
    text = out.read_text()
    taken = int(re.search(r"^samples: (\d+)$", text, re.M).group(1))
    assert 1 <= taken < 1000
    summary = rf"^summary: samples={taken} thread_samples={taken * 7} .* interrupted=1$"
    assert re.search(summary, text, re.M), text[-300:]


def test_sampling_a_process_whose_threads_come_and_go(live, build_dir):
    """Threads born and dying between (and during) samples are counted where they were
    captured; the profile is whole and every thread-sample has a stack."""
    from helpers import churning

    with churning(build_dir) as (churn, _):
        text = _ok(run_stackdump("-p", str(churn.pid), "--samples", "15", "--interval-ms", "20"))
    assert re.search(
        r"^summary: samples=15 thread_samples=\d+ distinct_stacks=\d+ interrupted=0$", text, re.M
    )
    counts = [c for c, _, _ in _sections(text)]
    total = int(re.search(r"thread_samples=(\d+)", text).group(1))
    assert sum(counts) == total and total >= 15


def test_runs_keep_every_thread_sample_and_merge_only_alike_ones_in_a_row():
    """`profiles.Runs` against the thread-samples it was given, one by one: a thread's run
    grows only with the next sample and the same kind; a gap (a sample without the thread),
    another kind, or the kind coming back later starts a new run."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from stackdump.profiles import Runs

    kinds = [(tid, stack, "blocked", None, None, ()) for tid in (1, 2) for stack in (0, 1)]

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.lists(st.sampled_from(kinds), max_size=4, unique_by=lambda k: k[0])))
    def check(samples):
        runs = Runs()
        for index, sample in enumerate(samples):
            for kind in sample:
                runs.add(index, kind)
        given_ = sorted((index, kind) for index, sample in enumerate(samples) for kind in sample)
        kept = sorted(
            (r.sample + k, (r.tid, r.stack, r.state, r.syscall, r.wchan, r.labels))
            for r in runs
            for k in range(r.count)
        )
        assert kept == given_
        assert runs.thread_samples == len(given_)
        ends = {}
        for r in runs:  # in the order each began; a thread's runs never touch alike
            kind = (r.tid, r.stack)
            previous = ends.get(r.tid)
            assert previous is None or previous[0] <= r.sample
            assert previous is None or previous != (r.sample, kind)
            ends[r.tid] = (r.sample + r.count, kind)

    check()
