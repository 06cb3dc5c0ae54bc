"""The baselines the temporal head is measured against: as strong as an honest competitor would make them,
every setting chosen on validation, never on test."""

import numpy as np
import pytest
import torch

from clipva.baselines import (
    constant_baseline,
    mean_abs_change,
    moving_average,
    raw_moments,
    ridge_baselines,
    ridge_from_moments,
    ridge_solutions,
)
from clipva.evaluation import baselines
from clipva.metrics import clip_components
from clipva.store import ClipFeatures


def _clips(n, seed, dim=8, noise=0.5):
    """Smooth labels read linearly from very noisy frames: smoothing the per-frame probe helps."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(7).normal(size=(2, dim))
    clips = []
    for k in range(n):
        t = int(rng.integers(40, 80))
        va = np.clip(np.cumsum(rng.normal(0, 0.4, (t, 2)), 0) + rng.uniform(-5, 5, 2), -10, 10)
        x = va @ mix / 10 + rng.normal(0, noise, (t, dim))
        valence, arousal = va[:, 0].astype(np.float32), va[:, 1].astype(np.float32)
        valence[3] = arousal[3] = np.nan
        clips.append(ClipFeatures(f"{seed}{k:03d}", x.astype(np.float32), np.arange(t), valence, arousal))
    return clips


def test_ridge_solutions_solve_the_normal_equations():
    rng = np.random.default_rng(0)
    z, y = torch.from_numpy(rng.normal(size=(200, 5))), torch.from_numpy(rng.normal(size=(200, 2)))
    (w0, b0), (w1, b1) = ridge_solutions(z, y, (0.0, 1.0))
    ols = np.linalg.lstsq(np.c_[z.numpy(), np.ones(200)], y.numpy(), rcond=None)[0]
    assert np.allclose(w0.numpy(), ols[:5], atol=1e-8) and np.allclose(b0.numpy(), ols[5], atol=1e-8)
    assert w1.norm() < w0.norm()  # shrunk


def test_ridge_from_moments_of_pieces_left_out_is_the_fit_of_the_rest():
    """The start's cross-validation fits each fold's complement as all moments minus the fold's."""
    rng = np.random.default_rng(1)
    z, y = torch.from_numpy(rng.normal(3.0, 2.0, size=(300, 6))), torch.from_numpy(rng.normal(size=(300, 2)))
    pieces = [raw_moments(z[i : i + 100], y[i : i + 100]) for i in (0, 100, 200)]
    total = [sum(parts) for parts in zip(*pieces, strict=True)]
    rest = [t - p for t, p in zip(total, pieces[1], strict=True)]
    keep = torch.cat([torch.arange(100), torch.arange(200, 300)])
    for (w, b), (w_ref, b_ref) in zip(
        ridge_from_moments(rest, (1e-4, 0.1)), ridge_solutions(z[keep], y[keep], (1e-4, 0.1)), strict=True
    ):
        assert torch.allclose(w, w_ref, atol=1e-9) and torch.allclose(b, b_ref, atol=1e-9)


def test_moving_average_is_centred_and_shrinks_at_the_edges():
    x = np.arange(6, dtype=np.float32)[:, None]
    assert moving_average(x, 1) is x
    assert moving_average(x, 3)[:, 0].tolist() == [0.5, 1, 2, 3, 4, 4.5]
    assert moving_average(x, 99)[:, 0].tolist() == [2.5] * 6


def test_mean_abs_change_counts_consecutive_frames_of_one_clip_only():
    values = np.array([[0.0], [1.0], [3.0], [10.0], [np.nan], [12.0], [13.0]])
    clips = np.array(["a", "a", "a", "b", "b", "b", "b"])
    frames = np.array([1, 2, 3, 1, 2, 3, 5])  # frame 4 of b is missing: 3 -> 5 is no pair
    assert mean_abs_change(values, clips, frames) == [pytest.approx(1.5)]  # (1 + 2) / 2


def test_the_smoothed_probe_is_chosen_on_validation_and_beats_the_raw_one():
    train, val, test = _clips(20, 0), _clips(6, 1), _clips(6, 2)
    out = ridge_baselines(train, val, test)
    raw, smooth = out["ridge_probe"], out["smoothed_ridge_probe"]
    assert raw["window"] == 1 and smooth["window"] > 1
    assert smooth["val_mean_ccc"] >= raw["val_mean_ccc"]
    assert smooth["test"]["mean_ccc"] > raw["test"]["mean_ccc"] + 0.05
    # nothing from the test split: the same choices whatever the test clips
    other = ridge_baselines(train, val, _clips(6, 3))
    assert (other["smoothed_ridge_probe"]["alpha"], other["smoothed_ridge_probe"]["window"]) == (
        smooth["alpha"],
        smooth["window"],
    )


def test_the_constant_predicts_the_training_mean():
    train, test = _clips(5, 0), _clips(3, 1)
    out = constant_baseline(train, test)
    assert out["valence"]["ccc"] == pytest.approx(0.0, abs=1e-12) and out["valence"]["rmse"] > 0


def test_large_training_sets_are_fitted_from_streamed_pieces_with_the_same_result(monkeypatch):
    """Above STREAM_ABOVE feature values the whitening, the ridge probes and the head's ridge start are fitted
    from pieces of the training set (Aff-Wild2's scale), never from one concatenated copy: same results."""
    import numpy as real_numpy

    from clipva import baselines, training
    from clipva.training import head_config, init_linear_from_ridge, new_head

    train, val = _clips(12, 0), _clips(4, 1)
    cfg, window = head_config({"type": "none", "window": 16, "stride": 8, "d_model": 16, "embed_dim": 16}, 8)

    def fit():
        torch.manual_seed(0)
        head = new_head(cfg, train)
        probe = baselines.RidgeProbe(train)
        start = init_linear_from_ridge(head, train, val, window)  # as fine-tuning calls it: with gradients on
        return head, probe, start

    whole = fit()
    monkeypatch.setattr(baselines, "STREAM_ABOVE", 0)
    monkeypatch.setattr(training, "STREAM_ABOVE", 0)
    monkeypatch.setattr(baselines, "CHUNK_ROWS", 100)  # several pieces, each of whole clips
    joined = []
    concatenate = real_numpy.concatenate

    def watched(arrays, *args, **kwargs):
        out = concatenate(arrays, *args, **kwargs)
        joined.append(len(out))
        return out

    monkeypatch.setattr(baselines.np, "concatenate", watched)
    monkeypatch.setattr(training.np, "concatenate", watched)
    streamed = fit()
    monkeypatch.undo()
    n_train = sum(len(c.features) for c in train)
    assert joined and max(joined) < n_train / 3  # only pieces were ever joined
    (h0, p0, s0), (h1, p1, s1) = whole, streamed
    assert torch.allclose(h0.feature_mean, h1.feature_mean, atol=1e-6)
    assert torch.allclose(h0.whitening, h1.whitening, atol=1e-5)
    assert np.allclose(p0.mu, p1.mu, atol=1e-5) and np.allclose(p0.sd, p1.sd, atol=1e-5)
    for alpha in baselines.RIDGE_ALPHAS:
        assert np.allclose(p0.fits[alpha][0], p1.fits[alpha][0], atol=1e-5), alpha
    assert torch.allclose(h0.linear.weight, h1.linear.weight, atol=1e-5)
    assert s0["alpha"] == s1["alpha"] and s0["val_mean_ccc"] == pytest.approx(s1["val_mean_ccc"], abs=1e-6)


def test_the_probes_are_scored_within_clips_and_on_clip_levels_over_labeled_frames():
    train, val, test = _clips(20, 0), _clips(6, 1), _clips(6, 2)
    out = baselines(train, val, test)
    fitted = ridge_baselines(train, val, test)
    for name in ("ridge_probe", "smoothed_ridge_probe"):
        pred = fitted[name]["test_predictions"]
        kept = [c.labeled for c in test]  # frame 3 of every clip has no label
        expected = clip_components(
            np.concatenate([p[k] for p, k in zip(pred, kept, strict=True)]),
            np.concatenate([c.labels[c.labeled] for c in test]) / 10,
            np.concatenate([[c.clip_id] * int(c.labeled.sum()) for c in test]),
        )
        for part in ("within_clip", "clip_level"):
            assert out[name][part]["mean_ccc"] == pytest.approx(expected[part]["mean_ccc"])
            assert np.isfinite(out[name][part]["mean_ccc"])
    # smoothing serves the movement inside clips: the smoothed probe follows it better than the raw one
    assert out["smoothed_ridge_probe"]["within_clip"]["mean_ccc"] > out["ridge_probe"]["within_clip"]["mean_ccc"]
