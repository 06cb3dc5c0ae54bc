"""The baselines a temporal model must beat, each as strong as an honest competitor would make it, and how much
predictions move from frame to frame.

- constant: the training mean of each dimension for every frame (CCC 0; its RMSE is the informative part);
- ridge probe: a per-frame linear regression on the frozen features, its regularisation chosen on the
  validation split's pooled mean CCC;
- smoothed ridge probe: that regression's per-frame predictions averaged over a centred moving window within
  each clip, the regularisation and the window chosen together on the validation split.
Nothing is chosen on the test split. `ridge_solutions` is the one ridge fit of the project: the temporal head
starts its linear path from it too (clipva.training).
"""

from __future__ import annotations

import numpy as np
import torch

from clipva.metrics import va_metrics
from clipva.sequences import VA_SCALE
from clipva.store import ClipFeatures

RIDGE_ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)
SMOOTHING_WINDOWS = (1, 3, 5, 9, 15, 25, 41, 65)  # frames; 1 is no smoothing


def ridge_solutions(
    z: torch.Tensor, y: torch.Tensor, alphas: tuple[float, ...]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Closed-form ridge regressions of y (N, K) on z (N, D), one per alpha: [(weights (D, K), intercept (K,))],
    penalty alpha * N * |w|^2 on centred data. Computed in float64 on z's device."""
    z = z.double()
    y = y.to(z)
    zm, ym = z.mean(0), y.mean(0)
    gram = (z - zm).T @ (z - zm)
    rhs = (z - zm).T @ (y - ym)
    eye = torch.eye(len(gram), dtype=z.dtype, device=z.device)
    out = []
    for alpha in alphas:
        w = torch.linalg.solve(gram + alpha * len(z) * eye, rhs)
        out.append((w, ym - zm @ w))
    return out


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """(n, K) -> the centred mean over `window` frames (odd), shrinking at the clip's edges."""
    if window <= 1:
        return x
    half = window // 2
    padded = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0, dtype=np.float64)])
    idx = np.arange(len(x))
    lo, hi = np.clip(idx - half, 0, len(x)), np.clip(idx + half + 1, 0, len(x))
    return ((padded[hi] - padded[lo]) / (hi - lo)[:, None]).astype(x.dtype)


def mean_abs_change(values: np.ndarray, clip_ids: np.ndarray, frames: np.ndarray) -> list[float]:
    """Per column of values (N, K): the mean |change| between consecutive frames (frame numbers that differ by 1)
    of the same clip where both are finite; NaN without such a pair. Rows must be sorted by clip, then frame."""
    same = (clip_ids[1:] == clip_ids[:-1]) & (np.diff(frames) == 1)
    step = np.abs(np.diff(values, axis=0))[same]
    return [float(np.nanmean(col)) if np.isfinite(col).any() else float("nan") for col in step.T]


def _labeled(clips: list[ClipFeatures]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([c.features[c.labeled] for c in clips])
    y = np.concatenate([c.labels[c.labeled] for c in clips]) / VA_SCALE
    return x, y


def _pooled(clips: list[ClipFeatures], per_clip: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    pred = np.concatenate([p[c.labeled] for c, p in zip(clips, per_clip, strict=True)])
    return pred, np.concatenate([c.labels[c.labeled] for c in clips]) / VA_SCALE


def _best(scores: dict) -> tuple:
    return max(scores, key=lambda k: -np.inf if np.isnan(scores[k]) else scores[k])


class RidgeProbe:
    """Per-frame ridge regressions on standardised features, one per alpha, fitted on the labeled training frames."""

    def __init__(self, train: list[ClipFeatures], alphas: tuple[float, ...] = RIDGE_ALPHAS):
        x, y = _labeled(train)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        z = torch.from_numpy((x - self.mu) / self.sd)
        solved = ridge_solutions(z, torch.from_numpy(y), alphas)
        self.fits = {a: (w.numpy(), b.numpy()) for a, (w, b) in zip(alphas, solved, strict=True)}

    def predict(self, alpha: float, clips: list[ClipFeatures]) -> list[np.ndarray]:
        """Every frame of each clip, in -1..1."""
        w, b = self.fits[alpha]
        return [np.clip((c.features - self.mu) / self.sd @ w + b, -1, 1) for c in clips]


def ridge_baselines(
    train: list[ClipFeatures],
    val: list[ClipFeatures],
    test: list[ClipFeatures],
    alphas: tuple[float, ...] = RIDGE_ALPHAS,
    windows: tuple[int, ...] = SMOOTHING_WINDOWS,
) -> dict[str, dict]:
    """The ridge probe and the smoothed ridge probe: chosen settings, validation and pooled test metrics."""
    probe = RidgeProbe(train, alphas)
    val_pred = {a: probe.predict(a, val) for a in alphas}
    scores = {
        (a, k): va_metrics(*_pooled(val, [moving_average(p, k) for p in val_pred[a]]))["mean_ccc"]
        for a in alphas
        for k in windows
    }
    out = {}
    for name, choices in (("ridge_probe", [(a, 1) for a in alphas]), ("smoothed_ridge_probe", list(scores))):
        alpha, window = _best({key: scores[key] for key in choices})
        pred = [moving_average(p, window) for p in probe.predict(alpha, test)]
        out[name] = {
            "alpha": alpha,
            "window": window,
            "val_mean_ccc": scores[(alpha, window)],
            "test": va_metrics(*_pooled(test, pred)),
        }
        out[name]["test_predictions"] = pred
    return out


def constant_baseline(train: list[ClipFeatures], test: list[ClipFeatures]) -> dict:
    """Predicting the training mean for every frame (CCC 0 by construction; RMSE is the informative part)."""
    (_, yt), (_, ys) = _labeled(train), _labeled(test)
    return va_metrics(np.broadcast_to(yt.mean(0), ys.shape), ys)
