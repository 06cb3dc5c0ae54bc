"""Sliding windows over long clips: where windows start, and merging their per-frame predictions back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EDGE_FLOOR = 0.1  # weight floor so a window's edge frames still count when merging


@dataclass(frozen=True)
class Window:
    """How the temporal head sees a clip: windows of `length` frames, a new one every `stride` frames.

    Saved (head checkpoints, model.json) as the config's keys, ``{"window": length, "stride": stride}``.
    """

    length: int
    stride: int

    def __post_init__(self):
        # a stride beyond the length would leave frames between windows that no window predicts
        if self.length < 1 or not 1 <= self.stride <= self.length:
            raise ValueError(
                f"need window >= 1 and 1 <= stride <= window, got window={self.length}, stride={self.stride}"
            )

    @classmethod
    def from_dict(cls, saved: dict) -> Window:
        return cls(saved["window"], saved["stride"])

    def to_dict(self) -> dict:
        return {"window": self.length, "stride": self.stride}


def window_starts(n_frames: int, length: int, stride: int) -> list[int]:
    """Starts of `length`-frame windows every `stride` frames covering frames 0..n_frames-1; the last window
    ends at n_frames. A clip shorter than `length` gives [0]."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if length < 1 or not 1 <= stride <= length:
        raise ValueError(f"need length >= 1 and 1 <= stride <= length, got length={length}, stride={stride}")
    if n_frames <= length:
        return [0]
    starts = list(range(0, n_frames - length + 1, stride))
    if starts[-1] + length < n_frames:
        starts.append(n_frames - length)
    return starts


def window_weights(length: int) -> np.ndarray:
    """Triangular weights peaking at the window's centre, floored at EDGE_FLOOR, (length,)."""
    tri = 1.0 - np.abs(2.0 * (np.arange(length) + 0.5) / length - 1.0)
    return EDGE_FLOOR + (1.0 - EDGE_FLOOR) * tri


def merge_windows(n_frames: int, starts: Sequence[int], window_preds: Sequence[np.ndarray]) -> np.ndarray:
    """Merge (len_i, D) predictions for frames starts[i]..starts[i]+len_i-1 into (n_frames, D): each frame is
    the centre-weighted mean over the windows covering it (exactly a window's value where only it covers)."""
    if len(starts) != len(window_preds) or not starts:
        raise ValueError(f"need as many starts as window predictions (>= 1), got {len(starts)}, {len(window_preds)}")
    preds = [np.asarray(p) for p in window_preds]
    if any(p.ndim != 2 for p in preds) or len({p.shape[1] for p in preds}) != 1:
        raise ValueError("window predictions must all be (len_i, D) with the same D")
    for s, p in zip(starts, preds, strict=True):
        if s < 0 or s + len(p) > n_frames:
            raise ValueError(f"window [{s}, {s + len(p)}) lies outside the clip's {n_frames} frames")
    dtype = np.result_type(np.float32, *preds)
    # shifted weighted mean around the first covering window's value: frames where all windows agree
    # (in particular frames covered by one window) come back bit-exact
    ref = np.zeros((n_frames, preds[0].shape[1]), dtype=np.float64)
    wsum = np.zeros(n_frames, dtype=np.float64)
    for s, p in zip(starts, preds, strict=True):
        new = wsum[s : s + len(p)] == 0
        ref[s : s + len(p)][new] = p[new]
        wsum[s : s + len(p)] += window_weights(len(p))
    if (wsum == 0).any():
        raise ValueError(f"frames not covered by any window, first: {int(np.argmax(wsum == 0))}")
    acc = np.zeros_like(ref)
    for s, p in zip(starts, preds, strict=True):
        acc[s : s + len(p)] += window_weights(len(p))[:, None] * (p - ref[s : s + len(p)])
    return (ref + acc / wsum[:, None]).astype(dtype)


def random_window(n_frames: int, length: int, rng: np.random.Generator) -> tuple[int, int]:
    """Random (start, stop) of a training window of min(length, n_frames) frames."""
    if n_frames < 1 or length < 1:
        raise ValueError(f"need n_frames >= 1 and length >= 1, got {n_frames}, {length}")
    size = min(length, n_frames)
    start = int(rng.integers(0, n_frames - size + 1))
    return start, start + size
