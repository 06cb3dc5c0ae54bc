import itertools
import math

import audmetric
import numpy as np
import pytest

from clipva.metrics import (
    DIMENSIONS,
    ccc,
    clip_components,
    evaluate_predictions,
    pcc,
    per_clip_metrics,
    rmse,
    sagr,
    va_metrics,
)

rng = np.random.default_rng(0)


def np_ccc(p, t):  # Lin's CCC, population statistics, written from the textbook formula
    return 2 * np.cov(p, t, bias=True)[0, 1] / (p.var() + t.var() + (p.mean() - t.mean()) ** 2)


@pytest.mark.parametrize("n", [2, 5, 100, 1000])
def test_against_audmetric_and_numpy(n):
    t = rng.uniform(-1, 1, n)
    p = 0.6 * t + 0.2 + rng.normal(0, 0.3, n)
    # audmetric takes (truth, prediction); CCC and PCC are symmetric so only the names differ
    assert ccc(p, t) == pytest.approx(audmetric.concordance_cc(t, p), abs=1e-12)
    assert pcc(p, t) == pytest.approx(audmetric.pearson_cc(t, p), abs=1e-12)
    assert ccc(p, t) == pytest.approx(np_ccc(p, t), abs=1e-12)
    assert pcc(p, t) == pytest.approx(np.corrcoef(p, t)[0, 1], abs=1e-12)
    assert rmse(p, t) == pytest.approx(math.sqrt(audmetric.mean_squared_error(t, p)), abs=1e-12)
    assert sagr(p, t) == pytest.approx(np.mean(np.sign(p) == np.sign(t)))


def test_differences_from_audmetric():
    # a single frame: audmetric returns NaN for fewer than 2 frames; we apply the formula (0 unless equal)
    assert math.isnan(audmetric.concordance_cc([0.5], [0.2]))
    assert ccc([0.2], [0.5]) == 0.0
    assert math.isnan(ccc([0.5], [0.5]))
    # constant truth: audmetric.pearson_cc only checks the prediction (np.corrcoef warns and gives NaN)
    assert math.isnan(pcc([0.1, 0.2, 0.3], [1.0, 1.0, 1.0]))
    # constant prediction: audmetric's CCC is ~0 up to rounding in the mean, ours is exactly 0
    t = rng.uniform(-1, 1, 50)
    assert ccc(np.full(50, 0.1), t) == 0.0
    assert audmetric.concordance_cc(t, np.full(50, 0.1)) == pytest.approx(0.0, abs=1e-12)


def test_hand_cases():
    t = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    assert ccc(t, t) == pytest.approx(1.0) and rmse(t, t) == 0.0 and pcc(t, t) == pytest.approx(1.0)
    assert ccc(-t, t) == pytest.approx(-1.0) and pcc(-t, t) == pytest.approx(-1.0)
    assert ccc(np.full(5, 0.3), t) == 0.0 and math.isnan(pcc(np.full(5, 0.3), t))
    assert math.isnan(ccc(np.full(5, 0.3), np.full(5, 0.3)))  # 0/0
    bias = 0.4
    assert pcc(t + bias, t) == pytest.approx(1.0)
    assert ccc(t + bias, t) == pytest.approx(2 * t.var() / (2 * t.var() + bias**2))
    assert rmse(t + bias, t) == pytest.approx(bias)
    k = 0.5  # a scaled prediction of zero-mean truth: CCC = 2k / (1 + k^2)
    assert ccc(k * t, t) == pytest.approx(2 * k / (1 + k**2))


def test_sagr_signs_with_zeros():
    p = [1.0, -2.0, 0.0, 3.0, 0.0, -0.1]
    t = [2.0, -1.0, 0.0, -1.0, 1.0, 0.0]
    assert sagr(p, t) == pytest.approx(3 / 6)  # a 0 agrees only with a 0


def test_va_metrics_structure():
    t = rng.uniform(-1, 1, (40, 2))
    p = t + rng.normal(0, 0.2, (40, 2))
    m = va_metrics(p, t)
    assert set(m) == {*DIMENSIONS, "mean_ccc"}
    for i, d in enumerate(DIMENSIONS):
        assert m[d] == {
            "rmse": rmse(p[:, i], t[:, i]),
            "pcc": pcc(p[:, i], t[:, i]),
            "ccc": ccc(p[:, i], t[:, i]),
            "sagr": sagr(p[:, i], t[:, i]),
        }
        assert all(type(v) is float for v in m[d].values())
    assert m["mean_ccc"] == pytest.approx((m["valence"]["ccc"] + m["arousal"]["ccc"]) / 2)
    assert type(m["mean_ccc"]) is float


def test_per_clip_differs_from_pooled():
    # within each clip the prediction runs backwards, but it gets the clip means right:
    # pooled frames correlate positively (between-clip spread dominates), every clip alone gives -1
    t1 = np.array([0.0, 0.1, 0.2])
    p1 = t1[::-1].copy()
    t = np.concatenate([t1, t1 + 0.6])[:, None].repeat(2, 1)
    p = np.concatenate([p1, p1 + 0.6])[:, None].repeat(2, 1)
    ids = np.array(["a"] * 3 + ["b"] * 3)
    pooled, per = va_metrics(p, t), per_clip_metrics(p, t, ids)
    for d in DIMENSIONS:
        assert per[d]["pcc"] == pytest.approx(-1.0) and per[d]["ccc"] == pytest.approx(-1.0)
        assert pooled[d]["ccc"] == pytest.approx(np_ccc(p[:, 0], t[:, 0])) and pooled[d]["ccc"] > 0.8
        assert per[d]["rmse"] == pytest.approx(pooled[d]["rmse"])  # same errors in both clips
    assert per["n_clips"] == 2 and per["mean_ccc"] == pytest.approx(-1.0)


def test_per_clip_rmse_is_mean_of_clip_rmse():
    t = np.zeros((5, 2))
    p = np.array([1.0, 1.0, 3.0, 3.0, 3.0])[:, None].repeat(2, 1)
    per = per_clip_metrics(p, t, [0, 0, 1, 1, 1])
    assert per["valence"]["rmse"] == pytest.approx(2.0)  # (1 + 3) / 2, not sqrt((2 + 27) / 5)
    assert va_metrics(p, t)["valence"]["rmse"] == pytest.approx(math.sqrt(29 / 5))


def test_per_clip_leaves_out_nan_clips():
    t = np.array([0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.5, 0.5])[:, None].repeat(2, 1)
    p = np.array([0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.5, 0.5])[:, None].repeat(2, 1)
    ids = [7, 7, 7, 3, 3, 3, 9, 9]  # clip 7: constant labels; clip 3: perfect; clip 9: constant and equal
    per = per_clip_metrics(p, t, ids)
    for d in DIMENSIONS:
        assert per[d]["pcc"] == pytest.approx(1.0) and per[d]["n_clips_pcc"] == 1  # only clip 3
        assert per[d]["ccc"] == pytest.approx(0.5) and per[d]["n_clips_ccc"] == 2  # clip 7 gives 0, 9 NaN
        assert per[d]["sagr"] == pytest.approx((0 + 1 + 1) / 3)
    assert per["n_clips"] == 3
    all_nan = per_clip_metrics(np.ones((4, 2)), np.ones((4, 2)), [0, 0, 1, 1])
    assert math.isnan(all_nan["valence"]["pcc"]) and all_nan["valence"]["n_clips_pcc"] == 0


def test_evaluate_predictions():
    t = rng.uniform(-1, 1, (30, 2))
    p = t + rng.normal(0, 0.3, (30, 2))
    ids = np.repeat(np.arange(3), 10)
    r = evaluate_predictions(p, t, ids)
    assert r["n_frames"] == 30 and r["n_clips"] == 3
    assert r["pooled"] == va_metrics(p, t) and r["per_clip"] == per_clip_metrics(p, t, ids)
    clips = [va_metrics(p[ids == c], t[ids == c])["valence"]["ccc"] for c in range(3)]
    assert r["per_clip"]["valence"]["ccc"] == pytest.approx(np.mean(clips))
    parts = clip_components(p, t, ids)
    assert r["within_clip"] == parts["within_clip"] and r["clip_level"] == parts["clip_level"]


def _levels_and_movement(n_clips=6, n=12):
    """Labels (N, 2) of clips at distinct levels that move inside each clip; the clip of each row."""
    ids = np.repeat(np.arange(n_clips), n)
    levels = rng.uniform(-0.6, 0.6, (n_clips, 2))
    return levels[ids] + rng.normal(0, 0.2, (n_clips * n, 2)), ids


def test_clip_components_tell_movement_inside_clips_from_clip_levels():
    t, ids = _levels_and_movement()
    means = np.stack([t[ids == c].mean(0) for c in range(6)])
    # the right movement at the wrong levels (the clips' means mirrored about their mean): perfect within clips
    moved = clip_components(t - 2 * (means - means.mean(0))[ids], t, ids)
    for dim in DIMENSIONS:
        assert moved["within_clip"][dim]["ccc"] == pytest.approx(1.0)
        assert moved["clip_level"][dim]["ccc"] == pytest.approx(-1.0)
    # each clip's mean label on every frame: the right levels, no movement
    flat = clip_components(means[ids], t, ids)
    for dim in DIMENSIONS:
        assert flat["within_clip"][dim]["ccc"] == pytest.approx(0.0, abs=1e-9)
        assert flat["clip_level"][dim]["ccc"] == pytest.approx(1.0)
    assert flat["clip_level"]["mean_ccc"] == pytest.approx(1.0)
    # written out: pooled CCC of the deviations from each clip's mean; CCC of the clips' means
    p = t + rng.normal(0, 0.3, t.shape)
    parts = clip_components(p, t, ids)
    pm = np.stack([p[ids == c].mean(0) for c in range(6)])
    for k, dim in enumerate(DIMENSIONS):
        assert parts["within_clip"][dim]["ccc"] == pytest.approx(np_ccc(p[:, k] - pm[ids, k], t[:, k] - means[ids, k]))
        assert parts["clip_level"][dim]["ccc"] == pytest.approx(np_ccc(pm[:, k], means[:, k]))
    assert parts["within_clip"]["mean_ccc"] == pytest.approx(
        np.mean([parts["within_clip"][d]["ccc"] for d in DIMENSIONS])
    )
    # rows need not be grouped by clip; each clip weighs the same at clip level, whatever its length
    order = rng.permutation(len(t))
    shuffled = clip_components(p[order], t[order], ids[order])
    longer = np.concatenate([np.flatnonzero(ids == c) for c in range(6)] + [np.flatnonzero(ids == 0)] * 3)
    again = clip_components(p[longer], t[longer], ids[longer])  # clip 0 four times as long, the same means
    for k, dim in itertools.product(("within_clip", "clip_level"), DIMENSIONS):
        assert shuffled[k][dim]["ccc"] == pytest.approx(parts[k][dim]["ccc"])
    for dim in DIMENSIONS:
        assert again["clip_level"][dim]["ccc"] == pytest.approx(parts["clip_level"][dim]["ccc"])


def test_clip_components_of_clips_that_stand_still():
    t, ids = _levels_and_movement()
    means = np.stack([t[ids == c].mean(0) for c in range(6)])
    # predictions constant inside every clip: exactly 0 within clips, as a constant prediction's CCC
    flat = clip_components(means[ids] + 0.1, t, ids)
    assert [flat["within_clip"][d]["ccc"] for d in DIMENSIONS] == [0.0, 0.0]
    # neither side moves inside any clip: nothing to score within clips (0/0), the levels still count
    still = clip_components(means[ids] + 0.1, means[ids], ids)
    assert all(math.isnan(still["within_clip"][d]["ccc"]) for d in DIMENSIONS)
    shifted = 2 * means.var(0) / (2 * means.var(0) + 0.1**2)  # CCC of levels off by 0.1 (population variances)
    assert [still["clip_level"][d]["ccc"] for d in DIMENSIONS] == pytest.approx(shifted)
    # one-frame clips add nothing within clips; one clip alone has no spread of levels to tell apart
    single = np.arange(len(t)) + 100
    assert math.isnan(clip_components(t, t, single)["within_clip"]["mean_ccc"])
    one = clip_components(t + 0.1, t, np.zeros(len(t)))
    assert one["clip_level"]["mean_ccc"] == 0.0 and one["within_clip"]["mean_ccc"] == pytest.approx(1.0)


@pytest.mark.parametrize("fn", [rmse, pcc, ccc, sagr])
def test_bad_input(fn):
    with pytest.raises(ValueError, match="differ in length"):
        fn([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="true contains 1 NaN"):
        fn([1.0, 2.0], [np.nan, 2.0])
    with pytest.raises(ValueError, match="pred contains"):
        fn([np.inf, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        fn(np.ones((3, 2)), np.ones((3, 2)))


def test_bad_va_input():
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        va_metrics(np.ones((4, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="differ in shape"):
        va_metrics(np.ones((4, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="clip_ids"):
        per_clip_metrics(np.ones((4, 2)), np.ones((4, 2)), [0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_predictions(np.full((4, 2), np.nan), np.ones((4, 2)), [0, 0, 1, 1])
