"""Evaluation on the test split: the field's metrics, the baselines they must beat, the submission."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clipva.metrics import DIMENSIONS, evaluate_predictions, va_metrics
from clipva.sequences import VA_SCALE
from clipva.store import ClipFeatures


def metrics_on_test_split(predictions: pd.DataFrame) -> dict:
    """Metrics over the labeled frames of the test split: pooled over frames (as ABAW) and averaged per clip."""
    test = predictions[(predictions["split"] == "test") & predictions["valence"].notna()]
    pred = test[["valence_pred", "arousal_pred"]].to_numpy() / VA_SCALE
    true = test[["valence", "arousal"]].to_numpy() / VA_SCALE
    return evaluate_predictions(pred, true, test["clip_id"].to_numpy())


def _labeled(clips: list[ClipFeatures]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([c.features[c.labeled] for c in clips])
    y = np.concatenate([c.labels[c.labeled] for c in clips]) / VA_SCALE
    return x, y


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form ridge on standardised features; returns (mean, std, weights, intercept)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + alpha * len(z) * np.eye(z.shape[1]), z.T @ (y - y.mean(0)))
    return mu, sd, w, y.mean(0)


def ridge_probe(train: list[ClipFeatures], val: list[ClipFeatures], test: list[ClipFeatures],
                alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)) -> dict:  # fmt: skip
    """A per-frame linear probe on the same frozen features (alpha chosen on val mean CCC): the baseline
    the temporal head must match. Returns its pooled test metrics and the chosen alpha."""
    (xt, yt), (xv, yv), (xs, ys) = _labeled(train), _labeled(val), _labeled(test)

    def predict(params, x):
        mu, sd, w, b = params
        return np.clip((x - mu) / sd @ w + b, -1, 1)

    fits = {a: ridge_fit(xt, yt, a) for a in alphas}
    scores = {a: va_metrics(predict(p, xv), yv)["mean_ccc"] for a, p in fits.items()}
    alpha = max(scores, key=lambda a: -np.inf if np.isnan(scores[a]) else scores[a])
    return {"alpha": alpha, "val_mean_ccc": scores[alpha], "test": va_metrics(predict(fits[alpha], xs), ys)}


def constant_baseline(train: list[ClipFeatures], test: list[ClipFeatures]) -> dict:
    """Predicting the training mean for every frame (CCC 0 by construction; RMSE is the informative part)."""
    (_, yt), (_, ys) = _labeled(train), _labeled(test)
    return va_metrics(np.broadcast_to(yt.mean(0), ys.shape), ys)


def submission(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per frame of every test clip and every clip without labels, on the annotation scale."""
    rows = predictions[predictions["split"].isin(["test", "unlabeled"])]
    out = rows[["clip_id", "frame", "valence_pred", "arousal_pred"]].rename(
        columns={"valence_pred": "valence", "arousal_pred": "arousal"}
    )
    return out.sort_values(["clip_id", "frame"]).round({d: 4 for d in DIMENSIONS}).reset_index(drop=True)
