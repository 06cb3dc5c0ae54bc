import math

import pytest
import torch
import torch.nn.functional as F

from clipva.losses import (
    ccc_loss,
    masked_mse,
    multi_positive_info_nce,
    regression_loss,
    temporal_contrastive_loss,
    vision_language_loss,
)
from clipva.metrics import ccc


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def ccc_torch(pred, target, mask=None):
    """Per-dimension CCC through the loss: 1 - ccc_loss of each column alone."""
    columns = range(pred.shape[-1])
    return torch.stack([1 - ccc_loss(pred[..., d : d + 1], target[..., d : d + 1], mask) for d in columns])


def va_batch(seed=0):
    target = rand(4, 7, 2, seed=seed)
    pred = (0.7 * target + 0.3 + 0.5 * rand(4, 7, 2, seed=seed + 1)).requires_grad_()
    mask = rand(4, 7, seed=seed + 2) > -0.3
    return pred, target, mask


def test_ccc_torch_matches_metrics():
    pred, target, mask = va_batch()
    c = ccc_torch(pred, target)
    assert c.shape == (2,)
    p, t = pred.detach().reshape(-1, 2).numpy(), target.reshape(-1, 2).numpy()
    for d in range(2):
        assert c[d].item() == pytest.approx(ccc(p[:, d], t[:, d]), abs=1e-12)


def test_mask_drops_frames():
    pred, target, mask = va_batch()
    assert 0 < mask.sum() < mask.numel()
    target_padded = target.masked_fill(~mask[..., None], float("nan"))  # padding must not leak in
    c = ccc_torch(pred, target_padded, mask)
    assert torch.allclose(c, ccc_torch(pred[mask], target[mask]), atol=1e-12)
    p, t = pred.detach()[mask].numpy(), target[mask].numpy()
    for d in range(2):
        assert c[d].item() == pytest.approx(ccc(p[:, d], t[:, d]), abs=1e-12)
    assert torch.allclose(masked_mse(pred, target_padded, mask), F.mse_loss(pred[mask], target[mask]))
    for kind in ("mse", "ccc", "mix"):
        assert torch.isfinite(regression_loss(pred, target_padded, mask, kind=kind))


def test_gradients_flow():
    pred, target, mask = va_batch()
    regression_loss(pred, target, mask).backward()
    g = pred.grad
    assert torch.isfinite(g).all()
    assert (g[mask].abs().sum(-1) > 0).all() and (g[~mask] == 0).all()


def test_regression_loss_kinds():
    pred, target, mask = va_batch()
    mse = F.mse_loss(pred[mask], target[mask])
    one_minus_ccc = (1 - ccc_torch(pred, target, mask)).mean()
    assert torch.allclose(regression_loss(pred, target, mask, kind="mse"), mse)
    assert torch.allclose(regression_loss(pred, target, mask, kind="ccc"), one_minus_ccc)
    assert torch.allclose(ccc_loss(pred, target, mask), one_minus_ccc)
    mix = regression_loss(pred, target, mask, kind="mix", ccc_weight=0.3)
    assert torch.allclose(mix, 0.7 * mse + 0.3 * one_minus_ccc)
    assert torch.allclose(regression_loss(pred, target, mask), 0.5 * mse + 0.5 * one_minus_ccc)
    assert regression_loss(target, target, kind="ccc").item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="mse, ccc, mix"):
        regression_loss(pred, target, kind="l1")
    with pytest.raises(ValueError, match="mask must have shape"):
        regression_loss(pred, target, mask[:, :3])
    with pytest.raises(ValueError, match="one shape"):
        regression_loss(pred, target[:, :3])


@pytest.mark.parametrize("kind", ["mse", "ccc", "mix"])
def test_empty_mask_gives_zero_with_grad(kind):
    pred, target, mask = va_batch()
    loss = regression_loss(pred, target, torch.zeros_like(mask), kind=kind)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert (pred.grad == 0).all()


def test_ccc_torch_float32_and_half():
    pred, target, _ = va_batch()
    ref = ccc_torch(pred.detach(), target)
    assert torch.allclose(ccc_torch(pred.detach().float(), target.float()).double(), ref, atol=1e-5)
    half = ccc_torch(pred.detach().bfloat16(), target.bfloat16())
    assert half.dtype == torch.float32 and torch.allclose(half.double(), ref, atol=3e-2)


def test_multi_positive_info_nce_hand_values():
    e = math.e
    loss = multi_positive_info_nce(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.eye(2, dtype=torch.bool))
    assert loss.item() == pytest.approx(-math.log(e / (e + 1)))
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    pos = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 1, 1]], dtype=torch.bool)  # row 1 has no positive
    row0 = -math.log((e**2 + e) / (e**2 + e + 1))
    row2 = -math.log((e**2 + e**3) / (e + e**2 + e**3))
    assert multi_positive_info_nce(logits, pos).item() == pytest.approx((row0 + row2) / 2, rel=1e-12)


def test_multi_positive_info_nce_single_positive_is_cross_entropy():
    logits = rand(6, 6, seed=3, dtype=torch.float32) * 5
    ce = F.cross_entropy(logits, torch.arange(6))
    assert torch.allclose(multi_positive_info_nce(logits, torch.eye(6, dtype=torch.bool)), ce)
    big = multi_positive_info_nce(logits * 1e3, torch.eye(6, dtype=torch.bool))  # logsumexp: no overflow
    assert torch.isfinite(big)


def test_multi_positive_info_nce_no_positive_rows():
    logits = rand(3, 3, seed=4).requires_grad_()
    loss = multi_positive_info_nce(logits, torch.zeros(3, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert (logits.grad == 0).all()
    pos = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.bool)
    logits.grad = None
    multi_positive_info_nce(logits, pos).backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[1:] == 0).all()


def test_vl_same_bin_windows_are_positives():
    text = rand(3, 8, seed=5)
    win = rand(4, 8, seed=6)
    win[1] = win[0]  # two identical windows of bin 0
    bins = torch.tensor([0, 0, 1, 2])
    loss = vision_language_loss(win, text, bins, temperature=0.5)
    # by hand: every window/text pair with the same bin counts in the numerator
    w, t = F.normalize(win, dim=-1), F.normalize(text, dim=-1)[bins]
    s = (w @ t.T / 0.5).exp()
    same = (bins[:, None] == bins[None, :]).double()
    rows = -((s * same).sum(1) / s.sum(1)).log().mean()
    cols = -((s * same).sum(0) / s.sum(0)).log().mean()
    assert loss.item() == pytest.approx(0.5 * (rows + cols).item(), rel=1e-10)
    # naive CLIP loss (only the diagonal positive) treats the duplicate as a negative: higher loss
    logits = w @ t.T / 0.5
    naive = 0.5 * (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4)))
    assert loss < naive


def test_vl_one_bin_has_no_negatives():
    win, text = rand(5, 8, seed=7).requires_grad_(), rand(3, 8, seed=8)
    loss = vision_language_loss(win, text, torch.full((5,), 2))
    assert loss.item() == pytest.approx(0.0, abs=1e-12)  # nothing to push apart
    loss.backward()
    assert torch.allclose(win.grad, torch.zeros_like(win.grad), atol=1e-12)


def test_vl_aligned_is_near_minimum_and_wrong_bin_costs():
    text = torch.eye(4, 16, dtype=torch.float64)  # orthogonal prompts
    bins = torch.tensor([0, 1, 2, 3, 0, 1])
    win = 3 * text[bins] + 0.01 * rand(6, 16, seed=9)  # norm does not matter
    aligned = vision_language_loss(win, text, bins, temperature=0.01)
    assert 0 <= aligned.item() < 1e-6
    wrong = win.clone()
    wrong[0] = text[2]  # window labelled bin 0 looks like bin 2
    assert vision_language_loss(wrong, text, bins, temperature=0.01) > aligned + 1
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        vision_language_loss(win, text, torch.tensor([0, 1, 2, 3, 0, 4]))


def nt_xent_reference(z1, z2, temperature):  # SimCLR NT-Xent via cross-entropy
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    b = z1.shape[0]
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    return F.cross_entropy(logits, torch.cat([torch.arange(b, 2 * b), torch.arange(b)]))


def test_temporal_matches_nt_xent():
    z1, z2 = rand(5, 8, seed=10).requires_grad_(), rand(5, 8, seed=11)
    loss = temporal_contrastive_loss(z1, z2, temperature=0.2)
    assert torch.allclose(loss, nt_xent_reference(z1, z2, 0.2))
    loss.backward()
    assert torch.isfinite(z1.grad).all()  # the -inf self-similarity does not poison gradients


def test_temporal_identical_views_small_shuffled_large():
    b, tau = 4, 0.1
    z = torch.eye(b, 8, dtype=torch.float64)
    same = temporal_contrastive_loss(z, z.clone(), temperature=tau)
    # each anchor: positive cos 1, 2b-2 negatives with cos 0
    assert same.item() == pytest.approx(math.log(1 + (2 * b - 2) * math.exp(-1 / tau)), rel=1e-9)
    assert same.item() < 1e-2
    shuffled = temporal_contrastive_loss(z, z.roll(1, 0), temperature=tau)
    assert shuffled > same + 5


def test_temporal_same_clip_not_negative():
    z1 = torch.eye(4, 8, dtype=torch.float64)
    z1[1] = z1[0]  # clip 0 landed in the batch twice
    z2 = z1 + 0.05 * rand(4, 8, seed=12)
    ids = torch.tensor([0, 0, 1, 2])
    with_ids = temporal_contrastive_loss(z1, z2, temperature=0.1, clip_ids=ids)
    without = temporal_contrastive_loss(z1, z2, temperature=0.1)
    assert with_ids < 0.05 < without
    # by hand: all four embeddings of clip 0 are positives of each other
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    s = (z @ z.T / 0.1).exp().fill_diagonal_(0)
    pos = (torch.cat([ids, ids])[:, None] == torch.cat([ids, ids])[None, :]).double().fill_diagonal_(0)
    ref = -((s * pos).sum(1) / s.sum(1)).log().mean()
    assert with_ids.item() == pytest.approx(ref.item(), rel=1e-10)
    with pytest.raises(ValueError, match="clip_ids"):
        temporal_contrastive_loss(z1, z2, clip_ids=ids[:3])
    with pytest.raises(ValueError, match="one shape"):
        temporal_contrastive_loss(z1, z2[:3])


def test_mask_over_several_leading_dims():
    pred, target = rand(2, 3, 4, 2, seed=13), rand(2, 3, 4, 2, seed=14)
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    assert torch.allclose(ccc_torch(pred, target, mask), ccc_torch(pred, target))
    assert torch.isfinite(regression_loss(pred, target, mask))
