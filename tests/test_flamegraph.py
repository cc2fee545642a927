"""`--format flamegraph` in a real browser (Debian's headless chromium): the page of a dump, a
profile and a merge loads without errors, holds every stack of the same dump's folded output
with widths in proportion to its counts, and a click on a frame zooms into it. A name from the
target is text on the page, never markup."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from conftest import ON_CI
from helpers import Target, run_stackdump

# Runs first in the page's <head>: collects errors, then after load reads every frame's
# geometry, clicks the frame named ZOOM, reads them again, and writes it all into the page.
_PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
window.addEventListener("load", function () {
  function cells() {
    return Array.from(document.querySelectorAll("#graph .f")).map(function (d) {
      return {n: d.textContent, l: parseFloat(d.style.left), w: parseFloat(d.style.width),
              d: +d.dataset.depth, dim: d.classList.contains("dim"), v: +d.dataset.value};
    });
  }
  var before = cells();
  var target = Array.from(document.querySelectorAll("#graph .f"))
    .find(function (d) { return d.textContent === ZOOM; });
  if (target) target.dispatchEvent(new MouseEvent("click", {bubbles: true}));
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({errors: window.__errors, before: before, after: cells(),
                                    title: document.getElementById("title").textContent});
  document.body.appendChild(pre);
});
</script>"""


def _unavailable(why: str) -> None:
    if ON_CI:
        pytest.fail(why)
    pytest.skip(why)


def _render(page: str, zoom: str, tmp_path: Path) -> dict:
    chromium = shutil.which("chromium")
    if chromium is None:
        _unavailable("chromium is needed to load the page (apt install chromium)")
    probe = _PROBE.replace("ZOOM", json.dumps(zoom).replace("</", "<\\/"))
    path = tmp_path / "page.html"
    path.write_text(page.replace("<head>", "<head>" + probe, 1))
    dom = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
            "--dump-dom", path.as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


def _paths(cells: List[dict]) -> Dict[Tuple[str, ...], float]:
    """Each drawn frame's path from the root (by containment one row down) -> its width."""
    by_depth: Dict[int, List[dict]] = {}
    for c in cells:
        by_depth.setdefault(c["d"], []).append(c)
    paths: Dict[int, Tuple[str, ...]] = {}
    out: Dict[Tuple[str, ...], float] = {}
    for depth in sorted(by_depth):
        for c in by_depth[depth]:
            parent = next(
                (
                    p for p in by_depth.get(depth - 1, [])
                    if p["l"] - 1e-6 <= c["l"] and c["l"] + c["w"] <= p["l"] + p["w"] + 1e-6
                ),
                None,
            )  # fmt: skip
            path = (*(paths[id(parent)] if parent is not None else ()), c["n"])
            paths[id(c)] = path
            out[path] = c["w"]
    return out


def _expected(folded: str) -> Dict[Tuple[str, ...], float]:
    """Every prefix of every folded stack -> its share of the total, in percent."""
    counts: Counter = Counter()
    total = 0
    for line in folded.splitlines():
        stack, count = line.rsplit(" ", 1)
        parts = ("all", *stack.split(";"))
        total += int(count)
        for i in range(1, len(parts) + 1):
            counts[parts[:i]] += int(count)
    return {path: 100.0 * n / total for path, n in counts.items()}


@pytest.fixture(scope="module")
def target(live, threads_bin):
    with Target(threads_bin("O2"), {"read": 2, "cond": 3, "sleep": 1}).wait_ready() as running:
        yield running


def test_a_dump_page_holds_every_stack_and_zooms(target, tmp_path):
    page = run_stackdump("-p", str(target.pid), "--format", "flamegraph")
    assert page.returncode == 0, page.stderr
    folded = run_stackdump("-p", str(target.pid), "--format", "folded")
    shown = _render(page.stdout, "cond_main", tmp_path)
    assert shown["errors"] == []
    assert shown["title"].startswith("stackdump: ") and f"(pid {target.pid})" in shown["title"]
    drawn = _paths(shown["before"])
    expected = _expected(folded.stdout)
    assert set(drawn) == set(expected)
    for path, share in expected.items():
        assert drawn[path] == pytest.approx(share, abs=1e-3), path  # CSS keeps 4 decimals
    # After the click: cond_main spans the page, the frames below it are dimmed, and what it
    # calls fills it in proportion.
    after = shown["after"]
    zoomed = next(c for c in after if c["n"] == "cond_main" and not c["dim"])
    assert (zoomed["l"], zoomed["w"]) == (0, 100)
    below = [c for c in after if c["d"] < zoomed["d"]]
    assert below and all(c["dim"] and c["w"] == 100 for c in below)
    assert all(c["n"] != "read_main" for c in after)
    assert all(c["w"] == pytest.approx(100) for c in after if c["d"] > zoomed["d"])


def test_a_profile_page_loads(target, tmp_path):
    page = run_stackdump(
        "-p", str(target.pid), "--samples", "3", "--interval-ms", "10", "--format", "flamegraph"
    )
    assert page.returncode == 0, page.stderr
    shown = _render(page.stdout, "sleep_main", tmp_path)
    assert shown["errors"] == []
    root = next(c for c in shown["before"] if c["n"] == "all")
    assert root["v"] == 3 * 7  # three samples of seven threads
    zoomed = next(c for c in shown["after"] if c["n"] == "sleep_main" and not c["dim"])
    assert zoomed["w"] == 100 and zoomed["v"] == 3


def test_a_merge_page_keeps_names_as_text(tmp_path):
    hostile = '</script><script>window.__errors.push("injected")</script><b>x'
    folded = tmp_path / "host1.folded"
    folded.write_text(f"worker;main;{hostile} 3\nworker;main;other 1\n")
    page = run_stackdump("merge", "--format", "flamegraph", str(folded))
    assert page.returncode == 0, page.stderr
    assert "</script><script>window.__errors" not in page.stdout  # escaped as <\\/script>
    shown = _render(page.stdout, hostile, tmp_path)
    assert shown["errors"] == []
    names = {c["n"]: c["w"] for c in shown["before"]}
    assert names[hostile] == pytest.approx(75.0)
    assert names["other"] == pytest.approx(25.0)
    assert shown["title"] == "stackdump merge: 1 inputs, 1 hosts, 4 threads"
