"""A video with its predictions drawn on it: the face box and a valence/arousal gauge on every source frame.

Predictions are made at `predict.fps` (10 by default), the annotated video keeps every frame of the source at
the source's frame rate: each source frame shows the prediction of the last sample at or before its time.
The gauge is the circumplex (valence left to right, arousal bottom to top, both -10..10) with the current
point and the values written under it; frames without a face get a grey, dashed-looking box and "no face".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from clipva.video import decode, write_video

FOUND, MISSING, GAUGE = (40, 220, 90), (160, 160, 160), (255, 255, 255)


def _gauge(draw: ImageDraw.ImageDraw, size: tuple[int, int], valence: float, arousal: float) -> None:
    width, height = size
    radius = max(12, min(width, height) // 7)
    cx, cy = width - radius - 6, radius + 6
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=GAUGE, width=1)
    draw.line((cx - radius, cy, cx + radius, cy), fill=GAUGE)
    draw.line((cx, cy - radius, cx, cy + radius), fill=GAUGE)
    if np.isfinite(valence) and np.isfinite(arousal):
        x, y = cx + radius * np.clip(valence / 10, -1, 1), cy - radius * np.clip(arousal / 10, -1, 1)
        dot = max(2, radius // 6)
        draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=(255, 80, 60))
        lines = (f"V {valence:+.1f}", f"A {arousal:+.1f}")
    else:
        lines = ("V -", "A -")
    top = cy + radius + 2
    for line in lines:  # under the gauge, kept inside the frame; a dark outline for contrast
        left = max(0, min(cx - radius, width - draw.textlength(line) - 2))
        draw.text((left, top), line, fill=GAUGE, stroke_width=1, stroke_fill=(0, 0, 0))
        top += 11


def annotated_frames(video: str | Path, table: pd.DataFrame, boxes: np.ndarray) -> Iterator[Image.Image]:
    """Every source frame of `video` with the box and gauge of the prediction row on screen at its time.

    `table` is `predict_video`'s (time, valence, arousal, face_found), `boxes` its face box per row (x0, y0,
    x1, y1; NaN where there is none).
    """
    times = table["time"].to_numpy(dtype=float)
    values = table[["valence", "arousal"]].to_numpy(dtype=float)
    found = table["face_found"].to_numpy(dtype=bool)
    for t, _, image in decode(video, None):
        k = int(np.clip(np.searchsorted(times, t + 1e-6, side="right") - 1, 0, len(times) - 1))
        image = image.convert("RGB")
        draw = ImageDraw.Draw(image)
        box = boxes[k]
        if np.isfinite(box).all():
            draw.rectangle(tuple(float(v) for v in box), outline=FOUND if found[k] else MISSING, width=2)
        if not found[k]:
            draw.text((4, 4), "no face", fill=MISSING)
        _gauge(draw, image.size, *values[k])
        yield image


def write_annotated_video(
    video: str | Path, table: pd.DataFrame, boxes: np.ndarray, out: str | Path, fps: float
) -> Path:
    """`annotated_frames` encoded at `fps`, the source's average frame rate (atomically; the suffix picks the
    codec)."""
    return write_video(out, annotated_frames(video, table, boxes), fps)
