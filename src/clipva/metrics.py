"""Valence/arousal regression metrics: RMSE, PCC, CCC, SAGR (numpy only).

Definitions follow face-analysis/emonet's ``metrics.py`` and the ABAW challenge: population (ddof=0)
statistics throughout, CCC = 2 cov / (var_p + var_t + (mean_p - mean_t)^2) (Lin, 1989).

Choices where those references are silent or degenerate:

- CCC is computed from the covariance directly (not as PCC * std * std), so a constant prediction against
  varying truth gives 0 (emonet gives NaN). CCC is NaN only when the denominator is 0, i.e. both sides are
  constant and equal; a single frame follows the same rule (audmetric returns NaN for fewer than 2 frames).
- PCC is NaN when either side is constant (audmetric only checks the prediction).
- SAGR compares ``np.sign``: a 0 agrees only with a 0.
- Constancy is tested exactly (``ptp == 0``) so that rounding in the mean cannot fake a tiny variance.
- NaN/inf inputs raise ValueError; nothing is dropped silently.

Only RMSE depends on the scale of the values: callers must pass predictions and labels on one scale.
"""

import numpy as np

DIMENSIONS = ("valence", "arousal")
METRICS = ("rmse", "pcc", "ccc", "sagr")


def _check(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if p.ndim != 1 or t.ndim != 1:
        raise ValueError(f"pred and true must be 1-D, got shapes {p.shape} and {t.shape}")
    if p.shape != t.shape:
        raise ValueError(f"pred and true differ in length: {p.shape[0]} vs {t.shape[0]}")
    if p.size == 0:
        raise ValueError("pred and true are empty")
    for name, x in (("pred", p), ("true", t)):
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains {int((~np.isfinite(x)).sum())} NaN/inf value(s)")
    return p, t


def _centered(x: np.ndarray) -> np.ndarray:
    return np.zeros_like(x) if np.ptp(x) == 0 else x - x.mean()


def rmse(pred, true) -> float:
    """Root mean squared error."""
    p, t = _check(pred, true)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def pcc(pred, true) -> float:
    """Pearson correlation coefficient; NaN when either side is constant."""
    p, t = _check(pred, true)
    if np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    a, b = p - p.mean(), t - t.mean()
    return float(np.clip(a @ b / np.sqrt((a @ a) * (b @ b)), -1.0, 1.0))


def ccc(pred, true) -> float:
    """Lin's concordance correlation coefficient (population statistics); NaN if the denominator is 0."""
    p, t = _check(pred, true)
    a, b = _centered(p), _centered(t)
    den = a @ a + b @ b + p.size * (p.mean() - t.mean()) ** 2
    return float("nan") if den == 0 else float(2 * (a @ b) / den)


def sagr(pred, true) -> float:
    """Sign agreement rate: fraction of frames where sign(pred) == sign(true)."""
    p, t = _check(pred, true)
    return float(np.mean(np.sign(p) == np.sign(t)))


def _check_va(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    nd = len(DIMENSIONS)
    for name, x in (("pred", p), ("true", t)):
        if x.ndim != 2 or x.shape[1] != nd:
            raise ValueError(f"{name} must have shape (N, {nd}) with columns {DIMENSIONS}, got {x.shape}")
    if p.shape != t.shape:
        raise ValueError(f"pred and true differ in shape: {p.shape} vs {t.shape}")
    return p, t


def va_metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    """RMSE/PCC/CCC/SAGR per dimension over all frames pooled, plus the mean CCC of valence and arousal.

    pred, true: (N, 2), columns valence, arousal.
    """
    p, t = _check_va(pred, true)
    fns = {"rmse": rmse, "pcc": pcc, "ccc": ccc, "sagr": sagr}
    out = {d: {m: f(p[:, i], t[:, i]) for m, f in fns.items()} for i, d in enumerate(DIMENSIONS)}
    out["mean_ccc"] = float(np.mean([out[d]["ccc"] for d in DIMENSIONS]))
    return out


def _nanmean(v: np.ndarray) -> float:
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def _clip_rows(clip_ids, n: int) -> list[np.ndarray]:
    """The row numbers of each clip, in the order of the sorted clip ids."""
    ids = np.asarray(clip_ids)
    if ids.shape != (n,):
        raise ValueError(f"clip_ids must have shape ({n},), got {ids.shape}")
    _, inv = np.unique(ids, return_inverse=True)
    return np.split(np.argsort(inv, kind="stable"), np.cumsum(np.bincount(inv))[:-1])


def per_clip_metrics(pred: np.ndarray, true: np.ndarray, clip_ids) -> dict:
    """Metrics computed per clip, then averaged over clips (each clip weighs the same).

    Clips where a metric is NaN (e.g. PCC on a clip with constant labels) are left out of that metric's
    average; ``n_clips_pcc``/``n_clips_ccc`` per dimension count the clips that contributed. A metric with
    no contributing clip is NaN. ``mean_ccc`` is the mean of the two per-clip-averaged CCCs.
    """
    p, t = _check_va(pred, true)
    clips = _clip_rows(clip_ids, len(p))
    per = [va_metrics(p[i], t[i]) for i in clips]
    out = {}
    for d in DIMENSIONS:
        vals = {m: np.array([r[d][m] for r in per]) for m in METRICS}
        out[d] = {m: _nanmean(v) for m, v in vals.items()}
        out[d] |= {f"n_clips_{m}": int((~np.isnan(vals[m])).sum()) for m in ("pcc", "ccc")}
    out["mean_ccc"] = float(np.mean([out[d]["ccc"] for d in DIMENSIONS]))
    out["n_clips"] = len(clips)
    return out


def clip_components(pred: np.ndarray, true: np.ndarray, clip_ids) -> dict:
    """The CCC of two parts of the predictions, per dimension and their mean (``mean_ccc``):

    - ``within_clip``: pooled over frames, predictions and labels each minus their clip's mean: how the
      predictions follow the labels' movement inside a clip, whatever level they give the clip;
    - ``clip_level``: over clips, each clip's mean prediction against its mean label (each clip weighs the
      same): how well the clips' levels are told apart.

    A clip of one frame adds nothing within clips; where neither side moves inside any clip the within-clip
    CCC is NaN, and 0 where only the predictions stand still; with a single clip the clip-level CCC is 0, or
    NaN where its means agree (as `ccc`'s single frame)."""
    p, t = _check_va(pred, true)
    clips = _clip_rows(clip_ids, len(p))
    dp, dt = np.empty_like(p), np.empty_like(t)
    lp, lt = np.empty((len(clips), p.shape[1])), np.empty((len(clips), t.shape[1]))
    for j, rows in enumerate(clips):
        lp[j], lt[j] = p[rows].mean(0), t[rows].mean(0)
        # a side constant within the clip moves by exactly 0 there (rounding in the mean would fake a movement)
        dp[rows] = np.where(np.ptp(p[rows], axis=0) == 0, 0.0, p[rows] - lp[j])
        dt[rows] = np.where(np.ptp(t[rows], axis=0) == 0, 0.0, t[rows] - lt[j])
    out = {}
    for name, (a, b) in {"within_clip": (dp, dt), "clip_level": (lp, lt)}.items():
        out[name] = {d: {"ccc": ccc(a[:, k], b[:, k])} for k, d in enumerate(DIMENSIONS)}
        out[name]["mean_ccc"] = float(np.mean([out[name][d]["ccc"] for d in DIMENSIONS]))
    return out


def evaluate_predictions(pred: np.ndarray, true: np.ndarray, clip_ids) -> dict:
    """Pooled (frame-level) and per-clip metrics of (N, 2) valence/arousal predictions, and the CCC within
    clips and of their levels (`clip_components`)."""
    per_clip = per_clip_metrics(pred, true, clip_ids)
    return {
        "pooled": va_metrics(pred, true),
        "per_clip": per_clip,
        **clip_components(pred, true, clip_ids),
        "n_frames": int(np.shape(pred)[0]),
        "n_clips": per_clip["n_clips"],
    }
