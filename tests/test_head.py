import json
from dataclasses import asdict, replace

import pytest
import torch

from clipva.head import HEAD_TYPES, HeadConfig, TemporalHead, frame_feature_augment, gaussian_smooth

CFG = HeadConfig(in_dim=24, d_model=32, depth=2, heads=4, dropout=0.1, max_len=40, embed_dim=16)


@pytest.fixture(params=HEAD_TYPES)
def head_type(request) -> str:
    return request.param


def _head(cfg: HeadConfig = CFG, head_type: str = "transformer") -> TemporalHead:
    torch.manual_seed(0)
    head = TemporalHead(replace(cfg, type=head_type))
    with torch.no_grad():  # a readout that is not zero, as after fine-tuning's ridge start
        head.linear.weight.normal_(0, 0.3)
    return head


def test_shapes_and_ranges(head_type):
    head = _head(head_type=head_type)
    x = 5 * torch.randn(3, 17, CFG.in_dim)
    va, pooled = head(x)
    assert va.shape == (3, 17, 2) and pooled.shape == (3, CFG.embed_dim)
    assert torch.isfinite(va).all() and torch.isfinite(pooled).all() and va.abs().max() > 1  # linear output
    bounded = TemporalHead(replace(CFG, type=head_type, output="tanh"))
    bounded.load_state_dict(head.state_dict())
    assert bounded(x)[0].abs().max() <= 1


@pytest.mark.parametrize("grad", [False, True])
def test_padding_invariance(grad, head_type):
    head = _head(head_type=head_type).eval()
    x = torch.randn(2, 12, CFG.in_dim)
    with torch.set_grad_enabled(grad):
        va, pooled = head(x)
        xp = torch.cat([x, 100 * torch.randn(2, 7, CFG.in_dim)], 1)
        mask = torch.arange(19) < 12
        va_p, pooled_p = head(xp, mask.expand(2, -1))
    torch.testing.assert_close(va_p[:, :12], va, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled_p, pooled, atol=1e-5, rtol=1e-5)


def test_ragged_batch_matches_single_sequences(head_type):
    head = _head(head_type=head_type).eval()
    lens = [5, 11, 8]
    xs = [torch.randn(n, CFG.in_dim) for n in lens]
    x = torch.zeros(3, 11, CFG.in_dim)
    mask = torch.zeros(3, 11, dtype=torch.bool)
    for i, xi in enumerate(xs):
        x[i, : len(xi)], mask[i, : len(xi)] = xi, True
    with torch.no_grad():
        va, pooled = head(x, mask)
        for i, xi in enumerate(xs):
            va_i, pooled_i = head(xi[None])
            torch.testing.assert_close(va[i, : len(xi)], va_i[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(pooled[i], pooled_i[0], atol=1e-5, rtol=1e-5)


def test_masked_frames_do_not_change_pooled(head_type):
    head = _head(head_type=head_type).eval()
    x = torch.randn(2, 10, CFG.in_dim)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[:, [2, 7]] = False
    x2 = x.clone()
    x2[:, [2, 7]] = torch.randn(2, 2, CFG.in_dim) * 50
    with torch.no_grad():
        (va, pooled), (va2, pooled2) = head(x, mask), head(x2, mask)
    torch.testing.assert_close(pooled2, pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(va2[mask], va[mask], atol=1e-5, rtol=1e-5)


def test_too_long_window_errors():
    head = _head()
    head(torch.randn(1, CFG.max_len, CFG.in_dim))
    with pytest.raises(ValueError, match="max_len"):
        head(torch.randn(1, CFG.max_len + 1, CFG.in_dim))


def test_gradients_reach_all_parameters(head_type):
    head = _head(head_type=head_type).train()
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    va, pooled = head(torch.randn(2, 9, CFG.in_dim), mask)
    (va.square().sum() + pooled.square().sum()).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_config_asdict_round_trip():
    d = json.loads(json.dumps(asdict(CFG)))
    assert HeadConfig(**d) == CFG
    a, b = _head(), TemporalHead(HeadConfig(**d))
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 6, CFG.in_dim)
    a.eval(), b.eval()
    torch.testing.assert_close(a(x)[0], b(x)[0])


@pytest.mark.parametrize("head_type", [t for t in HEAD_TYPES if t != "none"])
def test_overfits_neighbour_dependent_targets(head_type):
    torch.manual_seed(0)
    cfg = HeadConfig(in_dim=8, d_model=32, depth=2, heads=4, dropout=0.0, max_len=32, embed_dim=8, type=head_type)
    head = TemporalHead(cfg)
    x = torch.randn(16, 24, cfg.in_dim)
    prev, nxt = torch.roll(x, 1, dims=1), torch.roll(x, -1, dims=1)  # neighbouring frames (circular)
    y = 0.8 * torch.tanh(torch.stack([prev[..., 0] - nxt[..., 1], prev[..., 2] * nxt[..., 3]], -1))
    const_mse = y.var(dim=(0, 1), unbiased=False).mean().item()
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(300):
        loss = (head(x)[0] - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        mse = (head(x)[0] - y).square().mean().item()
    assert mse < 0.05 * const_mse, (mse, const_mse)


def test_frame_feature_augment():
    x = torch.randn(4, 50, 16) * 3
    g = torch.Generator().manual_seed(0)
    out = frame_feature_augment(x, noise_std=0.1, drop_prob=0.3, generator=g)
    assert out.shape == x.shape and out is not x
    dropped = (out == 0).all(-1)
    assert 0.15 < dropped.float().mean() < 0.45
    noise = (out - x)[~dropped]
    assert 0.2 < noise.std() < 0.4  # 0.1 * std(x) ~ 0.3
    same = frame_feature_augment(x, 0.1, 0.3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, out)
    clean = frame_feature_augment(x, 0.0, 0.0)
    torch.testing.assert_close(clean, x)
    assert clean.data_ptr() != x.data_ptr()
    with pytest.raises(ValueError):
        frame_feature_augment(x, -1.0, 0.0)
    with pytest.raises(ValueError):
        frame_feature_augment(x, 0.0, 1.5)


def test_gaussian_smoothing_is_a_masked_weighted_mean():
    v = torch.randn(2, 15, 2)
    mask = torch.ones(2, 15, dtype=torch.bool)
    mask[1, 10:] = False
    sharp = gaussian_smooth(v, mask, torch.tensor([1e-3, 1e-3]))
    torch.testing.assert_close(sharp[mask], v[mask])  # a tiny width leaves the values alone
    flat = gaussian_smooth(v, mask, torch.tensor([1e4, 1e4]))
    torch.testing.assert_close(flat[0], v[0].mean(0).expand(15, 2))  # a huge one gives the window's mean
    torch.testing.assert_close(flat[1, :10], v[1, :10].mean(0).expand(10, 2))  # of its real frames only
    mid = gaussian_smooth(v, mask, torch.tensor([2.0, 0.5]))
    change = lambda a: (a[0, 1:] - a[0, :-1]).abs().mean(0)  # noqa: E731
    assert (change(mid) < change(v)).all() and change(mid)[0] < change(mid)[1]  # wider: smoother


def test_unknown_type_or_output_is_refused():
    with pytest.raises(ValueError, match="head type 'lstm'"):
        TemporalHead(replace(CFG, type="lstm"))
    with pytest.raises(ValueError, match="output"):
        TemporalHead(replace(CFG, output="relu"))


def test_kernel_readout_is_the_nystroem_expansion_on_its_centres():
    """At its centres the kernel readout's inputs reproduce the Gaussian kernel exactly (phi phi^T = K), unused
    centre slots add nothing, and the expansion is saved with the head and restored from its state."""
    cfg = replace(CFG, readout="kernel", kernel_centres=8)
    head = TemporalHead(cfg).eval()
    centres = torch.randn(5, CFG.in_dim, dtype=torch.float64)
    head.set_kernel(centres, gamma=0.05)
    phi = head.kernel_features(centres.float())
    kernel = torch.exp(-0.05 * torch.cdist(centres, centres).square()).float()
    torch.testing.assert_close(phi @ phi.T, kernel, atol=1e-4, rtol=1e-4)
    assert phi.shape == (5, 8) and phi[:, 5:].abs().max() == 0
    with torch.no_grad():
        head.linear.weight.normal_(0, 0.3)
        head.kernel.weight.normal_(0, 0.3)
    loaded = TemporalHead(HeadConfig(**json.loads(json.dumps(asdict(cfg)))))
    loaded.load_state_dict(head.state_dict())
    x = torch.randn(1, 7, CFG.in_dim)
    torch.testing.assert_close(head(x)[0], loaded.eval()(x)[0])


def test_the_kernel_measures_distances_in_the_leading_directions_only():
    """With a kernel_share of the directions the kernel's features ignore what a frame changes in the features' trailing
    principal directions, and still see the leading ones; with 0 every direction counts."""
    scales = torch.logspace(1, -2, CFG.in_dim, dtype=torch.float64)  # variance falls from the first feature on
    features = torch.randn(2000, CFG.in_dim, dtype=torch.float64) * scales
    heads = {}
    for dims in (6, 0):  # 6 of 24 directions, or all
        share = dims / CFG.in_dim or 1.0
        head = TemporalHead(replace(CFG, readout="kernel", kernel_centres=16, kernel_share=share)).eval()
        head.set_feature_stats(features)
        head.set_kernel(head.whiten(features[:16].float()).double(), gamma=0.1)
        heads[dims] = head
    projection = heads[6].kernel_projection
    torch.testing.assert_close(projection @ projection, projection, atol=1e-5, rtol=1e-5)
    assert torch.linalg.matrix_rank(projection) == 6 and heads[0].kernel_projection.equal(torch.eye(CFG.in_dim))
    assert (projection.diagonal()[:6] > 0.9).all()  # the first features are the leading directions
    z = heads[6].whiten(features[16:20].float())
    step = torch.randn(CFG.in_dim)
    trailing, leading = step - step @ projection, step @ projection
    trailing, leading = 3 * trailing / trailing.norm(), 3 * leading / leading.norm()
    phi = {dims: [h.kernel_features(z + d) for d in (0, trailing, leading)] for dims, h in heads.items()}
    torch.testing.assert_close(phi[6][1], phi[6][0], atol=1e-5, rtol=1e-4)
    assert (phi[6][2] - phi[6][0]).abs().max() > 1e-2
    assert (phi[0][1] - phi[0][0]).abs().max() > 1e-2


def test_a_kernel_head_saved_before_kernel_share_loads_as_it_predicted():
    """Its state has no kernel_projection: it measured distances in every direction, and still does."""
    cfg = replace(CFG, readout="kernel", kernel_centres=8)
    head = TemporalHead(replace(cfg, kernel_share=1.0)).eval()
    head.set_kernel(torch.randn(5, CFG.in_dim, dtype=torch.float64), gamma=0.05)
    with torch.no_grad():
        head.kernel.weight.normal_(0, 0.3)
    old = {k: v for k, v in head.state_dict().items() if k != "kernel_projection"}
    loaded = TemporalHead(cfg).eval()
    loaded.load_state_dict(old)
    x = torch.randn(1, 7, CFG.in_dim)
    torch.testing.assert_close(loaded(x)[0], head(x)[0])
    assert loaded.cfg.kernel_share == 1.0  # and says so, for a head fine-tuned or exported from it
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match=f"kernel_share {share} is not in"):
            TemporalHead(replace(cfg, kernel_share=share))


def test_a_linear_readout_saves_what_it_saved_before_the_kernel_readout_existed():
    kernel = {"centres", "nystroem", "kernel_gamma", "kernel.weight", "kernel.bias", "kernel_projection"}
    assert not kernel & set(_head().state_dict())
    assert kernel <= set(TemporalHead(replace(CFG, readout="kernel")).state_dict())


def test_unknown_readout_or_too_many_centres_is_refused():
    with pytest.raises(ValueError, match="readout 'quadratic'"):
        TemporalHead(replace(CFG, readout="quadratic"))
    with pytest.raises(ValueError, match="kernel_centres"):
        TemporalHead(replace(CFG, readout="kernel", kernel_centres=10**9))
