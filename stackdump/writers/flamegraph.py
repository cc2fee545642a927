"""`--format flamegraph`: one self-contained HTML page (no network, no other tool) drawing a
flame graph of a dump, a profile or a merge: click a frame to zoom into it, search to
highlight, hover for counts and file:line, colour by object or by on/off-CPU state
(docs/FORMAT.md "Flame graphs"). The stacks go in as JSON; every name is put on the page as
text (`textContent`), never as markup, so a name from the target cannot inject any.
"""

from __future__ import annotations

import html
import json
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from stackdump.escape import escape
from stackdump.profiles import RUNNING, Profile
from stackdump.types import Report, SymbolizedFrame
from stackdump.views import frame_label

# A frame on the page: (name, "file:line" or "", object or "").
Cell = Tuple[str, str, str]
# A stack, outermost first, its count and how many of them were on a CPU (None: unknown).
Weighted = Tuple[Tuple[Cell, ...], int, Optional[int]]


def cells(frames: Iterable[SymbolizedFrame]) -> Tuple[Cell, ...]:
    """Frames innermost first -> cells outermost first, inlined functions included."""
    out: List[Cell] = []
    for f in frames:
        obj = escape(f.module) if f.module else ""
        for call in f.inlined:
            where = f"{escape(call.file)}:{call.line}" if call.file and call.line else ""
            out.append((escape(call.function or frame_label(f)), where, obj))
        where = f"{escape(f.file)}:{f.line}" if f.file and f.line else ""
        out.append((escape(frame_label(f)), where, obj))
    return tuple(reversed(out))


def tree(stacks: Iterable[Weighted]) -> Dict[str, Any]:
    """The stacks merged from the root by name: each node `n` (name), `v` (count), `r` (on a
    CPU, or -1 when unknown), `w` (file:line), `o` (object), `c` (children)."""
    root: Dict[str, Any] = {"n": "all", "v": 0, "r": 0, "w": "", "o": "", "c": []}
    index: Dict[int, Dict[str, Dict[str, Any]]] = {}
    for frames, count, running in stacks:
        node = root
        for name, where, obj in frames:
            _add(node, count, running)
            children = index.setdefault(id(node), {})
            child = children.get(name)
            if child is None:
                child = {"n": name, "v": 0, "r": 0, "w": where, "o": obj, "c": []}
                children[name] = child
                node["c"].append(child)
            node = child
        _add(node, count, running)
    return root


def _add(node: Dict[str, Any], count: int, running: Optional[int]) -> None:
    node["v"] += count
    if running is None or node["r"] < 0:
        node["r"] = -1
    else:
        node["r"] += running


def page(title: str, root: Dict[str, Any], unit: str) -> str:
    data = json.dumps({"title": title, "unit": unit, "root": root}, ensure_ascii=True)
    data = data.replace("</", "<\\/")  # no name can close the script element
    return _PAGE.replace("{{TITLE}}", html.escape(title)).replace("{{DATA}}", data)


def dump_stacks(report: Report) -> Iterator[Weighted]:
    for t in (*report.threads, *(report.coroutines or ())):
        if not t.frames:
            continue
        running = 1 if t.context is not None and t.context.state == "R" else 0
        who = escape(t.coroutine or t.name)
        yield ((who, "", ""), *cells(t.frames)), 1, running


def profile_stacks(profile: Profile) -> Iterator[Weighted]:
    made = [cells(stack) for stack in profile.stacks]
    counts: Dict[Tuple[int, int, str], int] = {}
    for r in profile.runs:
        key = (r.tid, r.stack, r.state)
        counts[key] = counts.get(key, 0) + r.count
    for (tid, stack, state), count in counts.items():
        who = escape(profile.names.get(tid, "?"))
        yield ((who, "", ""), *made[stack]), count, count if state == RUNNING else 0


def merge_stacks(merged) -> Iterator[Weighted]:
    """A `merge.Merged`'s stacks, by thread name (its inputs' text is escaped already)."""
    for (kind, frames), tally in merged.ranked():
        outer_first = tuple((f[0], f"{f[1]}:{f[2]}" if f[1] and f[2] else "", f[3] or "")
                            for f in reversed(frames))  # fmt: skip
        for name, count in tally.names.items():
            yield ((name if kind == "thread" else kind, "", ""), *outer_first), count, None


def flame_dump(report: Report, view) -> Iterator[str]:
    h = report.header
    title = f"stackdump: {escape(h.exe)} (pid {h.pid}), {len(report.threads)} threads"
    yield page(title, tree(dump_stacks(report)), "threads")


def flame_profile(profile: Profile, view) -> Iterator[str]:
    h = profile.header
    title = (
        f"stackdump profile: {escape(h.exe)} (pid {h.pid}), {profile.samples_taken} samples "
        f"{profile.interval_ms} ms apart"
    )
    yield page(title, tree(profile_stacks(profile)), "samples")


def flame_merge(merged, view) -> Iterator[str]:
    title = (
        f"stackdump merge: {len(merged.inputs)} inputs, {len(merged.hosts)} hosts, "
        f"{merged.members()} threads"
    )
    yield page(title, tree(merge_stacks(merged)), "threads")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{TITLE}}</title>
<style>
body{margin:0;font:12px sans-serif;color:#222;background:#fff}
#bar{padding:6px 8px;display:flex;gap:8px;align-items:center;border-bottom:1px solid #ddd;
flex-wrap:wrap}
#title{font-weight:bold}
#graph{position:relative;margin:4px 8px;overflow:hidden}
.f{position:absolute;height:16px;box-sizing:border-box;border:1px solid #fff;overflow:hidden;
white-space:nowrap;text-overflow:ellipsis;padding:0 2px;line-height:14px;cursor:pointer}
.f.m{background:#e040fb!important}
.f.dim{opacity:.45}
#tip{position:fixed;display:none;background:#ffe;border:1px solid #aaa;padding:4px 6px;
max-width:60em;pointer-events:none;white-space:pre-wrap;z-index:2}
</style></head><body>
<div id="bar"><span id="title"></span>
<button id="reset" type="button">Reset zoom</button>
<label>Colour <select id="colour"><option value="object">by object</option>
<option value="state">by state (on/off CPU)</option></select></label>
<input id="search" type="search" placeholder="Search (regex)" size="30">
<span id="matched"></span></div>
<div id="graph"></div><div id="tip"></div>
<script id="flame-data" type="application/json">{{DATA}}</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("flame-data").textContent);
const ROOT = DATA.root, ROW = 17;
const graph = document.getElementById("graph"), tip = document.getElementById("tip");
let zoomed = ROOT, pattern = null;
function depthOf(n) { let d = 0; for (const c of n.c) d = Math.max(d, depthOf(c)); return d + 1; }
const DEPTH = depthOf(ROOT);
function parents(n, path) {
  if (n === zoomed) return path;
  for (const c of n.c) { const p = parents(c, path.concat([n])); if (p) return p; }
  return null;
}
function hue(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return h;
}
function colour(n) {
  if (document.getElementById("colour").value === "state") {
    if (n.r < 0) return "hsl(0,0%,80%)";
    const on = n.v ? n.r / n.v : 0;
    return "hsl(" + Math.round(220 - 220 * on) + ",70%," + Math.round(70 - 10 * on) + "%)";
  }
  const h = hue(n.o || n.n);
  return "hsl(" + (20 + h % 40) + "," + (60 + h % 30) + "%," + (55 + h % 20) + "%)";
}
function cell(n, x, width, depth, dim) {
  const d = document.createElement("div");
  d.className = "f" + (dim ? " dim" : "") + (pattern && pattern.test(n.n) ? " m" : "");
  d.style.left = x + "%"; d.style.width = width + "%";
  d.style.top = ((DEPTH - 1 - depth) * ROW) + "px";
  d.style.background = colour(n);
  d.textContent = n.n;
  d.dataset.value = n.v; d.dataset.depth = depth; d.dataset.name = n.n;
  d.addEventListener("click", function (e) { e.stopPropagation(); zoom(n); });
  d.addEventListener("mousemove", function (e) { show(e, n); });
  d.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  graph.appendChild(d);
}
function draw() {
  graph.textContent = "";
  graph.style.height = (DEPTH * ROW) + "px";
  const above = parents(ROOT, []) || [];
  above.forEach(function (n, depth) { cell(n, 0, 100, depth, true); });
  (function place(n, x, width, depth) {
    cell(n, x, width, depth, false);
    let at = x;
    for (const c of n.c) {
      const w = n.v ? width * c.v / n.v : 0;
      place(c, at, w, depth + 1);
      at += w;
    }
  })(zoomed, 0, 100, above.length);
  matched();
}
function show(e, n) {
  const share = ROOT.v ? (100 * n.v / ROOT.v).toFixed(2) : "0";
  let text = n.n + "\\n" + n.v + " " + DATA.unit + " (" + share + "%)";
  if (n.r >= 0) text += ", " + n.r + " on a CPU";
  if (n.w) text += "\\nat " + n.w;
  if (n.o) text += "\\nin " + n.o;
  tip.textContent = text;
  tip.style.display = "block";
  tip.style.left = Math.min(e.clientX + 12, window.innerWidth - 300) + "px";
  tip.style.top = (e.clientY + 12) + "px";
}
function matched() {
  const out = document.getElementById("matched");
  if (!pattern) { out.textContent = ""; return; }
  let total = 0;
  (function walk(n) { if (pattern.test(n.n)) { total += n.v; return; } n.c.forEach(walk); })(ROOT);
  out.textContent = "matched " + total + " of " + ROOT.v + " " + DATA.unit +
    " (" + (ROOT.v ? (100 * total / ROOT.v).toFixed(1) : "0") + "%)";
}
function zoom(n) { zoomed = n; draw(); }
document.getElementById("title").textContent = DATA.title;
document.getElementById("reset").addEventListener("click", function () { zoom(ROOT); });
document.getElementById("colour").addEventListener("change", draw);
document.getElementById("search").addEventListener("input", function (e) {
  try {
    pattern = e.target.value ? new RegExp(e.target.value) : null;
  } catch (err) {
    pattern = null;
  }
  draw();
});
draw();
</script></body></html>
"""
