"""``review.html``: the label check's suspects as a gallery in one self-contained page (images inlined, no server,
no network), where a person accepts the suggested label, keeps the given one or drops the image, by click or by key,
and downloads the decisions as ``fixes.csv`` for ``imgclf check DATA --apply``."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Callable

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>imgclf: label review</title>
<style>
body{font-family:system-ui,sans-serif;margin:1em;background:#fafafa}
header{position:sticky;top:0;background:#fafafa;padding:.5em 0;border-bottom:1px solid #ccc}
#grid{display:flex;flex-wrap:wrap;gap:10px;margin-top:1em}
.card{width:170px;background:#fff;border:2px solid #ddd;border-radius:6px;padding:6px;font-size:12px}
.card.current{border-color:#1a73e8}.card.relabel{background:#e6f4ea}.card.drop{background:#fce8e6}
.card.keep{background:#eef}.card img{width:160px;height:160px;object-fit:contain;image-rendering:pixelated;
background:#eee}.card button{font-size:11px;padding:2px 4px}.kind{color:#666}.given{color:#b00}.sugg{color:#070}
</style></head><body>
<header><b>__TITLE__</b><br>
class: <select id="filter"><option value="">all</option></select>
<button id="download">download fixes.csv</button> <span id="count"></span><br>
<small>keys: <b>a</b> accept the suggestion, <b>k</b> keep the label, <b>d</b> drop the image, <b>u</b> undo,
<b>j</b>/<b>l</b> or arrows: previous/next</small></header>
<div id="grid"></div>
<script>
const SUSPECTS = __DATA__;
const CLASSES = __CLASSES__;
const decisions = {};
let current = 0;
const grid = document.getElementById("grid"), filter = document.getElementById("filter");
for (const c of CLASSES) { const o = document.createElement("option"); o.value = o.textContent = c; filter.append(o); }
function visible() { return SUSPECTS.filter(s => !filter.value || s.given === filter.value); }
function csvCell(v) { v = String(v); return /[",\\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
function fixesCsv() {
  const lines = ["path,action,label"];
  for (const s of SUSPECTS) {
    const d = decisions[s.path];
    if (d) lines.push([s.path, d, d === "relabel" ? s.suggested : s.given].map(csvCell).join(","));
  }
  return lines.join("\\n") + "\\n";
}
function decide(i, action) {
  const s = visible()[i]; if (!s) return;
  if (action) decisions[s.path] = action; else delete decisions[s.path];
  render();
}
function render() {
  grid.textContent = "";
  visible().forEach((s, i) => {
    const card = document.createElement("div");
    card.className = "card" + (i === current ? " current" : "") + (decisions[s.path] ? " " + decisions[s.path] : "");
    card.dataset.path = s.path;
    card.innerHTML = (s.img ? '<img alt="" src="data:image/png;base64,' + s.img + '">' : "<div>(unreadable)</div>") +
      '<div class="kind"></div><div class="given"></div><div class="sugg"></div><div class="runner"></div>' +
      '<button data-a="relabel">accept</button> <button data-a="keep">keep</button> <button data-a="drop">drop</button>';
    card.querySelector(".kind").textContent = s.kind + ", quality " + s.quality.toFixed(3);
    card.querySelector(".given").textContent = "given: " + s.given;
    card.querySelector(".sugg").textContent = "suggested: " + s.suggested;
    card.querySelector(".runner").textContent = s.runner_up;
    card.title = s.path;
    card.querySelectorAll("button").forEach(b => b.onclick = () => { current = i; decide(i, b.dataset.a); });
    grid.append(card);
  });
  document.getElementById("count").textContent =
    Object.keys(decisions).length + " decided of " + SUSPECTS.length + " shown" + __MORE__;
}
filter.onchange = () => { current = 0; render(); };
document.addEventListener("keydown", e => {
  if (e.target.tagName === "SELECT" || e.ctrlKey || e.metaKey || e.altKey) return;  // the filter's own keys, shortcuts
  const keys = {a: "relabel", k: "keep", d: "drop"};
  if (e.key in keys) { decide(current, keys[e.key]); current = Math.min(current + 1, visible().length - 1); render(); }
  else if (e.key === "u") decide(current, null);
  else if (e.key === "l" || e.key === "ArrowRight") { current = Math.min(current + 1, visible().length - 1); render(); }
  else if (e.key === "j" || e.key === "ArrowLeft") { current = Math.max(current - 1, 0); render(); }
});
document.getElementById("download").onclick = () => {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([fixesCsv()], {type: "text/csv"}));
  a.download = "fixes.csv"; a.click();
};
render();
</script></body></html>
"""


def write_review(path: Path, rows: list[dict[str, Any]], classes: list[str], png: Callable[[str], bytes | None],
                 total: int) -> None:
    """The review page of ``rows`` (label_issues.csv's, worst first) at ``path``; ``png`` gives each suspect's
    thumbnail, ``total`` how many suspects there are in all (the page may show the worst of them only)."""
    suspects = []
    for row in rows:
        image = png(row["path"])
        suspects.append({"path": row["path"], "given": row["given_label"], "suggested": row["suggested_label"],
                         "quality": row["quality"], "kind": row["kind"], "runner_up": row["runner_up"],
                         "img": base64.b64encode(image).decode("ascii") if image else None})
    more = f' + "; the {total - len(rows)} less doubtful are in label_issues.csv"' if total > len(rows) else '""'
    # JSON inside <script>: "</" written as "<\\/" so that no path can close the script element
    data = json.dumps(suspects, ensure_ascii=False).replace("</", "<\\/")
    page = (PAGE.replace("__TITLE__", html.escape(f"{total} suspect label(s): accept, keep or drop"))
            .replace("__CLASSES__", json.dumps(classes, ensure_ascii=False).replace("</", "<\\/"))
            .replace("__MORE__", more).replace("__DATA__", data))
    path.write_text(page, encoding="utf-8")
