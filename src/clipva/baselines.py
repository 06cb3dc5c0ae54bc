"""The baselines a temporal model must beat, each as strong as an honest competitor would make it, and how much
predictions move from frame to frame.

- constant: the training mean of each dimension for every frame (CCC 0; its RMSE is the informative part);
- ridge probe: a per-frame linear regression on the frozen features, its regularisation chosen on the
  validation split's pooled mean CCC;
- smoothed ridge probe: that regression's per-frame predictions averaged over a centred moving window within
  each clip, the regularisation and the window chosen together on the validation split.
Nothing is chosen on the test split. `ridge_solutions` is the one ridge fit of the project: the temporal head
starts its linear path from it too (clipva.training); `streamed_ridge_solutions` is the same fit from data
given in pieces, for training sets too large to copy whole.
"""

from __future__ import annotations

import numpy as np
import torch

from clipva.metrics import va_metrics
from clipva.sequences import VA_SCALE
from clipva.store import ClipFeatures

RIDGE_ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)
SMOOTHING_WINDOWS = (1, 3, 5, 9, 15, 25, 41, 65)  # frames; 1 is no smoothing


# Above this many training feature values the fits below stream over clips instead of concatenating them:
# their float64 copies and centred products would take several times the features themselves (Aff-Wild2
# with ViT-B-32: about 6x 3.4 GB). Below it the one-shot computation is kept: it is the same up to rounding.
STREAM_ABOVE = 2**26
CHUNK_ROWS = 65536


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
    return _solve(gram, rhs, zm, ym, len(z), alphas)


def streamed_ridge_solutions(chunks, alphas: tuple[float, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """ridge_solutions of data given in pieces: `chunks()` yields (z (n, D), y (n, K)) float64 tensors and is
    called twice (the means, then the centred products), so the data is never held whole."""
    n, (zm, ym) = _means(chunks)
    gram = rhs = 0
    for z, y in chunks():
        centred = z - zm
        gram = gram + centred.T @ centred
        rhs = rhs + centred.T @ (y - ym)
    return _solve(gram, rhs, zm, ym, n, alphas)


def streamed_moments(chunks) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(N, mean, covariance with N - 1) of rows given in pieces: `chunks()` yields (x (n, D),) float64 tensors."""
    n, (mean,) = _means(chunks)
    cov = 0
    for (x,) in chunks():
        centred = x - mean
        cov = cov + centred.T @ centred
    return n, mean, cov / max(n - 1, 1)


def _means(chunks) -> tuple[int, list[torch.Tensor]]:
    n, sums = 0, None
    for parts in chunks():
        n += len(parts[0])
        sums = [p.sum(0) for p in parts] if sums is None else [s + p.sum(0) for s, p in zip(sums, parts, strict=True)]
    return n, [s / n for s in sums]


def row_chunks(*arrays_per_clip, keep=None, transform=None):
    """A `chunks` function for the streamed fits: the per-clip arrays (each argument a list, one array per
    clip), their rows `keep[i]` of clip i where given, joined into pieces of about CHUNK_ROWS rows as float64
    tensors (so only a piece is ever copied); `transform` maps each piece (a tuple) before it is yielded."""

    def chunks():
        pending, rows = [], 0
        for i, parts in enumerate(zip(*arrays_per_clip, strict=True)):
            pending.append((parts, None if keep is None else keep[i]))
            rows += len(parts[0]) if keep is None else int(keep[i].sum())
            if rows >= CHUNK_ROWS:
                yield _piece(pending, transform)
                pending, rows = [], 0
        if pending:
            yield _piece(pending, transform)

    return chunks


def _piece(pending, transform):
    piece = tuple(
        torch.as_tensor(np.concatenate([p[k] if rows is None else p[k][rows] for p, rows in pending])).double()
        for k in range(len(pending[0][0]))
    )
    return transform(piece) if transform else piece


def raw_moments(z: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """[n, sum z, sum y, z'z, z'y] of rows z (n, D), y (n, K) in float64: added up over pieces of a data set and
    subtracted for a part left out, they give `ridge_from_moments` of any union of pieces in one pass."""
    z, y = z.double(), y.double()
    return [torch.tensor(float(len(z)), dtype=z.dtype, device=z.device), z.sum(0), y.sum(0), z.T @ z, z.T @ y]


def ridge_from_moments(
    moments: list[torch.Tensor], alphas: tuple[float, ...]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """ridge_solutions of the rows whose `raw_moments` (summed) are given."""
    n, sz, sy, zz, zy = moments
    zm, ym = sz / n, sy / n
    return _solve(zz - n * torch.outer(zm, zm), zy - n * torch.outer(zm, ym), zm, ym, n, alphas)


def _solve(gram, rhs, zm, ym, n, alphas):
    eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    out = []
    for alpha in alphas:
        w = torch.linalg.solve(gram + alpha * n * eye, rhs)
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
        if sum(int(c.labeled.sum()) for c in train) * train[0].features.shape[1] > STREAM_ABOVE:
            solved = self._streamed(train, alphas)
        else:
            x, y = _labeled(train)
            self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
            z = torch.from_numpy((x - self.mu) / self.sd)
            solved = ridge_solutions(z, torch.from_numpy(y), alphas)
        self.fits = {a: (w.numpy(), b.numpy()) for a, (w, b) in zip(alphas, solved, strict=True)}

    def _streamed(self, train: list[ClipFeatures], alphas: tuple[float, ...]):
        xs, keep = [c.features for c in train], [c.labeled for c in train]
        ys = [c.labels / VA_SCALE for c in train]
        n, mean, cov = streamed_moments(row_chunks(xs, keep=keep))
        self.mu = mean.numpy().astype(np.float32)
        self.sd = (np.sqrt(np.diag(cov.numpy()) * (n - 1) / n) + 1e-6).astype(np.float32)  # numpy's std: ddof 0
        mu, sd = torch.from_numpy(self.mu).double(), torch.from_numpy(self.sd).double()
        standardise = lambda p: ((p[0] - mu) / sd, p[1])  # noqa: E731
        return streamed_ridge_solutions(row_chunks(xs, ys, keep=keep, transform=standardise), alphas)

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
