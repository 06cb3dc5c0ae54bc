"""One HTML page per video: the video beside its valence and arousal curves, to watch rather than read.

The page is a single file with nothing to fetch: the video inside it (base64) up to `embed_limit` bytes, the
curves drawn as SVG by a few lines of plain JavaScript, no library. A cursor on both curves follows
playback; a click on a curve seeks the video to that time; frames without a face are shaded grey. A video
larger than the limit is referenced by its path relative to the page (the page says so).

Browsers play mp4 (H.264) and webm; for other containers, the annotated video (`--annotate`, mp4) is the
one to show.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from clipva.atomic import write_text

EMBED_LIMIT = 50 * 2**20
_MIME = {".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska", ".avi": "video/x-msvideo"}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
video { width: 40vw; min-width: 320px; max-height: 80vh; background: #000; }
.plots { flex: 1; min-width: 420px; }
svg { width: 100%; height: auto; display: block; margin-bottom: 0.8em; cursor: crosshair; }
.curve { fill: none; stroke-width: 1.6; }
#valence .curve { stroke: #1f6fb4; } #arousal .curve { stroke: #c8501e; }
.noface { fill: #bbb; opacity: 0.45; } .axis { stroke: #999; stroke-width: 0.6; }
.cursor { stroke: #000; stroke-width: 1.2; } .label { font-size: 11px; fill: #444; }
.note { color: #666; font-size: 0.9em; }
"""

# Draws both curves from the JSON data block, moves the cursors with playback, seeks on click.
_SCRIPT = """
const data = JSON.parse(document.getElementById("data").textContent);
const video = document.getElementById("video");
const W = 600, H = 150, NS = "http://www.w3.org/2000/svg";
const end = Math.max(data.duration, data.time.length ? data.time[data.time.length - 1] : 0) || 1;
const x = t => (t / end) * W, y = v => ((10 - v) / 20) * H;
function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  parent.appendChild(node);
  return node;
}
for (const dim of ["valence", "arousal"]) {
  const svg = document.getElementById(dim);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const step = data.time.length > 1 ? data.time[1] - data.time[0] : end;
  data.face.forEach((found, i) => {
    if (!found) el("rect", {class: "noface", x: x(data.time[i]), y: 0, width: Math.max(x(step), 1), height: H}, svg);
  });
  el("line", {class: "axis", x1: 0, x2: W, y1: y(0), y2: y(0)}, svg);
  let d = "", pen = false;
  data[dim].forEach((v, i) => {
    if (v === null) { pen = false; return; }
    d += `${pen ? "L" : "M"}${x(data.time[i]).toFixed(2)},${y(v).toFixed(2)} `;
    pen = true;
  });
  el("path", {class: "curve", d: d}, svg);
  el("text", {class: "label", x: 4, y: 12}, svg).textContent = `${dim} (-10..10)`;
  el("text", {class: "label", x: W - 4, y: H - 4, "text-anchor": "end"}, svg).textContent = `${end.toFixed(1)} s`;
  el("line", {class: "cursor", id: `cursor-${dim}`, x1: 0, x2: 0, y1: 0, y2: H}, svg);
  svg.addEventListener("click", event => {
    const box = svg.getBoundingClientRect();
    video.currentTime = Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1) * end;
    follow();
  });
}
function follow() {
  for (const dim of ["valence", "arousal"]) {
    const line = document.getElementById(`cursor-${dim}`);
    line.setAttribute("x1", x(video.currentTime));
    line.setAttribute("x2", x(video.currentTime));
  }
}
function loop() { follow(); if (!video.paused && !video.ended) requestAnimationFrame(loop); }
video.addEventListener("play", () => requestAnimationFrame(loop));
video.addEventListener("seeked", follow);
video.addEventListener("timeupdate", follow);
"""


def _values(column: pd.Series) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 4) for v in column.to_numpy(dtype=float)]


def write_page(
    video: str | Path, table: pd.DataFrame, out: str | Path, duration: float, embed_limit: int = EMBED_LIMIT
) -> Path:
    """Write the page for `video` and its prediction `table` (time, valence, arousal, face_found) to `out`."""
    video, out = Path(video), Path(out)
    mime = _MIME.get(video.suffix.lower(), "video/mp4")
    if video.stat().st_size <= embed_limit:
        source = f"data:{mime};base64,{base64.b64encode(video.read_bytes()).decode('ascii')}"
        note = ""
    else:
        source = Path(os.path.relpath(video.resolve(), out.resolve().parent)).as_posix()
        note = f"The video is too large to embed ({video.stat().st_size / 2**20:.0f} MiB): the page plays {source}."
    data = {
        "duration": round(float(duration), 6),
        "time": [round(float(t), 6) for t in table["time"]],
        "valence": _values(table["valence"]),
        "arousal": _values(table["arousal"]),
        "face": [bool(f) for f in table["face_found"]],
    }
    # "<" escaped, so that no value can close the script element it sits in
    blob = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    title = html.escape(video.name)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}: valence and arousal</title>
<style>{_STYLE}</style></head>
<body>
<h1>{title}</h1>
<div class="row">
<video id="video" controls preload="auto" src="{html.escape(source, quote=True)}"></video>
<div class="plots"><svg id="valence"></svg><svg id="arousal"></svg>
<p class="note">Grey: frames without a face. Click a curve to go to that moment. {html.escape(note)}</p></div>
</div>
<script type="application/json" id="data">{blob}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
    write_text(out, page)
    return out
