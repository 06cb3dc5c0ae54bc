"""The two training stages of the temporal head: contrastive pretraining and regression fine-tuning.

Randomness is drawn per epoch from (seed, epoch), so a run resumed after its last completed epoch takes
exactly the same path as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clipva.atomic import write_text
from clipva.baselines import (
    RIDGE_ALPHAS,
    STREAM_ABOVE,
    mean_abs_change,
    raw_moments,
    ridge_from_moments,
    ridge_solutions,
    row_chunks,
    streamed_moments,
    streamed_ridge_solutions,
)
from clipva.checkpoints import ResumeState, fingerprint, load_head, save_head
from clipva.encoder import resolve_device
from clipva.feature_sources import CachedFeatures, backbone_of
from clipva.head import HeadConfig, TemporalHead, frame_feature_augment
from clipva.lora import export_merged, save_adapters
from clipva.losses import regression_loss, temporal_contrastive_loss, vision_language_loss
from clipva.metrics import ccc
from clipva.prompts import emotion_bins
from clipva.sequences import VA_SCALE, clip_windows, load_splits, merge_predictions, predict_clip, sample_windows
from clipva.store import ClipFeatures
from clipva.windows import Window, random_window, window_starts

log = logging.getLogger(__name__)
CPU = torch.device("cpu")


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    torch.manual_seed(seed * 100_003 + epoch)
    return np.random.default_rng([seed, epoch])


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Progress:
    """Logs the step count of a long epoch (the LoRA path) every `every` seconds."""

    def __init__(self, every: float = 30.0):
        self.every, self.start, self.last = every, time.perf_counter(), time.perf_counter()

    def step(self, stage: str, epoch: int, step: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            log.info("%s epoch %d: step %d/%d (%.1f s/step)", stage, epoch + 1, step, total, (now - self.start) / step)


def _batches(windows: list, batch_size: int) -> list[list]:
    return [windows[i : i + batch_size] for i in range(0, len(windows), batch_size)]


class Accumulator:
    """Gradient accumulation: one optimizer step per `every` batches of an epoch of `n_batches` (the last
    group may be smaller). Each loss is divided by its group's size, so a step follows the mean gradient of
    its batches: with per-batch mean losses of equal weight, a step over k batches of b windows equals one
    over a batch of k*b. Batch-level losses (CCC, contrastive) are computed per batch."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        every: int,
        n_batches: int,
        scheduler=None,
        scaler: torch.amp.GradScaler | None = None,
    ):
        """`scaler`: the backbone's loss scaler (a disabled one, the default, steps as the optimizer alone)."""
        self.optimizer, self.every, self.n, self.scheduler = optimizer, every, n_batches, scheduler
        self.scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
        optimizer.zero_grad(set_to_none=True)

    def backward(self, i: int, loss: torch.Tensor) -> None:
        """Backpropagate the loss of batch `i`; step the optimizer when its group is complete."""
        first = i // self.every * self.every
        size = min(self.every, self.n - first)
        self.scaler.scale(loss / size).backward()
        if i + 1 == first + size:
            self.scaler.step(self.optimizer)  # skipped where fp16 gradients overflowed
            self.scaler.update()
            if self.scheduler is not None:
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)


class PretrainModel(nn.Module):
    """The head plus the projection of its pooled embedding into CLIP's text space (pretraining only)."""

    def __init__(self, head: TemporalHead, text_dim: int):
        super().__init__()
        self.head = head
        self.to_text = nn.Linear(head.cfg.embed_dim, text_dim)


def head_config(settings: dict, in_dim: int) -> tuple[HeadConfig, Window]:
    """The config's `head` section -> (the head's architecture for `in_dim`-wide features, its window).
    The positional encoding covers at least the window."""
    window = Window.from_dict(settings)
    arch = {k: v for k, v in settings.items() if k not in ("window", "stride")}
    return HeadConfig(in_dim=in_dim, max_len=max(256, window.length), **arch), window


def new_head(cfg: HeadConfig, train: list[ClipFeatures]) -> TemporalHead:
    """A fresh head that whitens with the statistics of every training frame."""
    head = TemporalHead(cfg)
    if sum(len(c.features) for c in train) * cfg.in_dim > STREAM_ABOVE:
        _, mean, cov = streamed_moments(row_chunks([c.features for c in train]))
        head.set_feature_moments(mean, cov)
    else:
        head.set_feature_stats(torch.from_numpy(np.concatenate([c.features for c in train])))
    return head


def _optimizer(params: list, backbone, lr: float, weight_decay: float) -> torch.optim.AdamW:
    groups = [{"params": params, "lr": lr}]
    if backbone.trainable():
        groups.append({"params": backbone.trainable(), "lr": backbone.lr})
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def pretrain(
    train: list[ClipFeatures],
    head_cfg: HeadConfig,
    window: Window,
    cfg: dict,
    text_emb: np.ndarray | None,
    resume: ResumeState | None = None,
    device: torch.device = CPU,
    backbone=None,
) -> tuple[TemporalHead, list[dict]]:
    """Contrastive pretraining: vision-language (window embedding vs. CLIP text embedding of its emotion bin)
    and temporal (two windows of one clip are positives). `backbone` (default: the cached features) gives
    the frame features; with LoRA its adapters train too. Returns the head and the loss history."""
    backbone = backbone or CachedFeatures()
    torch.manual_seed(cfg["seed"])
    objectives = set(cfg["objectives"])
    if "vision_language" in objectives and text_emb is None and cfg["epochs"] > 0:
        raise ValueError("pretrain: the vision_language objective needs the text embeddings")
    head = new_head(head_cfg, train)
    model = PretrainModel(head, text_emb.shape[1] if text_emb is not None else 1).to(device)
    text = torch.as_tensor(text_emb, dtype=torch.float32, device=device) if text_emb is not None else None
    optimizer = _optimizer(list(model.parameters()), backbone, cfg["lr"], cfg["weight_decay"])
    scaler = backbone.grad_scaler()
    history: list[dict] = []
    start = 0
    state = resume.load() if resume else None
    if state:
        model.load_state_dict(state["model"])
        backbone.load_state_dict(state["backbone"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state.get("scaler", {}))  # {}: a state saved before loss scaling existed
        history, start = state["history"], state["epoch"] + 1
        log.info("pretrain: resuming after epoch %d", state["epoch"])
    length = window.length
    for epoch in range(start, cfg["epochs"]):
        rng = epoch_rng(cfg["seed"], epoch)
        progress = Progress()
        model.train()
        backbone.train(True)
        sums = {k: torch.zeros((), device=device) for k in ("loss", "vision_language", "temporal")}
        steps = 0
        firsts = [b for b in _batches(sample_windows(train, length, rng), cfg["batch_size"]) if len(b) >= 2]
        seconds = [[(i, *random_window(len(train[i].features), length, rng)) for i, _, _ in b] for b in firsts]
        seeds = rng.integers(2**31, size=len(firsts))
        pairs = [a + b for a, b in zip(firsts, seconds, strict=True)]
        accumulator = Accumulator(optimizer, cfg.get("accumulate", 1), len(firsts), scaler=scaler)
        for batch_windows, both, seed in zip(
            firsts, backbone.epoch_batches(train, pairs, epoch, device), seeds, strict=True
        ):
            n = len(batch_windows)
            a = {k: v[:n] for k, v in both.items()}
            b = {k: v[n:] for k, v in both.items()}
            gen = torch.Generator(device=device).manual_seed(int(seed))
            xa = frame_feature_augment(a["x"], cfg["feature_noise"], cfg["frame_drop"], gen)
            xb = frame_feature_augment(b["x"], cfg["feature_noise"], cfg["frame_drop"], gen)
            _, za = model.head(xa, a["mask"])
            loss = torch.zeros((), device=device)
            if "temporal" in objectives:
                _, zb = model.head(xb, b["mask"])
                clip_ids = torch.tensor([i for i, _, _ in batch_windows], device=device)
                part = temporal_contrastive_loss(za, zb, cfg["temperature"], clip_ids)
                sums["temporal"] += part.detach()
                loss = loss + part
            if "vision_language" in objectives:
                labeled = torch.isfinite(a["y"][..., 0]) & a["mask"]
                has = labeled.any(1)
                if has.sum() >= 2:
                    mean_va = torch.nan_to_num(a["y"]).sum(1) / labeled.sum(1, keepdim=True).clamp_min(1)
                    bins = emotion_bins(mean_va[has], cfg["bins"])
                    part = vision_language_loss(model.to_text(za[has]), text, bins, cfg["temperature"])
                    sums["vision_language"] += part.detach()
                    loss = loss + part
            accumulator.backward(steps, loss)
            sums["loss"] += loss.detach()
            steps += 1
            progress.step("pretrain", epoch, steps, len(firsts))
        record = {"epoch": epoch, **{k: v.item() / max(1, steps) for k, v in sums.items()}}
        history.append(record)
        log.info(
            "pretrain epoch %d/%d: loss %.4f (vision_language %.4f, temporal %.4f)",
            epoch + 1,
            cfg["epochs"],
            record["loss"],
            record["vision_language"],
            record["temporal"],
        )
        if resume:
            resume.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": history,
                    "backbone": backbone.state_dict(),
                    "epoch": epoch,
                    "scaler": scaler.state_dict(),
                }
            )
    return model.head.cpu(), history


def pooled_ccc(clips: list[ClipFeatures], preds: list[np.ndarray]) -> dict:
    """CCC of each dimension over all labeled frames of `clips` (pooled) given their per-frame predictions in
    -1..1, and the mean of the two."""
    p = np.concatenate([pred[clip.labeled] for clip, pred in zip(clips, preds, strict=True)])
    t = np.concatenate([clip.labels[clip.labeled] / VA_SCALE for clip in clips])
    scores = {dim: ccc(p[:, k], t[:, k]) for k, dim in enumerate(("valence", "arousal"))}
    return {**scores, "mean": float(np.nanmean(list(scores.values())))}


def validation_ccc(head: TemporalHead, clips: list[ClipFeatures], window: Window, backbone=None) -> dict:
    """pooled_ccc of the head's predictions of `clips`, computed on the head's device."""
    backbone = backbone or CachedFeatures()
    backbone.train(False)
    features = backbone.features_of(clips)
    return pooled_ccc(clips, [predict_clip(head, f, window) for f in features])


SMOOTHING_SIGMAS = (0.3, 1.0, 2.0, 4.0, 8.0, 16.0)  # frames; 0.3 is hardly any smoothing


def _array(features) -> np.ndarray:
    """One clip's features (an array, or a tensor of the LoRA tower's) as an array."""
    return features.detach().cpu().numpy() if torch.is_tensor(features) else np.asarray(features)


@torch.no_grad()
def init_linear_from_ridge(
    head: TemporalHead,
    train: list[ClipFeatures],
    val: list[ClipFeatures],
    window: Window,
    backbone=None,
    alphas: tuple[float, ...] = RIDGE_ALPHAS,
    sigmas: tuple[float, ...] = SMOOTHING_SIGMAS,
    folds: int = 0,
) -> dict:
    """Start fine-tuning from the best linear probe: fit ridge regressions of the labels (atanh of them under a
    tanh output) on the whitened features of the labeled training frames, keep the one of the best validation
    mean CCC in the head's linear path, together with the smoothing width, and zero the encoder's output so
    the head predicts exactly that (smoothed) probe. With the kernel readout, then fit kernel ridge to that
    probe's training residuals for each kernel width and keep the correction (and smoothing) of the best
    validation mean CCC, or none where none beats the linear probe.

    With `folds` >= 2 these choices are made by cross-validation over the training and validation clips
    together instead (`_start_by_cv`), and the chosen fits are then made on the training clips as above."""
    backbone = backbone or CachedFeatures()
    backbone.train(False)
    features = backbone.features_of(train)
    xs, keep, ys = [_array(f) for f in features], [c.labeled for c in train], _targets(head, train)
    nn.init.zeros_(head.va.weight)
    nn.init.zeros_(head.va.bias)
    assignment = start_folds(train, val, folds) if folds >= 2 else None
    if assignment is not None:
        return _start_by_cv(head, train, val, window, backbone, xs, ys, keep, alphas, sigmas, assignment)
    solved = _ridge(head, xs, ys, keep, alphas, lambda z: z, head.cfg.in_dim)
    # With the encoder's output at zero the head predicts finish(readout(whitened features)): the validation
    # windows are whitened once, and each candidate costs a linear map and a smoothing, not a forward pass.
    head.eval()
    whitened = []  # per validation clip: frames, window starts, whitened windows, their (all real) frames
    for f in backbone.features_of(val):
        starts, windows = clip_windows(f, window, head.feature_mean.device)
        real = torch.ones(windows.shape[:2], dtype=torch.bool, device=windows.device)
        whitened.append((len(f), starts, head.whiten(windows), real))

    def score(readouts: list[torch.Tensor], smoothings) -> dict:
        """Validation mean CCC of per-window readouts (one tensor per clip), for each smoothing width."""
        out = {}
        for sigma in smoothings if head.cfg.smoothing else (1.0,):
            head.log_sigma.fill_(math.log(sigma))
            preds = [
                merge_predictions(n, starts, head.finish(r, real))
                for (n, starts, _, real), r in zip(whitened, readouts, strict=True)
            ]
            out[sigma] = pooled_ccc(val, preds)["mean"]
        return out

    solutions = dict(zip(alphas, solved, strict=True))
    scores = {}
    for alpha, (w, b) in solutions.items():
        _set_linear(head.linear, w, b)
        readouts = [head.linear(x) for _, _, x, _ in whitened]
        scores.update({(alpha, sigma): v for sigma, v in score(readouts, sigmas).items()})
    alpha, sigma = max(scores, key=scores.get)
    _set_linear(head.linear, *solutions[alpha])
    head.log_sigma.fill_(math.log(sigma))
    start = {"alpha": alpha, "sigma": sigma, "val_mean_ccc": scores[(alpha, sigma)]}
    log.info(
        "finetune: linear path from ridge (alpha %g, smoothing %g frames), val mean CCC %.3f",
        alpha,
        sigma,
        start["val_mean_ccc"],
    )
    if head.kernel is not None:
        start.update(_init_kernel(head, xs, ys, keep, [x for _, _, x, _ in whitened], sigma, score, sigmas))
    return start


KERNEL_ALPHAS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)  # per frame: 1e-6 x 1,500 frames is kernel ridge's 1.5e-3
KERNEL_SCALES = (0.25, 0.5, 1.0, 2.0)  # gamma x the median squared distance between centres


def start_folds(train: list[ClipFeatures], val: list[ClipFeatures], folds: int) -> tuple[np.ndarray, int] | None:
    """The fold of each clip of train + val for choosing the ridge start by cross-validation, and the number of
    folds: whole actors when no validation actor is in training (the validation split asks for unseen actors,
    so the choice is made for them), else whole clips; a seeded draw, so every run of the same split gets
    the same folds. None when there are fewer than 2 groups."""
    clips = train + val
    by_actor = all(c.actor for c in clips) and not {c.actor for c in train} & {c.actor for c in val}
    groups = [c.actor if by_actor else c.clip_id for c in clips]
    names = sorted(set(groups))
    k = min(folds, len(names))
    if k < 2:
        return None
    order = np.random.default_rng(0).permutation(len(names))
    fold_of = {names[i]: j % k for j, i in enumerate(order)}
    return np.array([fold_of[g] for g in groups]), k


def _start_by_cv(head: TemporalHead, train, val, window, backbone, xs, ys, keep, alphas, sigmas, assignment) -> dict:
    """init_linear_from_ridge's choices by K-fold cross-validation over the training and validation clips: the
    penalty and smoothing of the linear path, then the kernel correction's width, penalty and smoothing (or
    none), each by the pooled mean CCC of the predictions of every clip from the fits without its fold, through
    the head's windows and smoothing, among the candidates whose predictions move no more than the labels
    (`best`); the chosen fits are then made on the training clips alone, as fine-tuning trains on them. A
    validation split of a few clips (or actors) gives a noisy score, and choosing the best of many candidates
    on it picks what fitted those clips by chance: every labeled clip votes here instead. Each fit costs one
    pass over the data: the moments of each fold, minus those of the fold left out."""
    fold, k = assignment
    val_xs = [_array(f) for f in backbone.features_of(val)]
    all_xs, all_ys, all_keep = xs + val_xs, ys + _targets(head, val), keep + [c.labeled for c in val]
    device = head.feature_mean.device
    rows = [torch.from_numpy(k).to(device) for k in all_keep]
    labels = [torch.from_numpy(np.asarray(y, dtype=np.float64)).to(device) for y in all_ys]
    clips = train + val
    clip_ids = np.concatenate([[i] * len(c.features) for i, c in enumerate(clips)])
    frames = np.concatenate([c.frame_index for c in clips])
    label_moves = mean_abs_change(np.concatenate([c.labels for c in clips]) / VA_SCALE, clip_ids, frames)

    def moved_over_labels(moved: list[float]) -> float:
        """How much more than the labels predictions move (the larger of valence's and arousal's ratios); 0 where
        no two consecutive frames are labeled, or the labels never change between them: no rule then."""
        ratios = [m / t for m, t in zip(moved, label_moves, strict=True) if np.isfinite(t) and t > 0]
        return max(ratios) if ratios else 0.0

    def whitened(i: int) -> torch.Tensor:
        return head.whiten(torch.from_numpy(all_xs[i]).to(device).float()).double()

    def fold_moments(inputs, cross: bool = False) -> list:
        """Per fold, the raw moments of all folds but it, over their labeled frames: [n, sum u, sum y, u'u, u'y]
        of the inputs u = inputs(z) of the whitened frames z and the targets y; with `cross`, also [sum z, u'z],
        which a fit to the residuals of a linear fit in z needs."""
        parts = [None] * k
        for i in range(len(all_xs)):
            if rows[i].any():
                z = whitened(i)[rows[i]]
                u = inputs(z)
                m = raw_moments(u, labels[i][rows[i]]) + ([z.sum(0), u.T @ z] if cross else [])
                f = fold[i]
                parts[f] = m if parts[f] is None else [a + b for a, b in zip(parts[f], m, strict=True)]
        total = [sum(p) for p in zip(*[p for p in parts if p is not None], strict=True)]
        return [total if p is None else [t - q for t, q in zip(total, p, strict=True)] for p in parts]

    def without_fold(moments, alphas_, linear_fits=None) -> list:
        """Per fold, the ridge fits of its complement (to the residuals of linear_fits[fold], when given)."""
        fits = []
        for f, (n, su, sy, uu, uy, *cross) in enumerate(moments):
            if linear_fits is not None:  # the residuals y - (z w + b) of the fold's own linear fit
                (sz, uz), (w, b) = cross, linear_fits[f]
                sy, uy = sy - sz @ w - n * b, uy - uz @ w - torch.outer(su, b)
            fits.append(ridge_from_moments([n, su, sy, uu, uy], alphas_))
        return fits

    def out_of_fold(inputs, fits, alphas_) -> dict:
        """Per alpha, each clip's predictions (all its frames) from the fit without its fold."""
        out = {a: [] for a in alphas_}
        for i in range(len(all_xs)):
            u = inputs(whitened(i))
            for a, (w, b) in zip(alphas_, fits[fold[i]], strict=True):
                out[a].append(u @ w + b)
        return out

    def scores_of(preds: list[torch.Tensor], smoothings) -> dict:
        """Pooled mean CCC, per smoothing width, of per-frame outputs (before smoothing) of every clip, through
        the head's own path: its windows, their smoothing and output, merged back into frames."""
        windows = []
        for p in preds:
            starts = window_starts(len(p), window.length, window.stride)
            batch = torch.stack([p[s : s + window.length] for s in starts]).float()
            windows.append((len(p), starts, batch, torch.ones(batch.shape[:2], dtype=torch.bool, device=device)))
        out = {}
        for sigma in smoothings if head.cfg.smoothing else (1.0,):
            head.log_sigma.fill_(math.log(sigma))
            merged = [merge_predictions(n, starts, head.finish(batch, real)) for n, starts, batch, real in windows]
            moved = mean_abs_change(np.concatenate(merged), clip_ids, frames)
            score = pooled_ccc(clips, merged)["mean"]
            out[sigma] = (score if np.isfinite(score) else -np.inf, moved_over_labels(moved))
        return out

    def best(scores: dict):
        """The candidate of the best score among those whose predictions move no more than the labels from frame
        to frame (jitter is movement that no label has; CCC hardly punishes it); the one that moves least where
        none does."""
        calm = [key for key, (_, moved) in scores.items() if moved <= 1]
        if calm:
            return max(calm, key=lambda key: scores[key][0])
        return min(scores, key=lambda key: scores[key][1])

    identity = lambda z: z  # noqa: E731
    solved_linear = without_fold(fold_moments(identity), alphas)
    linear = out_of_fold(identity, solved_linear, alphas)
    scores = {(a, s): v for a in alphas for s, v in scores_of(linear[a], sigmas).items()}
    alpha, sigma = best(scores)
    _set_linear(head.linear, *_ridge(head, xs, ys, keep, (alpha,), lambda z: z, head.cfg.in_dim)[0])
    head.log_sigma.fill_(math.log(sigma))
    start = {"alpha": alpha, "sigma": sigma, "cv_folds": k, "cv_mean_ccc": scores[(alpha, sigma)][0]}
    log.info(
        "finetune: linear path from ridge (alpha %g, smoothing %g frames), chosen by %d-fold CV over %d training "
        "and validation clips: mean CCC %.3f",
        alpha,
        sigma,
        k,
        len(all_xs),
        scores[(alpha, sigma)][0],
    )
    if head.kernel is not None:
        fold_linear = [solutions[alphas.index(alpha)] for solutions in solved_linear]
        kernel_scores = {(None, None, sigma): scores[(alpha, sigma)]}
        centres, gammas = kernel_candidates(head, xs, keep)
        expand = lambda z: head.kernel_features(z.float()).double()  # noqa: E731
        for gamma in gammas:
            head.set_kernel(centres, gamma)
            fits = without_fold(fold_moments(expand, cross=True), KERNEL_ALPHAS, fold_linear)
            corrections = out_of_fold(expand, fits, KERNEL_ALPHAS)
            for a in KERNEL_ALPHAS:
                preds = [lin + cor for lin, cor in zip(linear[alpha], corrections[a], strict=True)]
                kernel_scores.update({(gamma, a, s): v for s, v in scores_of(preds, sigmas).items()})
        gamma, kernel_alpha, sigma = best(kernel_scores)
        linear_path = lambda z: head.linear(z.float()).double()  # noqa: E731
        if gamma is None:
            head.set_kernel(centres, gammas[len(gammas) // 2])
            _set_linear(head.kernel, torch.zeros_like(head.kernel.weight.T), torch.zeros(2))
        else:
            head.set_kernel(centres, gamma)
            width = head.cfg.kernel_centres
            _set_linear(
                head.kernel, *_ridge(head, xs, ys, keep, (kernel_alpha,), head.kernel_features, width, linear_path)[0]
            )
        head.log_sigma.fill_(math.log(sigma))
        start.update(
            {
                "kernel_gamma": gamma,
                "kernel_alpha": kernel_alpha,
                "sigma": sigma,
                "cv_mean_ccc": kernel_scores[(gamma, kernel_alpha, sigma)][0],
            }
        )
        log.info(
            "finetune: kernel correction %s, by CV: mean CCC %.3f",
            "none (no width beat the linear probe)"
            if gamma is None
            else f"gamma {gamma:.3g}, alpha {kernel_alpha:g}, smoothing {sigma:g}",
            start["cv_mean_ccc"],
        )
    start["val_mean_ccc"] = validation_ccc(head, val, window, backbone)["mean"]
    return start


def _init_kernel(head: TemporalHead, xs, ys, keep, val_windows, sigma: float, score, sigmas) -> dict:
    """The kernel correction's start: kernel ridge on the linear path's training residuals, width, penalty and
    smoothing chosen on validation (`val_windows`: whitened, scored by `score`) against keeping no correction
    (the linear start, smoothing `sigma`)."""
    linear = lambda z: head.linear(z.float()).double()  # noqa: E731
    base = [head.linear(x) for x in val_windows]  # the linear path's share, the same for every candidate
    scores = {(None, None, sigma): score(base, (sigma,))[sigma]}
    solutions = {}
    centres, gammas = kernel_candidates(head, xs, keep)
    for gamma in gammas:
        head.set_kernel(centres, gamma)
        solved = _ridge(head, xs, ys, keep, KERNEL_ALPHAS, head.kernel_features, head.cfg.kernel_centres, linear)
        features = [head.kernel_features(x) for x in val_windows]  # the width's, for each of its penalties
        for alpha, (w, b) in zip(KERNEL_ALPHAS, solved, strict=True):
            solutions[(gamma, alpha)] = (w, b)
            _set_linear(head.kernel, w, b)
            readouts = [r + head.kernel(f) for r, f in zip(base, features, strict=True)]
            scores.update({(gamma, alpha, s): v for s, v in score(readouts, sigmas).items()})
    gamma, alpha, sigma = max(scores, key=scores.get)
    if gamma is None:  # fine-tuning may still train the correction, from zero, on the middle width
        head.set_kernel(centres, gammas[len(gammas) // 2])
        _set_linear(head.kernel, torch.zeros_like(head.kernel.weight.T), torch.zeros(2))
    else:
        head.set_kernel(centres, gamma)
        _set_linear(head.kernel, *solutions[(gamma, alpha)])
    head.log_sigma.fill_(math.log(sigma))
    log.info(
        "finetune: kernel correction %s, val mean CCC %.3f",
        "none (no width beat the linear probe)"
        if gamma is None
        else f"gamma {gamma:.3g}, alpha {alpha:g}, smoothing {sigma:g}",
        scores[(gamma, alpha, sigma)],
    )
    return {"kernel_gamma": gamma, "kernel_alpha": alpha, "sigma": sigma, "val_mean_ccc": scores[(gamma, alpha, sigma)]}


def _targets(head: TemporalHead, clips: list[ClipFeatures]) -> list[np.ndarray]:
    """The ridge fits' targets of each clip: its labels on -1..1, atanh of them under a tanh output."""
    ys = [c.labels / VA_SCALE for c in clips]
    return [np.arctanh(np.clip(y, -0.95, 0.95)) for y in ys] if head.cfg.output == "tanh" else ys


def _set_linear(layer: nn.Linear, w: torch.Tensor, b: torch.Tensor) -> None:
    layer.weight.copy_(w.T)
    layer.bias.copy_(b)


def kernel_candidates(head: TemporalHead, xs: list[np.ndarray], keep: list[np.ndarray]) -> tuple:
    """The kernel correction's candidates: (centres, [gamma for each of KERNEL_SCALES]). The centres are up to
    kernel_centres labeled training frames, whitened, drawn without replacement by a fixed seed (the same
    start for every run of the same data)."""
    counts = np.array([int(k.sum()) for k in keep])
    picked = np.sort(
        np.random.default_rng(0).choice(counts.sum(), size=min(counts.sum(), head.cfg.kernel_centres), replace=False)
    )
    clip = np.searchsorted(np.cumsum(counts), picked, side="right")
    within = picked - np.r_[0, np.cumsum(counts)][clip]
    x = np.stack([xs[i][np.flatnonzero(keep[i])[j]] for i, j in zip(clip, within, strict=True)])
    c = head.whiten(torch.from_numpy(x).to(head.feature_mean.device).float()).double()
    c = c @ head.kernel_projection.double()  # the directions the kernel measures distances in
    d2 = torch.cdist(c, c).square()[~torch.eye(len(c), dtype=torch.bool, device=c.device)]
    median = d2.median().clamp_min(1e-12) if len(d2) else torch.tensor(1.0)  # one labeled frame: any width
    return c, [float(scale / median) for scale in KERNEL_SCALES]


def _ridge(
    head: TemporalHead, xs, ys, keep, alphas, inputs, width: int, residual_of=None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Ridge regressions of the labels (minus residual_of(whitened frames), when given) on inputs(whitened
    frames), `width` values per frame, of the labeled training frames: streamed above STREAM_ABOVE values,
    else in one piece."""
    device = head.feature_mean.device

    def pair(x, y):
        z = head.whiten(x.to(device).float())
        y = y.to(device).double()
        return inputs(z).double(), y if residual_of is None else y - residual_of(z)

    if sum(int(k.sum()) for k in keep) * width > STREAM_ABOVE:
        return streamed_ridge_solutions(row_chunks(xs, ys, keep=keep, transform=lambda p: pair(*p)), alphas)
    x = np.concatenate([f[k] for f, k in zip(xs, keep, strict=True)])
    y = np.concatenate([y[k] for y, k in zip(ys, keep, strict=True)])
    return ridge_solutions(*pair(torch.from_numpy(x), torch.from_numpy(y)), alphas)


def finetune(
    train: list[ClipFeatures],
    val: list[ClipFeatures],
    head: TemporalHead,
    window: Window,
    cfg: dict,
    resume: ResumeState | None = None,
    device: torch.device = CPU,
    backbone=None,
) -> tuple[TemporalHead, list[dict], dict]:
    """Per-frame regression of valence and arousal (scaled to -1..1) with AdamW, warm-up and cosine decay;
    keeps the head of the best validation mean CCC and stops after `patience` epochs without improvement.
    Returns (best head, history, best record); the record also holds the start's validation mean CCC."""
    torch.manual_seed(cfg["seed"])
    backbone = backbone or CachedFeatures()
    head = head.to(device)
    if cfg["linear_init"]:
        init_linear_from_ridge(head, train, val, window, backbone, folds=cfg.get("start_folds", 0))
    optimizer = _optimizer(list(head.parameters()), backbone, cfg["lr"], cfg["weight_decay"])
    scaler = backbone.grad_scaler()
    length = window.length
    accumulate = cfg.get("accumulate", 1)
    windows_per_epoch = max(1, sum(len(c.features) for c in train) // length)
    steps_per_epoch = math.ceil(math.ceil(windows_per_epoch / cfg["batch_size"]) / accumulate)
    scheduler = warmup_cosine(optimizer, cfg["warmup_epochs"] * steps_per_epoch, cfg["epochs"] * steps_per_epoch)
    history: list[dict] = []
    start_scores = validation_ccc(head, val, window, backbone)
    log.info("finetune: the start scores val mean CCC %.3f", start_scores["mean"])
    best = {"epoch": -1, "val_mean_ccc": start_scores["mean"]}  # the starting point counts as a candidate
    best_state = copy.deepcopy(head.state_dict())
    best_backbone = copy.deepcopy(backbone.state_dict())
    start, bad_epochs = 0, 0
    state = resume.load() if resume else None
    if state:
        head.load_state_dict(state["model"])
        backbone.load_state_dict(state["backbone"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state.get("scaler", {}))  # {}: a state saved before loss scaling existed
        history, best, best_state, bad_epochs = state["history"], state["best"], state["best_state"], state["bad"]
        best_backbone = state["best_backbone"]
        start = state["epoch"] + 1
        log.info("finetune: resuming after epoch %d", state["epoch"])
    for epoch in range(start, cfg["epochs"]):
        if bad_epochs >= cfg["patience"]:
            break
        rng = epoch_rng(cfg["seed"], epoch)
        progress = Progress()
        head.train()
        backbone.train(True)
        total, steps = torch.zeros((), device=device), 0
        batches = _batches(sample_windows(train, length, rng), cfg["batch_size"])
        accumulator = Accumulator(optimizer, accumulate, len(batches), scheduler, scaler)
        for batch in backbone.epoch_batches(train, batches, epoch, device):
            pred, _ = head(batch["x"], batch["mask"])
            labeled = batch["mask"] & torch.isfinite(batch["y"]).all(-1)
            loss = regression_loss(pred, batch["y"], labeled, cfg["loss"], cfg["ccc_weight"])
            accumulator.backward(steps, loss)
            total, steps = total + loss.detach(), steps + 1
            progress.step("finetune", epoch, steps, len(batches))
        scores = validation_ccc(head, val, window, backbone)
        record = {
            "epoch": epoch,
            "train_loss": total.item() / max(1, steps),
            "val_ccc_valence": scores["valence"],
            "val_ccc_arousal": scores["arousal"],
            "val_mean_ccc": scores["mean"],
            "lr": optimizer.param_groups[0]["lr"],
        }
        history.append(record)
        if record["val_mean_ccc"] > best["val_mean_ccc"]:
            best, bad_epochs = record, 0
            best_state = copy.deepcopy(head.state_dict())
            best_backbone = copy.deepcopy(backbone.state_dict())
        else:
            bad_epochs += 1
        log.info(
            "finetune epoch %d/%d: loss %.4f, val CCC valence %.3f arousal %.3f mean %.3f%s",
            epoch + 1,
            cfg["epochs"],
            record["train_loss"],
            scores["valence"],
            scores["arousal"],
            scores["mean"],
            " (best)" if best is record else "",
        )
        if resume:
            resume.save(
                {
                    "model": head.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                    "best": best,
                    "best_state": best_state,
                    "bad": bad_epochs,
                    "epoch": epoch,
                    "backbone": backbone.state_dict(),
                    "best_backbone": best_backbone,
                    "scaler": scaler.state_dict(),
                }
            )
    head.load_state_dict(best_state)
    backbone.load_state_dict(best_backbone)
    return head.cpu(), history, {**best, "start_val_mean_ccc": start_scores["mean"]}


def _inputs(*paths: str | None) -> list[str]:
    return [p for p in paths if p is not None]


def pretrain_files(
    features: str,
    clips: str,
    text: str,
    settings: dict,
    state: str,
    out: dict[str, str],
    frames: str | None = None,
) -> None:
    """The pretraining step on files. `settings`: the run's ``head`` and ``pretrain`` sections and its backbone
    settings (see `backbone_of`); `state`: where each epoch's resume state goes; `out`: the paths of the
    ``head``, the ``adapter`` folder and the ``history``. A killed job resumes after its last epoch."""
    train = load_splits(features, clips, ("train",), settings["head"].get("centre", "none"))["train"]
    config, window = head_config(settings["head"], train[0].features.shape[1])
    backbone = backbone_of(settings["backbone"], frames, centre=config.centre)
    sections = [settings[k] for k in ("head", "pretrain", "backbone")]
    resume = ResumeState(state, fingerprint(sections, _inputs(frames, features, clips, text)))
    embeddings = np.load(text)["embeddings"]
    cfg, device = settings["pretrain"], resolve_device()
    head, history = pretrain(train, config, window, cfg, embeddings, resume, device, backbone)
    save_head(out["head"], head, window)
    save_adapters(backbone.visual if backbone else None, out["adapter"])
    write_text(out["history"], json.dumps(history, indent=1))
    resume.clear()


def finetune_files(
    features: str,
    clips: str,
    head_path: str,
    settings: dict,
    state: str,
    out: dict[str, str],
    frames: str | None = None,
    adapter: str | None = None,
) -> None:
    """The fine-tuning step on files: the pretrained head of `head_path` (and adapters of `adapter`) trained
    on the train split, the best epoch on val kept; with ``start_from`` the head of `head_path` is another
    run's fine-tuned one, and the ridge start is skipped. `settings`: the ``finetune`` section and the backbone
    settings; `out`: the paths of the ``head``, the ``adapter`` folder and the ``history``. With
    ``lora.merge``, CLIP with the adapters merged is written into the adapter folder too."""
    head, ckpt = load_head(head_path)
    data = load_splits(features, clips, ("train", "val"), head.cfg.centre)
    cfg, run = settings["finetune"], settings["backbone"]
    if cfg.get("start_from"):  # a fine-tuned head: a ridge start would throw away what it learned
        cfg = {**cfg, "linear_init": False}
    backbone = backbone_of(run, frames, adapter, centre=head.cfg.centre)
    resume = ResumeState(state, fingerprint([cfg, run], _inputs(frames, adapter, features, clips, head_path)))
    device = resolve_device()
    head, history, best = finetune(data["train"], data["val"], head, ckpt["window"], cfg, resume, device, backbone)
    save_head(out["head"], head, ckpt["window"], best=best)
    save_adapters(backbone.visual if backbone else None, out["adapter"])
    if backbone and run["lora"]["merge"]:
        merged = Path(out["adapter"]) / "merged_open_clip.pt"
        export_merged(run["clip"]["model"], run["clip"]["pretrained"], out["adapter"], merged)
    write_text(out["history"], json.dumps({"best": best, "epochs": history}, indent=1))
    resume.clear()
