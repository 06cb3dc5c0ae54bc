"""Cached fine-tuning: seconds per epoch over an AFEW-VA-scale feature set, the share spent loading data, and
the ratio to the LoRA path's epoch.

The feature set is synthetic: 600 training clips of 40..60 frames (~30k frames) and 120 validation clips, with
random 512-d features (ViT-B-32's width) carrying a weak linear valence/arousal signal, and integer labels in
-10..10 (one training clip unlabeled, as in AFEW-VA's demo). The head and fine-tuning settings are those of
config.yaml (head, finetune; window and stride from head). `clipva.training.finetune` runs unchanged, with a
timed stand-in for the cached backbone that records:

- train pass : from the epoch's start (window sampling) until its last optimizer step;
- loading    : time spent producing batches (window sampling, collate into padded tensors);
- validation : the per-epoch validation pass (windowed prediction of every validation clip, CCC);
- set-up     : once per run: the ridge probe (linear_init) and the starting validation.

The LoRA path is timed on a few real steps (decode, crop, ViT-B-32 with LoRA adapters forward and backward,
head, optimizer) on a small demo set, and extrapolated per frame to the epoch's frames (its validation pass,
also through the image tower, is left out, so the ratio is a lower bound).

    .venv/bin/python benchmarks/finetune_epoch.py
    .venv/bin/python benchmarks/finetune_epoch.py --epochs 3 --profile   # + torch.profiler top ops
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import CROP, MAX_FRAMES, MIN_FRAMES, as_the_workflow_runs, load_average, machine, median, repo_config

from clipva.feature_sources import CachedFeatures
from clipva.head import HeadConfig, TemporalHead
from clipva.store import ClipFeatures
from clipva.training import finetune, head_config, new_head


def synthetic_clips(n_clips: int, dim: int, seed: int, unlabeled: int = 0) -> list[ClipFeatures]:
    """Clips of 40..60 frames: random features with a weak linear signal of smooth integer labels."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(12345).normal(size=(2, dim)).astype(np.float32)  # the same in every set
    clips = []
    for k in range(n_clips):
        n = int(rng.integers(MIN_FRAMES, MAX_FRAMES + 1))
        walk = np.cumsum(rng.normal(0, 1.0, (n, 2)), 0) + rng.uniform(-6, 6, 2)
        labels = np.clip(np.round(walk), -10, 10).astype(np.float32)
        features = (rng.normal(size=(n, dim)) + 0.1 * labels @ mix).astype(np.float32)
        if k >= n_clips - unlabeled:
            labels[:] = np.nan
        clips.append(
            ClipFeatures(
                f"{k + 1:03d}", features, np.arange(n, dtype=np.int32), labels[:, 0].copy(), labels[:, 1].copy()
            )
        )
    return clips


class TimedCachedFeatures(CachedFeatures):
    """The cached backbone, recording when each epoch's phases start and how long batches take to produce."""

    def __init__(self):
        self.events: list[tuple[str, float]] = []  # ("train" | "eval" | "batches" | "done", time)
        self.loading: list[float] = []  # per epoch: seconds inside the batch generator

    def train(self, mode: bool = True) -> None:
        self.events.append(("train" if mode else "eval", time.perf_counter()))

    def epoch_batches(self, clips, batches, epoch, device):
        self.events.append(("batches", time.perf_counter()))
        inner = super().epoch_batches(clips, batches, epoch, device)
        spent = 0.0
        while True:
            start = time.perf_counter()
            try:
                batch = next(inner)
            except StopIteration:
                break
            spent += time.perf_counter() - start
            yield batch
        self.loading.append(spent)
        self.events.append(("done", time.perf_counter()))


def epoch_phases(events: list[tuple[str, float]], end: float) -> list[dict]:
    """Per epoch: sampling (train() -> batches), train pass (train() -> last batch), validation (-> next)."""
    epochs = []
    for k, (name, t) in enumerate(events):
        if name != "train":
            continue
        batches = next(u for n, u in events[k:] if n == "batches")
        done = next(u for n, u in events[k:] if n == "done")
        following = next((u for n, u in events[k + 1 :] if n == "train"), end)
        epochs.append({"sampling": batches - t, "train": done - t, "validation": following - done})
    return epochs


def cached_epochs(train, val, head_cfg: dict, ft_cfg: dict, epochs: int, profile: bool):
    arch, window = head_config(head_cfg, train[0].features.shape[1])
    torch.manual_seed(0)
    head = new_head(arch, train)
    cfg = {**ft_cfg, "epochs": epochs, "patience": epochs + 1}
    backbone = TimedCachedFeatures()
    start = time.perf_counter()
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            finetune(train, val, head, window, cfg, backbone=backbone)
        end = time.perf_counter()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    else:
        finetune(train, val, head, window, cfg, backbone=backbone)
        end = time.perf_counter()
    phases = epoch_phases(backbone.events, end)
    for p, loading in zip(phases, backbone.loading, strict=True):
        p["loading"] = p["sampling"] + loading
    first_train = next(t for n, t in backbone.events if n == "train")
    return phases, first_train - start, end - start


def lora_seconds_per_frame(model: str, steps: int, windows: int, frames_per_window: int) -> tuple[float, str]:
    """Seconds per frame of LoRA fine-tuning steps (median over `steps` steps after one warm-up)."""
    from clipva.afew import index_dataset
    from clipva.demo import make_demo
    from clipva.encoder import load_clip
    from clipva.feature_sources import AdaptedFrames
    from clipva.lora import add_adapters
    from clipva.losses import regression_loss

    lora_cfg = repo_config()["lora"]
    lora_cfg = {**lora_cfg, "max_frames_per_step": windows * frames_per_window}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "afew-va"
        make_demo(root, n_clips=8, n_actors=4, min_frames=20, max_frames=30, seed=0)
        frames, _ = index_dataset(root)
        clips = [
            ClipFeatures(
                c,
                np.zeros((len(g), 1), np.float32),
                g["frame"].to_numpy(),
                g["valence"].to_numpy(),
                g["arousal"].to_numpy(),
            )
            for c, g in frames.groupby("clip_id", sort=True)
        ]
        clip = load_clip(model, None, "auto")
        backbone = AdaptedFrames(clip, add_adapters(clip, lora_cfg).to(clip.device), frames, CROP, lora_cfg)
        head = TemporalHead(HeadConfig(in_dim=clip.embed_dim)).to(clip.device)
        optimizer = torch.optim.AdamW(list(head.parameters()) + backbone.trainable(), lr=1e-4)
        rng = np.random.default_rng(0)
        batches = [
            [(int(i), 0, frames_per_window) for i in rng.integers(len(clips), size=windows)] for _ in range(steps + 1)
        ]
        backbone.train(True)
        head.train()
        times, start = [], time.perf_counter()
        for k, batch in enumerate(backbone.epoch_batches(clips, batches, 0, clip.device)):
            pred, _ = head(batch["x"], batch["mask"])
            loss = regression_loss(pred, batch["y"], batch["mask"] & torch.isfinite(batch["y"]).all(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if clip.device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            if k:  # the first step warms up (and waits for the workers' first batch)
                times.append(now - start)
            start = now
    # each step's time includes waiting for its frames (decoded by the workers while the previous step ran)
    return median(times) / (windows * frames_per_window), clip.precision


def main() -> None:
    as_the_workflow_runs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=600, help="training clips (validation: a fifth as many)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed (each is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, here the cores)")
    parser.add_argument("--profile", action="store_true", help="run the epochs under torch.profiler, print top ops")
    parser.add_argument("--lora-model", default="ViT-B-32", help="model of the LoRA path (its width should be --dim)")
    parser.add_argument("--lora-steps", type=int, default=3)
    parser.add_argument("--lora-windows", type=int, default=2, help="windows per LoRA step")
    parser.add_argument("--lora-window", type=int, default=8, help="frames per window of a LoRA step")
    parser.add_argument("--no-lora", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = repo_config()
    head_cfg, ft_cfg = config["head"], config["finetune"]
    train = synthetic_clips(args.clips, args.dim, seed=1, unlabeled=1)
    val = synthetic_clips(max(2, args.clips // 5), args.dim, seed=2)
    n_train = sum(len(c.features) for c in train)
    print(
        f"cached fine-tuning: synthetic random {args.dim}-d features with synthetic labels; {len(train)} training "
        f"clips ({n_train} frames), {len(val)} validation clips ({sum(len(c.features) for c in val)} frames); "
        f"head d_model {head_cfg['d_model']} depth {head_cfg['depth']} heads {head_cfg['heads']}, window "
        f"{head_cfg['window']}, stride {head_cfg['stride']}, batch {ft_cfg['batch_size']} windows, loss "
        f"{ft_cfg['loss']}",
        flush=True,
    )
    print(f"machine: {machine()}; {load_average()}", flush=True)
    phases, setup, total = cached_epochs(train, val, head_cfg, ft_cfg, args.epochs, args.profile)
    for k, p in enumerate(phases):
        print(
            f"epoch {k + 1}: train pass {p['train']:6.2f} s (loading {p['loading']:.3f} s = "
            f"{p['loading'] / p['train']:.1%}), validation {p['validation']:5.2f} s, epoch "
            f"{p['train'] + p['validation']:6.2f} s"
        )
    train_s = median([p["train"] for p in phases])
    epoch_s = median([p["train"] + p["validation"] for p in phases])
    loading = median([p["loading"] / p["train"] for p in phases])
    print(f"set-up (ridge probe, starting validation): {setup:.2f} s; finetune() total {total:.2f} s")
    print(
        f"cached epoch  : {epoch_s:8.2f} s  (median; train pass {train_s:.2f} s = {train_s / n_train * 1e6:.0f} us"
        f"/frame; target < 10 s)"
    )
    print(f"data loading  : {loading:8.1%}   of the train pass (median; target < 5%)")
    if not args.no_lora:
        per_frame, precision = lora_seconds_per_frame(
            args.lora_model, args.lora_steps, args.lora_windows, args.lora_window
        )
        lora_epoch = per_frame * n_train
        print(
            f"LoRA path     : {per_frame:8.3f} s/frame ({args.lora_model} {precision}, {args.lora_windows} x "
            f"{args.lora_window} frames per step, median of {args.lora_steps} steps) -> {lora_epoch:.0f} s per "
            f"epoch of {n_train} frames (extrapolated, train pass only)"
        )
        print(f"ratio         : {lora_epoch / epoch_s:8.0f}x  (LoRA epoch / cached epoch; target >= 100)")
    print(load_average())


if __name__ == "__main__":
    main()
