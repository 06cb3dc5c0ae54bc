"""Clips as sequences of frame features: splits from the store, window batches, windowed prediction."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from clipva.head import CENTRES, TemporalHead
from clipva.splits import read_clips
from clipva.store import ClipFeatures, FeatureStore
from clipva.windows import Window, merge_windows, random_window, window_starts

log = logging.getLogger(__name__)
VA_SCALE = 10.0  # annotations are integers in -10..10; the model works in -1..1
WINDOWS_PER_FORWARD = 256


def load_splits(
    store_path: str, clips_csv: str, splits: tuple[str, ...], centre: str = "none"
) -> dict[str, list[ClipFeatures]]:
    """The clips of each requested split, read from the feature store; with ``centre="actor"`` (a head's
    `centre`) each clip's features minus its actor's mean feature (`actor_means`)."""
    clips = read_clips(clips_csv)
    with FeatureStore(store_path) as store:
        missing = set(clips["clip_id"]) - set(store.clip_ids)
        left_out = missing & {s["clip_id"] for s in store.skipped}  # no frame of theirs could be decoded
        if missing - left_out:
            raise ValueError(
                f"{store_path}: clips {sorted(missing - left_out)[:5]} of {clips_csv} are not in the store; re-extract"
            )
        if left_out:
            log.warning("%d clips left out at extraction (see its report): %s", len(left_out), sorted(left_out))
        clips = clips[~clips["clip_id"].isin(left_out)]
        out = {s: store.load_many(clips.loc[clips["split"] == s, "clip_id"].tolist()) for s in splits}
        actor = dict(zip(clips["clip_id"], clips["actor"], strict=True))
        for found in out.values():
            for c in found:
                c.actor = actor[c.clip_id]
        if centre == "none":
            return out
        if centre not in CENTRES:
            raise ValueError(f"centre {centre!r} is not one of {', '.join(CENTRES)}")
        per_actor = clips.groupby("actor").size()
        if per_actor.median() < 2:
            log.warning(
                "centre: actor, but %d of %d actors have a single clip: their clips lose their own level",
                int((per_actor == 1).sum()),
                len(per_actor),
            )
        loaded = {c.clip_id: c.features for found in out.values() for c in found}
        means = actor_means(store, clips, loaded)
        for found in out.values():
            for c in found:  # in place: the store's arrays are fresh copies, and a second set would double memory
                c.features -= means[actor[c.clip_id]]
        return out


def actor_means(
    store: FeatureStore, clips: pd.DataFrame, loaded: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Each actor's mean feature over every frame of its clips in `clips`, whatever their split and whether
    labeled or not: no label is read, and every job of an experiment (any split, any fold of the same data)
    subtracts the same mean. Accumulated in float64, one clip at a time; the features of `loaded` (clip id ->
    features, as read from `store`) are used instead of reading those clips again."""
    loaded = loaded or {}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for clip_id, actor in zip(clips["clip_id"], clips["actor"], strict=True):
        x = loaded[clip_id] if clip_id in loaded else store.load(clip_id).features
        sums[actor] = sums.get(actor, 0) + x.sum(0, dtype=np.float64)
        counts[actor] = counts.get(actor, 0) + len(x)
    return {a: (sums[a] / counts[a]).astype(np.float32) for a in sums}


def sample_windows(clips: list[ClipFeatures], length: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """One epoch of random training windows (clip, start, stop): about one window per `length` frames, so
    each frame is seen about once per epoch and long clips are sampled more often."""
    sizes = np.array([len(c.features) for c in clips])
    n = max(1, int(sizes.sum()) // length)
    picks = rng.choice(len(clips), size=n, p=sizes / sizes.sum())
    return [(int(i), *random_window(int(sizes[i]), length, rng)) for i in picks]


def collate(clips: list[ClipFeatures], windows: list[tuple[int, int, int]]) -> dict[str, torch.Tensor]:
    """Pad windows into tensors: x (B, T, D), y (B, T, 2) in [-1, 1] (NaN unlabeled), mask (B, T)."""
    length = max(stop - start for _, start, stop in windows)
    dim = clips[0].features.shape[1]
    x = np.zeros((len(windows), length, dim), dtype=np.float32)
    y = np.full((len(windows), length, 2), np.nan, dtype=np.float32)
    mask = np.zeros((len(windows), length), dtype=bool)
    for b, (i, start, stop) in enumerate(windows):
        n = stop - start
        x[b, :n] = clips[i].features[start:stop]
        y[b, :n] = clips[i].labels[start:stop] / VA_SCALE
        mask[b, :n] = True
    return {"x": torch.from_numpy(x), "y": torch.from_numpy(y), "mask": torch.from_numpy(mask)}


def clip_windows(features: np.ndarray, window: Window, device: torch.device) -> tuple[list[int], torch.Tensor]:
    """The overlapping windows that predict a clip: (their starts, (n_windows, min(length, n_frames), D))."""
    starts = window_starts(len(features), window.length, window.stride)
    x = torch.from_numpy(np.asarray(features, dtype=np.float32)).to(device)
    return starts, torch.stack([x[s : s + window.length] for s in starts])


def merge_predictions(n_frames: int, starts: list[int], preds: torch.Tensor) -> np.ndarray:
    """(n_windows, T, 2) window outputs -> per-frame (n_frames, 2) predictions in [-1, 1]."""
    preds = preds.float().clamp(-1, 1).cpu().numpy()  # a linear output can leave the label range
    return merge_windows(n_frames, starts, list(preds))


@torch.no_grad()
def predict_clip(head: TemporalHead, features: np.ndarray, window: Window) -> np.ndarray:
    """Per-frame (n_frames, 2) predictions in [-1, 1]: overlapping windows merged back into one per frame.
    Computed on the head's device."""
    head.eval()
    starts, windows = clip_windows(features, window, head.feature_mean.device)
    # one forward and one copy to the host per chunk of windows, not per window
    preds = torch.cat([head(chunk)[0] for chunk in windows.split(WINDOWS_PER_FORWARD)])
    return merge_predictions(len(features), starts, preds)


def predictions_table(head: TemporalHead, clips: list[ClipFeatures], split: str, window: Window) -> pd.DataFrame:
    """Predictions and annotations of every frame of `clips`, on the annotation scale (-10..10)."""
    rows = []
    for clip in clips:
        pred = predict_clip(head, clip.features, window) * VA_SCALE
        rows.append(
            pd.DataFrame(
                {
                    "clip_id": clip.clip_id,
                    "frame": clip.frame_index,
                    "split": split,
                    "valence_pred": pred[:, 0],
                    "arousal_pred": pred[:, 1],
                    "valence": clip.valence,
                    "arousal": clip.arousal,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)
