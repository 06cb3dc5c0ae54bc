"""Evaluation on the test split: the field's metrics, the baselines they must beat, the submission."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clipva.baselines import constant_baseline, mean_abs_change, ridge_baselines
from clipva.metrics import DIMENSIONS, clip_components, evaluate_predictions
from clipva.sequences import VA_SCALE
from clipva.store import ClipFeatures

PRED, TRUE = ["valence_pred", "arousal_pred"], ["valence", "arousal"]


def metrics_on_test_split(predictions: pd.DataFrame) -> dict:
    """Metrics over the labeled frames of the test split: pooled over frames (as ABAW), averaged per clip, within
    clips and of the clips' levels; and the smoothness of the predictions over all its frames."""
    split = predictions[predictions["split"] == "test"].sort_values(["clip_id", "frame"])
    test = split[split["valence"].notna()]
    pred = test[PRED].to_numpy() / VA_SCALE
    true = test[TRUE].to_numpy() / VA_SCALE
    moved = smoothness(
        split[PRED].to_numpy(dtype=float) / VA_SCALE,
        split[TRUE].to_numpy(dtype=float) / VA_SCALE,
        split["clip_id"].to_numpy(),
        split["frame"].to_numpy(),
    )
    return {**evaluate_predictions(pred, true, test["clip_id"].to_numpy()), "smoothness": moved}


def smoothness(pred: np.ndarray, true: np.ndarray, clip_ids: np.ndarray, frames: np.ndarray) -> dict:
    """How much predictions move from frame to frame against the labels: per dimension, the mean absolute
    change between consecutive frames of a clip (-1..1 scale; rows sorted by clip, then frame), and
    predictions / labels."""
    moved, labels = mean_abs_change(pred, clip_ids, frames), mean_abs_change(true, clip_ids, frames)
    return {
        dim: {"predictions": p, "labels": t, "ratio": p / t if t > 0 else float("nan")}
        for dim, p, t in zip(DIMENSIONS, moved, labels, strict=True)
    }


def baselines(train: list[ClipFeatures], val: list[ClipFeatures], test: list[ClipFeatures]) -> dict:
    """The constant, the ridge probe and the smoothed ridge probe on the frozen features, each with its test
    metrics (every setting chosen on `val`) and, for the probes, their CCC within clips and of the clips'
    levels (`clip_components`) and their predictions' smoothness."""
    out = {"constant": constant_baseline(train, test)}
    ids = np.concatenate([[c.clip_id] * len(c.frame_index) for c in test])
    frames = np.concatenate([c.frame_index for c in test])  # each clip's frames are stored in order
    true = np.concatenate([c.labels for c in test]).astype(float) / VA_SCALE
    labeled = np.concatenate([c.labeled for c in test])
    for name, probe in ridge_baselines(train, val, test).items():
        pred = np.concatenate(probe.pop("test_predictions"))
        parts = clip_components(pred[labeled], true[labeled], ids[labeled])
        out[name] = {**probe, **parts, "smoothness": smoothness(pred, true, ids, frames)}
    return out


def submission(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per frame of every test clip and every clip without labels, on the annotation scale."""
    rows = predictions[predictions["split"].isin(["test", "unlabeled"])]
    out = rows[["clip_id", "frame", "valence_pred", "arousal_pred"]].rename(
        columns={"valence_pred": "valence", "arousal_pred": "arousal"}
    )
    return out.sort_values(["clip_id", "frame"]).round({d: 4 for d in DIMENSIONS}).reset_index(drop=True)
