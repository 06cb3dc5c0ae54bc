from dataclasses import asdict

import numpy as np
import pytest
import torch

import clipva.training as training
from clipva.baselines import constant_baseline, ridge_baselines
from clipva.checkpoints import ResumeState, load_head, save_head
from clipva.head import HeadConfig, TemporalHead
from clipva.prompts import emotion_bins, emotion_prompts
from clipva.sequences import predict_clip
from clipva.store import ClipFeatures
from clipva.training import finetune, init_linear_from_ridge, pretrain, validation_ccc
from clipva.windows import Window

WINDOW = Window(12, 6)
PRETRAIN = {
    "epochs": 2,
    "objectives": ["vision_language", "temporal"],
    "batch_size": 8,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "temperature": 0.1,
    "bins": 3,
    "feature_noise": 0.1,
    "frame_drop": 0.1,
    "seed": 0,
}
FINETUNE = {
    "epochs": 6,
    "batch_size": 8,
    "lr": 3e-3,
    "weight_decay": 0.01,
    "warmup_epochs": 1,
    "loss": "mix",
    "ccc_weight": 0.5,
    "patience": 20,
    "seed": 0,
    "linear_init": True,
}


def _clips(n, seed, dim=16):
    """Features that encode smoothed labels linearly, plus noise: learnable, but not trivially."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(2, dim))
    clips = []
    for k in range(n):
        t = rng.integers(10, 30)
        va = np.clip(np.cumsum(rng.normal(0, 1.5, (t, 2)), 0) + rng.uniform(-6, 6, 2), -10, 10).round()
        x = va @ mix / 10 + rng.normal(0, 1.0, (t, dim))  # noisy frames: temporal context helps
        valence, arousal = va[:, 0].astype(np.float32), va[:, 1].astype(np.float32)
        valence[0] = arousal[0] = np.nan  # a frame without a label
        clips.append(ClipFeatures(f"{seed}{k:03d}", x.astype(np.float32), np.arange(t), valence, arousal))
    return clips


@pytest.fixture(scope="module")
def data():
    return {"train": _clips(24, 0), "val": _clips(6, 1), "test": _clips(6, 2)}


def _head(dim=16):
    torch.manual_seed(0)
    return TemporalHead(HeadConfig(in_dim=dim, d_model=32, depth=1, heads=2, embed_dim=16, dropout=0.0))


def test_prompts_and_bins():
    prompts = emotion_prompts(3)
    assert len(prompts) == 9 and len(set(prompts)) == 9
    assert "unpleasant" in prompts[0] and "calm" in prompts[0] and "pleasant" in prompts[-1]
    bins = emotion_bins(torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, -0.9], [0.99, -0.99]]), 3)
    assert bins.tolist() == [0, 8, 3, 6]


def test_pretraining_learns_and_finetuning_beats_the_ridge_probe(data):
    text = np.random.default_rng(0).normal(size=(9, 8)).astype(np.float32)
    cfg = HeadConfig(in_dim=16, d_model=32, depth=1, heads=2, embed_dim=16, dropout=0.0)
    head, history = pretrain(data["train"], cfg, WINDOW, {**PRETRAIN, "epochs": 8}, text)
    assert len(history) == 8 and history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["vision_language"] > 0 and history[-1]["temporal"] > 0
    tuned, hist, best = finetune(data["train"], data["val"], head, WINDOW, {**FINETUNE, "epochs": 15})
    assert best["val_mean_ccc"] == max(r["val_mean_ccc"] for r in hist)
    test = validation_ccc(tuned, data["test"], WINDOW)
    probe = ridge_baselines(data["train"], data["val"], data["test"])["ridge_probe"]["test"]["mean_ccc"]
    constant = constant_baseline(data["train"], data["test"])["mean_ccc"]
    assert test["mean"] > 0.7 and test["mean"] > probe and abs(constant) < 1e-9  # 0.89 vs 0.84 when written


@pytest.mark.parametrize(
    ("readout", "folds", "lead"), [("kernel", 5, 0.03), ("linear", 5, 0.03), ("kernel", 0, 0.0), ("linear", 0, 0.01)]
)
def test_default_head_beats_the_smoothed_probe_and_moves_like_the_labels(data, readout, folds, lead):
    """The defaults' head (readout from the ridge fit, transformer correction, learned smoothing), with the
    default kernel readout and with the linear one, its start chosen by 5-fold CV over the training and
    validation clips (the default) or on the validation split alone. These labels are linear in the features:
    the kernel has nothing to bend. Chosen on 6 validation clips, a correction that won there by chance is
    kept and costs part of the linear readout's lead (test 0.90-0.91 against 0.94 over torch seeds 0-4, the
    probe 0.90); chosen by CV over all 30 clips, either readout scores 0.95 (seeds 0-2)."""
    cfg = HeadConfig(
        in_dim=16, d_model=32, depth=1, heads=2, embed_dim=16, input_dropout=0.3, whitening_eps=10.0, readout=readout
    )
    torch.manual_seed(0)  # torch's own seed differs in every process
    head = TemporalHead(cfg)
    head.set_feature_stats(torch.from_numpy(np.concatenate([c.features for c in data["train"]])))
    start = init_linear_from_ridge(head, data["train"], data["val"], WINDOW, folds=folds)
    assert start["sigma"] >= 1  # noisy frames of labels that move slowly: the start already smooths
    assert start["val_mean_ccc"] == validation_ccc(head, data["val"], WINDOW)["mean"]  # the same path
    assert ("cv_folds" in start) == (folds > 0)
    tuned, _, best = finetune(
        data["train"], data["val"], head, WINDOW, {**FINETUNE, "epochs": 15, "start_folds": folds}
    )
    assert best["val_mean_ccc"] >= start["val_mean_ccc"]
    test = data["test"]
    smoothed = ridge_baselines(data["train"], data["val"], test)["smoothed_ridge_probe"]
    pred = [predict_clip(tuned, c.features, WINDOW) for c in test]
    assert validation_ccc(tuned, test, WINDOW)["mean"] > smoothed["test"]["mean_ccc"] + lead
    change = lambda v: np.nanmean(np.abs(np.diff(v, axis=0)))  # noqa: E731
    ratio = np.mean([change(p) for p in pred]) / np.mean([change(c.labels) / 10 for c in test])
    # No jitter (the head before issue #17 moved 3-10x as much as the labels). The labels' steps are a random
    # walk that the noisy frames do not reveal, so the best CCC comes from curves smoother than the labels:
    # the smoothed probe's move 0.64x as much, the head's 0.43-0.81x (smoothing of 1-2 frames).
    assert 0.3 < ratio < 1.5, ratio


def _with_actors(clips, actors):
    for c, a in zip(clips, actors, strict=True):
        c.actor = a
    return clips


def test_the_start_folds_keep_whole_actors_only_where_validation_has_unseen_actors():
    train = _with_actors(_clips(12, 0), [f"a{k % 4}" for k in range(12)])
    unseen = _with_actors(_clips(4, 1), ["a8", "a8", "a9", "a9"])
    fold, k = training.start_folds(train, unseen, 5)
    assert k == 5 and sorted(set(fold)) == list(range(5))  # 6 actors: every fold has one or two
    actor = [c.actor for c in train + unseen]
    assert all(len({f for f, a in zip(fold, actor, strict=True) if a == name}) == 1 for name in set(actor))
    seen = _with_actors(_clips(4, 1), ["a0", "a1", "a8", "a9"])  # validation shares actors with training
    fold, k = training.start_folds(train, seen, 5)
    assert k == 5 and len({f for f, a in zip(fold, [c.actor for c in train + seen], strict=True) if a == "a0"}) > 1
    assert training.start_folds(_clips(12, 0), _clips(4, 1), 5)[1] == 5  # actors unknown: whole clips
    assert training.start_folds(train[:1], unseen[:1], 5)[1] == 2  # two actors: two folds
    one = _with_actors(_clips(3, 0), ["a0"] * 3)
    assert training.start_folds(one, _with_actors(_clips(1, 1), ["a0"]), 5)[1] == 4  # one actor: by clip
    assert training.start_folds(one[:1], [], 5) is None  # a single clip: nothing to cross-validate


def test_the_cv_start_chooses_by_its_score_where_no_two_consecutive_frames_are_labeled():
    """With every other frame labeled the labels' frame-to-frame change is unknown: the rule that candidates
    move no more than the labels cannot apply, and the score alone chooses (noisy frames: it smooths)."""
    clips = _clips(30, 0)
    for c in clips:
        c.valence[1::2] = c.arousal[1::2] = np.nan
    head = _head()
    head.set_feature_stats(torch.from_numpy(np.concatenate([c.features for c in clips[:24]])))
    start = init_linear_from_ridge(head, clips[:24], clips[24:], WINDOW, folds=5)
    assert start["sigma"] >= 1 and start["cv_mean_ccc"] > 0.7, start


def test_the_cv_start_scores_every_clip_by_fits_that_did_not_see_it():
    """Labels that the features cannot predict, with more features than a clip's frames: fitted on all clips, a
    weak ridge reproduces them (in-sample CCC near 1); scored on clips left out of the fit it cannot. A score
    that had seen the clip it scores would choose that fit and report it as the start's."""
    rng = np.random.default_rng(0)
    clips = []
    for k in range(20):
        t = 8
        x = rng.normal(size=(t, 64)).astype(np.float32)
        va = rng.uniform(-10, 10, (t, 2)).astype(np.float32)
        clips.append(ClipFeatures(f"n{k:02d}", x, np.arange(t), va[:, 0], va[:, 1]))
    cfg = HeadConfig(in_dim=64, d_model=16, depth=1, heads=2, embed_dim=8, readout="kernel", kernel_centres=64)
    head = TemporalHead(cfg)
    head.set_feature_stats(torch.from_numpy(np.concatenate([c.features for c in clips[:15]])))
    start = init_linear_from_ridge(head, clips[:15], clips[15:], WINDOW, folds=5)
    assert start["cv_folds"] == 5 and start["cv_mean_ccc"] < 0.3, start


def test_a_head_saved_before_smoothing_existed_loads_as_it_was(tmp_path):
    """Older checkpoints hold neither the encoder type, the smoothing nor the output in their config: they
    were tanh transformers, and must predict as such rather than take today's defaults."""
    old = TemporalHead(
        HeadConfig(in_dim=16, d_model=32, depth=1, heads=2, embed_dim=16, smoothing=False, output="tanh")
    )
    torch.nn.init.normal_(old.linear.weight, 0, 3.0)
    config = {k: v for k, v in asdict(old.cfg).items() if k not in ("type", "smoothing", "output")}
    state = {k: v for k, v in old.state_dict().items() if k != "log_sigma"}
    torch.save({"head_config": config, "window": WINDOW.to_dict(), "state_dict": state}, tmp_path / "old.pt")
    loaded, _ = load_head(tmp_path / "old.pt")
    x = torch.randn(1, 10, 16)
    assert loaded.cfg.output == "tanh" and not loaded.cfg.smoothing
    assert torch.equal(old.eval()(x)[0], loaded.eval()(x)[0]) and loaded(x)[0].abs().max() <= 1


def test_zero_pretraining_epochs_return_an_initialised_head(data):
    cfg = HeadConfig(in_dim=16, d_model=32, depth=1, heads=2, embed_dim=16)
    head, history = pretrain(data["train"], cfg, WINDOW, {**PRETRAIN, "epochs": 0}, None)
    assert history == [] and isinstance(head, TemporalHead)
    with pytest.raises(ValueError, match="text embeddings"):
        pretrain(data["train"], cfg, WINDOW, PRETRAIN, None)


def test_finetune_is_reproducible_and_resumes_to_the_same_result(data, tmp_path, monkeypatch):
    full, full_hist, _ = finetune(data["train"], data["val"], _head(), WINDOW, FINETUNE)
    again, again_hist, _ = finetune(data["train"], data["val"], _head(), WINDOW, FINETUNE)
    assert full_hist == again_hist

    state = ResumeState(tmp_path / "state.pt", "fingerprint-a")
    seen = {"epoch": None, "steps": 0}
    real_rng, real_loss = training.epoch_rng, training.regression_loss

    def tracking_rng(seed, epoch):
        seen["epoch"], seen["steps"] = epoch, 0
        return real_rng(seed, epoch)

    def killed_mid_epoch_4(*args, **kwargs):
        seen["steps"] += 1
        if seen["epoch"] == 3 and seen["steps"] == 2:
            raise KeyboardInterrupt  # like a kill in the middle of the 4th epoch
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(training, "epoch_rng", tracking_rng)
    monkeypatch.setattr(training, "regression_loss", killed_mid_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        finetune(data["train"], data["val"], _head(), WINDOW, FINETUNE, state)
    assert torch.load(state.path, weights_only=True)["epoch"] == 2
    monkeypatch.setattr(training, "regression_loss", real_loss)
    resumed, resumed_hist, _ = finetune(data["train"], data["val"], _head(), WINDOW, FINETUNE, state)
    assert resumed_hist == full_hist
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # a state saved for other settings is ignored
    assert ResumeState(state.path, "fingerprint-b").load() is None


def test_head_checkpoint_round_trip(tmp_path):
    head = _head()
    save_head(tmp_path / "h.pt", head, WINDOW, best={"epoch": 3})
    loaded, ckpt = load_head(tmp_path / "h.pt")
    assert ckpt["window"] == WINDOW and ckpt["best"] == {"epoch": 3}
    x = torch.randn(1, 10, 16)
    head.eval()
    loaded.eval()
    assert torch.equal(head(x)[0], loaded(x)[0])


def _full_clips(n, seed, dim=16, length=24):
    """Fully labeled clips longer than the window: every training window has the same number of frames."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(2, dim))
    clips = []
    for k in range(n):
        va = np.clip(np.cumsum(rng.normal(0, 1.5, (length, 2)), 0), -10, 10).round().astype(np.float32)
        x = (va @ mix / 10 + rng.normal(0, 1.0, (length, dim))).astype(np.float32)
        clips.append(ClipFeatures(f"{seed}{k:03d}", x, np.arange(length), va[:, 0].copy(), va[:, 1].copy()))
    return clips


def test_accumulating_two_half_batches_equals_one_full_batch():
    train, val = _full_clips(12, 0), _full_clips(4, 1)
    cfg = {**FINETUNE, "loss": "mse", "epochs": 3, "linear_init": False}
    full, full_hist, _ = finetune(train, val, _head(), WINDOW, {**cfg, "batch_size": 8})
    halves, halves_hist, _ = finetune(train, val, _head(), WINDOW, {**cfg, "batch_size": 4, "accumulate": 2})
    small, small_hist, _ = finetune(train, val, _head(), WINDOW, {**cfg, "batch_size": 4})
    assert [r["val_mean_ccc"] for r in halves_hist] == pytest.approx([r["val_mean_ccc"] for r in full_hist], abs=1e-6)

    def outputs(head):
        return np.concatenate([predict_clip(head, c.features, Window(12, 6)) for c in val])

    # the same predictions (parameters too, except the attention's key bias: its gradient is zero in exact
    # arithmetic, so Adam turns float noise there into steps that change no output)
    assert np.abs(outputs(full) - outputs(halves)).max() < 1e-5
    # without accumulation, batches of 4 take twice the steps and end elsewhere
    assert np.abs(outputs(full) - outputs(small)).max() > 1e-3


def test_accumulator_steps_once_per_group_including_the_last_partial_one():
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    calls = []
    optimizer.step = lambda: calls.append(weight.grad.item())
    acc = training.Accumulator(optimizer, every=3, n_batches=7)
    for i in range(7):
        acc.backward(i, weight * (i + 1))  # gradient of batch i is i + 1
    # groups {1,2,3}, {4,5,6}, {7}: each step sees its group's mean gradient
    assert calls == pytest.approx([2.0, 5.0, 7.0])


def test_pretraining_with_accumulation_learns(data):
    text = np.random.default_rng(0).normal(size=(9, 8)).astype(np.float32)
    cfg = HeadConfig(in_dim=16, d_model=32, depth=1, heads=2, embed_dim=16, dropout=0.0)
    _, history = pretrain(data["train"], cfg, WINDOW, {**PRETRAIN, "epochs": 8, "batch_size": 4, "accumulate": 2}, text)
    assert history[-1]["loss"] < history[0]["loss"]


def test_a_grad_scaler_steps_as_without_it_and_skips_overflowed_steps():
    """fp16 LoRA scales the loss so small gradients survive; the update itself is the unscaled one."""
    from clipva.training import Accumulator

    def run(scaler, blow_up=False):
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        acc = Accumulator(opt, 2, 4, scaler=scaler)
        x = torch.randn(4, 8, 4)
        for i in range(4):
            loss = layer(x[i]).pow(2).mean()
            acc.backward(i, loss * float("inf") if blow_up and i == 1 else loss)
        return torch.cat([p.detach().flatten() for p in layer.parameters()])

    plain = run(None)
    assert torch.allclose(run(torch.amp.GradScaler("cpu", init_scale=2.0**12)), plain, atol=1e-6)
    torch.manual_seed(0)
    untouched = torch.cat([p.detach().flatten() for p in torch.nn.Linear(4, 1).parameters()])
    skipped_first = run(torch.amp.GradScaler("cpu", init_scale=2.0**12), blow_up=True)
    assert not torch.allclose(skipped_first, plain) and not torch.allclose(skipped_first, untouched)
    assert torch.isfinite(skipped_first).all()  # the overflowed step was skipped, the next one taken


def test_only_fp16_on_a_gpu_scales_gradients(monkeypatch):
    from clipva.feature_sources import AdaptedFrames, CachedFeatures

    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)  # as on a GPU

    def scaler(device, dtype):
        fake = AdaptedFrames.__new__(AdaptedFrames)
        fake.device, fake.dtype = torch.device(device), dtype
        return fake.grad_scaler()

    assert scaler("cuda", torch.float16).is_enabled()
    assert not scaler("cuda", torch.bfloat16).is_enabled() and not scaler("cpu", torch.bfloat16).is_enabled()
    assert not CachedFeatures().grad_scaler().is_enabled()


def _bent_clips(n, seed, dim=8):
    """Labels that are a bent (even) function of the features: |x . u| carries valence, so no linear readout
    can find it, while a Gaussian kernel one can."""
    rng = np.random.default_rng(seed)
    u = np.random.default_rng(7).normal(size=dim)
    u /= np.linalg.norm(u)
    clips = []
    for k in range(n):
        t = int(rng.integers(12, 24))
        x = rng.normal(0, 1.0, (t, dim))
        s = np.abs(x @ u)
        valence = (8 * (s - 0.8)).clip(-10, 10).astype(np.float32)
        arousal = (6 * np.tanh(x[:, 0])).astype(np.float32)
        clips.append(ClipFeatures(f"b{seed}{k:03d}", x.astype(np.float32), np.arange(t), valence, arousal))
    return clips


@pytest.mark.parametrize("folds", [0, 5])  # chosen on validation, or by CV over training and validation clips
def test_the_kernel_readout_starts_from_kernel_ridge_and_fits_what_the_linear_one_cannot(folds):
    train, val = _bent_clips(30, 0), _bent_clips(8, 1)
    starts = {}
    for readout in ("linear", "kernel"):  # isotropic features have no leading directions: the kernel sees all
        cfg = HeadConfig(
            in_dim=8, d_model=16, depth=1, heads=2, embed_dim=8, readout=readout, kernel_centres=256, kernel_share=1.0
        )
        head = TemporalHead(cfg)
        head.set_feature_stats(torch.from_numpy(np.concatenate([c.features for c in train])))
        starts[readout] = init_linear_from_ridge(head, train, val, WINDOW, folds=folds)
        # the head predicts exactly the chosen (smoothed) probe, through the same path as validation
        assert starts[readout]["val_mean_ccc"] == pytest.approx(validation_ccc(head, val, WINDOW)["mean"], abs=1e-6)
    assert starts["kernel"]["val_mean_ccc"] > starts["linear"]["val_mean_ccc"] + 0.2, starts
    assert starts["kernel"]["kernel_gamma"] is not None
