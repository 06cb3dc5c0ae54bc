"""Extraction throughput: end to end (decode, crop, preprocess, encode, write) vs. the encoder alone.

Both are measured in this one run, on the same model and precision, and printed with their ratio
(these machines are noisy: compare ratios, not absolute numbers across runs).

    .venv/bin/python benchmarks/extraction.py --model ViT-B-32 --clips 24
    .venv/bin/python benchmarks/extraction.py --model clipva-tiny --clips 60
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from clipva.afew import index_dataset
from clipva.demo import make_demo
from clipva.encoder import encode_images, load_clip
from clipva.extract import extract_features


def encoder_only(clip, n_frames: int, batch_size: int) -> float:
    """Frames/s of encode_images on already-decoded, preprocessed tensors."""
    images = torch.randn(batch_size, 3, clip.image_size, clip.image_size)
    encode_images(clip, images)  # warm-up
    done, start = 0, time.perf_counter()
    while done < n_frames:
        encode_images(clip, images)
        done += batch_size
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "afew-va"
        make_demo(root, n_clips=args.clips, n_actors=6, min_frames=20, max_frames=40, seed=0)
        frames, _ = index_dataset(root)
        clip = load_clip(args.model, None, args.precision)
        crop = {"method": "landmarks", "margin": 0.2}
        summary = extract_features(frames, str(Path(tmp) / "f.h5"), clip, crop, None, args.batch_size, args.workers,
                                   progress=False)  # fmt: skip
        encoder = encoder_only(clip, min(len(frames), 8 * args.batch_size), args.batch_size)
    end_to_end = summary["frames_per_s"]
    print(f"model {args.model}, precision {clip.precision}, device {clip.device}, {len(frames)} frames, "
          f"batch {args.batch_size}, workers {args.workers}, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"end to end   : {end_to_end:9.1f} frames/s")
    print(f"encoder only : {encoder:9.1f} frames/s")
    print(f"ratio        : {end_to_end / encoder:9.2f}  (end to end / encoder only)")


if __name__ == "__main__":
    main()
