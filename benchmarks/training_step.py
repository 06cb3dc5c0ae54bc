"""Seconds per training step: the cached-feature path vs. the LoRA path, on the same windows.

One fine-tuning step (forward, loss, backward, optimizer) of the temporal head on a batch of windows,
once with the frames' cached CLIP features and once with the frames decoded and run through the image
tower with LoRA adapters. Both are measured in this one run; compare the ratio.

    .venv/bin/python benchmarks/training_step.py --model ViT-B-32 --batch 4 --window 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import as_the_workflow_runs

from clipva.afew import index_dataset
from clipva.backbones import AdaptedFrames, CachedFeatures
from clipva.demo import make_demo
from clipva.encoder import load_clip
from clipva.extract import extract_features
from clipva.head import HeadConfig, TemporalHead
from clipva.lora import add_adapters
from clipva.losses import regression_loss
from clipva.store import FeatureStore

CROP = {"method": "landmarks", "margin": 0.2}
LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["attn", "c_fc", "c_proj"], "lr": 5e-4,
        "num_workers": 2, "grad_checkpointing": False, "max_frames_per_step": 1024, "seed": 0,
        "augment": {"crop_jitter": 0.05, "flip": True, "colour": 0.2}}  # fmt: skip


def seconds_per_step(backbone, head, clips, batches, steps: int) -> float:
    params = list(head.parameters()) + backbone.trainable()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    backbone.train(True)
    head.train()
    times = []
    for k, batch in enumerate(backbone.epoch_batches(clips, batches[: steps + 1], 0, torch.device("cpu"))):
        start = time.perf_counter()
        pred, _ = head(batch["x"], batch["mask"])
        loss = regression_loss(pred, batch["y"], batch["mask"] & torch.isfinite(batch["y"]).all(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if k:  # the first step warms up
            times.append(time.perf_counter() - start)
    return float(np.median(times))


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
        batches = [[(int(i), 0, args.window) for i in rng.integers(len(clips), size=args.batch)]
                   for _ in range(args.steps + 1)]  # fmt: skip
        head = TemporalHead(HeadConfig(in_dim=clip.embed_dim))
        cached = seconds_per_step(CachedFeatures(), head, clips, batches, args.steps)
        lora = AdaptedFrames(clip, add_adapters(clip, LORA), frames, CROP, LORA)
        adapted = seconds_per_step(lora, head, clips, batches, args.steps)
    frames_per_step = args.batch * args.window
    print(f"model {args.model}, precision {clip.precision}, {args.batch} windows x {args.window} frames per step, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"cached features : {cached:8.4f} s/step")
    print(f"LoRA end to end : {adapted:8.4f} s/step  ({frames_per_step / adapted:.1f} frames/s)")
    print(f"ratio           : {adapted / cached:8.1f}x  (LoRA / cached)")


if __name__ == "__main__":
    main()
