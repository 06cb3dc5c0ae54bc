"""Seconds per training step: the cached-feature path vs. the LoRA path, on the same windows.

One fine-tuning step (forward, loss, backward, optimizer) of the temporal head on a batch of windows,
once with the frames' cached CLIP features and once with the frames decoded and run through the image
tower with LoRA adapters (config.yaml's lora settings). Both are measured in this one run; compare the
ratio. Everything runs on the device that load_clip picks (CUDA where there is one, in half precision
there), and on CUDA the peak GPU memory of each path is printed too.

    .venv/bin/python benchmarks/training_step.py --model ViT-B-32 --batch 4 --window 8
    .venv/bin/python benchmarks/training_step.py --model ViT-B-32 --batch 8 --window 8 --steps 10  # 64 frames, GPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import CROP, as_the_workflow_runs, machine, repo_config

from clipva.afew import index_dataset
from clipva.demo import make_demo
from clipva.encoder import load_clip
from clipva.extract import extract_features
from clipva.feature_sources import AdaptedFrames, CachedFeatures
from clipva.head import HeadConfig, TemporalHead
from clipva.lora import add_adapters
from clipva.losses import regression_loss
from clipva.store import FeatureStore


def seconds_per_step(backbone, head, clips, batches, steps: int, device: torch.device) -> tuple[float, int | None]:
    """Median seconds per step after a warm-up step, and on CUDA the peak memory allocated (bytes)."""
    cuda = device.type == "cuda"
    params = list(head.parameters()) + backbone.trainable()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    backbone.train(True)
    head.train()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    # A step is timed from the end of the previous one: producing the batch is part of it (the LoRA path runs
    # the image tower's forward there), and so is waiting for the device to finish.
    times, start = [], time.perf_counter()
    for k, batch in enumerate(backbone.epoch_batches(clips, batches[: steps + 1], 0, device)):
        pred, _ = head(batch["x"], batch["mask"])
        loss = regression_loss(pred, batch["y"], batch["mask"] & torch.isfinite(batch["y"]).all(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        if k:  # the first step warms up
            times.append(now - start)
        start = now
    return float(np.median(times)), torch.cuda.max_memory_allocated() if cuda else None


def main() -> None:
    as_the_workflow_runs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clipva-tiny")
    parser.add_argument("--batch", type=int, default=4, help="windows per step")
    parser.add_argument("--window", type=int, default=8, help="frames per window")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "afew-va"
        make_demo(root, n_clips=8, n_actors=4, min_frames=20, max_frames=30, seed=0)
        frames, _ = index_dataset(root)
        clip = load_clip(args.model, None, "auto")
        extract_features(frames, str(Path(tmp) / "f.h5"), clip, CROP, None, progress=False)
        with FeatureStore(Path(tmp) / "f.h5") as store:
            clips = store.load_many(store.clip_ids)
        rng = np.random.default_rng(0)
        batches = [
            [(int(i), 0, args.window) for i in rng.integers(len(clips), size=args.batch)] for _ in range(args.steps + 1)
        ]
        lora_cfg = repo_config()["lora"]
        head = TemporalHead(HeadConfig(in_dim=clip.embed_dim)).to(clip.device)
        cached, cached_mem = seconds_per_step(CachedFeatures(), head, clips, batches, args.steps, clip.device)
        lora = AdaptedFrames(clip, add_adapters(clip, lora_cfg).to(clip.device), frames, CROP, lora_cfg)
        adapted, lora_mem = seconds_per_step(lora, head, clips, batches, args.steps, clip.device)
    frames_per_step = args.batch * args.window
    print(
        f"model {args.model}, precision {clip.precision}, device {clip.device}, {args.batch} windows x "
        f"{args.window} frames per step, torch threads {torch.get_num_threads()}, LoRA workers "
        f"{lora.workers}"
    )
    print(f"machine: {machine()}")
    print(f"cached features : {cached:10.6f} s/step  ({1 / cached:.1f} steps/s)" + _memory(cached_mem))
    print(
        f"LoRA end to end : {adapted:10.6f} s/step  ({1 / adapted:.4f} steps/s, {frames_per_step / adapted:.1f} "
        "frames/s)" + _memory(lora_mem)
    )
    print(f"ratio           : {adapted / cached:10.3f}x  (LoRA / cached)")


def _memory(peak: int | None) -> str:
    return "" if peak is None else f"; peak GPU memory {peak / 2**20:.0f} MiB"


if __name__ == "__main__":
    main()
