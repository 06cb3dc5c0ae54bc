"""Extraction throughput: end to end (decode, crop, preprocess, encode, write) vs. the encoder alone and vs. a
naive loop.

Three measurements, in this one run, on the same frames, model and precision (these machines are noisy:
compare the printed ratios, not absolute numbers across runs):

- end to end : clipva.extract.extract_features (DataLoader workers decode and crop, batches of 64, HDF5);
- encoder only: encode_images on already-decoded, preprocessed tensors (random, same batch size), measured
  once before and once after the end-to-end run; the mean of the two is the reference;
- naive loop : sequential PIL decode (Image.open(path).convert("RGB")) + crop + preprocess in the main
  process, fp32, one clip per batch, no DataLoader workers, written to HDF5 clip by clip.

Also, per round, PNG decoding alone on (up to) 100 of the frames in the main process: PIL's (as in the naive
loop) against clipva's load_rgb (libspng), in turn.

The three are measured --repeat times in turn (encoder, end to end, encoder, naive); each printed ratio is
the median of the per-round ratios, so a slow spell of the machine (other VMs share its cores and, on AMX
CPUs, its matrix unit) spoils one round, not the figure. Where the precision is not fp32, the encoder alone
is also timed in fp32: encoder only / naive loop is the ceiling of end to end / naive loop, since the end-to-end
path cannot be faster than its own encoder.

The model is warmed up (one batch) before anything is timed: the one-off oneDNN set-up is not throughput.
The data is a synthetic AFEW-VA (clipva.demo) of --clips clips of 40..60 frames.

    .venv/bin/python benchmarks/extraction.py                          # ViT-B-32, 8 clips (~400 frames)
    .venv/bin/python benchmarks/extraction.py --model clipva-tiny --clips 60
    .venv/bin/python benchmarks/extraction.py --frame-size 720x576     # frames the size of AFEW-VA's largest
    .venv/bin/python benchmarks/extraction.py --profile --repeat 1     # + torch.profiler's top encoder ops
    .venv/bin/python benchmarks/extraction.py --clips 600 --frame-size 720x576 --batch-size 256 --no-naive  # GPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from common import CROP, as_the_workflow_runs, demo_dataset, indexed, load_average, machine, median
from PIL import Image

from clipva.crop import crop_face, load_rgb
from clipva.encoder import encode_images, load_clip
from clipva.extract import decode_workers, extract_features
from clipva.store import ClipFeatures, atomic_h5, write_features


def encoder_only(clip, n_frames: int, batch_size: int) -> float:
    """Frames/s of encode_images on already-decoded, preprocessed tensors (already on the device)."""
    images = torch.randn(batch_size, 3, clip.image_size, clip.image_size).to(clip.device, clip.dtype)
    done, start = 0, time.perf_counter()
    while done < n_frames:
        features = encode_images(clip, images)
        done += batch_size
    features.cpu()  # waits for the device: CUDA runs ahead of the host
    return done / (time.perf_counter() - start)


def naive_loop(frames, clip, face_crop: dict, out_path: str) -> tuple[float, dict]:
    """Frames/s of the obvious loop: per clip, decode, crop and preprocess each frame in turn (main process),
    encode the clip as one batch, write it. Also the seconds per frame of each stage (one core for the
    first three: what a decoding worker spends on a frame)."""
    margin = face_crop.get("margin", 0.0)
    stages = dict.fromkeys(("decode", "crop", "preprocess", "encode"), 0.0)
    start = time.perf_counter()
    with atomic_h5(out_path) as f:
        f.create_group("clips")
        for clip_id, part in frames.sort_values(["clip_id", "frame"]).groupby("clip_id", sort=True):
            images = []
            for row in part.itertuples():
                box = (row.box_x0, row.box_y0, row.box_x1, row.box_y1) if face_crop["method"] == "landmarks" else None
                t0 = time.perf_counter()
                image = pil_rgb(row.path)
                t1 = time.perf_counter()
                image = crop_face(image, box, margin)
                t2 = time.perf_counter()
                images.append(clip.preprocess(image))
                t3 = time.perf_counter()
                stages["decode"] += t1 - t0
                stages["crop"] += t2 - t1
                stages["preprocess"] += t3 - t2
            t4 = time.perf_counter()
            features = encode_images(clip, torch.stack(images)).cpu().numpy()
            stages["encode"] += time.perf_counter() - t4
            write_features(
                f,
                ClipFeatures(
                    clip_id, features, part["frame"].to_numpy(), part["valence"].to_numpy(), part["arousal"].to_numpy()
                ),
                actor=str(part["actor"].iloc[0]),
            )
    seconds = time.perf_counter() - start
    return len(frames) / seconds, {k: v / len(frames) for k, v in stages.items()}


def pil_rgb(path: str) -> Image.Image:
    """The obvious decoding: PIL."""
    with Image.open(path) as img:
        return img.convert("RGB")


def decoding(paths: list[str]) -> dict[str, float]:
    """Seconds per frame of PIL's decoding and of clipva's (load_rgb: libspng) on the same files, in turn."""
    seconds = {"pil": 0.0, "clipva": 0.0}
    for path in paths:
        for name, decode in (("pil", pil_rgb), ("clipva", load_rgb)):
            start = time.perf_counter()
            decode(path)
            seconds[name] += time.perf_counter() - start
    return {k: v / len(paths) for k, v in seconds.items()}


def profile_encoder(clip, batch_size: int) -> None:
    """torch.profiler's top operators of the encoder on two batches."""
    from torch.profiler import ProfilerActivity, profile

    images = torch.randn(batch_size, 3, clip.image_size, clip.image_size)
    cuda = clip.device.type == "cuda"  # there the CPU side only launches kernels: profile the device too
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        for _ in range(2):
            encode_images(clip, images)
        if cuda:
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=12), flush=True)


def max_difference(a: str, b: str) -> float:
    """Largest absolute difference between the features of two stores (same clips)."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert sorted(fa["clips"]) == sorted(fb["clips"]), "the stores hold different clips"
        return max(
            float(np.abs(fa[f"clips/{c}/features"][()] - fb[f"clips/{c}/features"][()]).max()) for c in fa["clips"]
        )


def main() -> None:
    as_the_workflow_runs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--workers",
        default="auto",
        help="decoding workers (default auto: as the workflow picks them for this many threads)",
    )
    parser.add_argument(
        "--frame-size",
        type=lambda s: tuple(int(v) for v in s.split("x")),
        metavar="WxH",
        help="frame size of the generated data (default: the demo's 160x128 and 192x144; "
        "AFEW-VA's movie frames are up to 720x576)",
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of measurements (default 3; medians)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of the encoder")
    parser.add_argument("--data", help="folder to generate the data set in, or reuse (default: a temporary one)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: torch's, here the cores; more than "
        "the cores shows what an oversubscribed job would get)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = demo_dataset(args.data or Path(tmp) / "afew-va", args.clips, frame_size=args.frame_size)
        frames = indexed(root)
        clip = load_clip(args.model, None, args.precision)
        workers = decode_workers(args.workers, torch.get_num_threads(), clip.device)
        # the naive loop's model, and the fp32 reference of a bf16 encoder
        fp32 = clip if clip.precision == "fp32" else load_clip(args.model, None, "fp32")
        for model in (clip,) if fp32 is clip else (clip, fp32):  # warm-up: the one-off oneDNN set-up
            encode_images(model, torch.randn(args.batch_size, 3, model.image_size, model.image_size))
        n_encoder = min(len(frames), 3 * args.batch_size)
        print(
            f"model {args.model} (random init), precision {clip.precision}, device {clip.device}; "
            f"{frames['clip_id'].nunique()} clips, {len(frames)} frames; batch {args.batch_size}, "
            f"workers {workers}; frames {sorted(set(zip(frames['width'], frames['height'], strict=True)))}",
            flush=True,
        )
        print(f"machine: {machine()}; {load_average()}", flush=True)
        if args.profile:
            profile_encoder(clip, args.batch_size)
        rounds = []
        for k in range(args.repeat):
            r = {"decoding": decoding(list(frames["path"][:100]))}
            r["before"] = encoder_only(clip, n_encoder, args.batch_size)
            e2e_path = str(Path(tmp) / "end_to_end.h5")
            summary = extract_features(frames, e2e_path, clip, CROP, None, args.batch_size, workers, progress=False)
            r["end_to_end"], r["seconds"] = summary["frames_per_s"], summary["seconds"]
            r["after"] = encoder_only(clip, n_encoder, args.batch_size)
            r["encoder"] = (r["before"] + r["after"]) / 2
            if fp32 is not clip:
                r["encoder_fp32"] = encoder_only(fp32, n_encoder, args.batch_size)
            if not args.no_naive:
                naive_path = str(Path(tmp) / "naive.h5")
                r["naive"], r["stages"] = naive_loop(frames, fp32, CROP, naive_path)
                r["diff"] = max_difference(e2e_path, naive_path)
            rounds.append(r)
            shown = ", ".join(f"{key} {v:.1f}" for key, v in r.items() if key not in ("diff", "stages", "decoding"))
            print(f"round {k + 1}: {shown}", flush=True)
    report(rounds, clip.precision)


def report(rounds: list[dict], precision: str) -> None:
    """Medians over the rounds: throughputs, and the ratios taken within each round."""

    def med(f) -> float:
        return median([f(r) for r in rounds])

    print(f"medians of {len(rounds)} round(s):")
    print(f"end to end   : {med(lambda r: r['end_to_end']):9.1f} frames/s  ({med(lambda r: r['seconds']):.1f} s)")
    print(f"encoder only : {med(lambda r: r['encoder']):9.1f} frames/s  ({precision}; mean of before and after)")
    if "encoder_fp32" in rounds[0]:
        print(
            f"encoder fp32 : {med(lambda r: r['encoder_fp32']):9.1f} frames/s  "
            f"({precision} / fp32 = {med(lambda r: r['encoder'] / r['encoder_fp32']):.2f})"
        )
    if "naive" in rounds[0]:
        print(
            f"naive loop   : {med(lambda r: r['naive']):9.1f} frames/s  (fp32, one clip per batch, no workers; "
            f"max |feature difference| vs end to end {max(r['diff'] for r in rounds):.1e})"
        )
        stages = {k: med(lambda r, k=k: r["stages"][k]) * 1e3 for k in rounds[0]["stages"]}
        print(
            "naive stages : " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()) + " ms/frame (fp32; "
            "decode, crop and preprocess on one core are what a decoding worker spends on a frame)"
        )

    pil, fast = med(lambda r: r["decoding"]["pil"]) * 1e3, med(lambda r: r["decoding"]["clipva"]) * 1e3
    print(
        f"decoding     : PIL {pil:.2f}, clipva (libspng) {fast:.2f} ms/frame  (PIL / libspng = "
        f"{med(lambda r: r['decoding']['pil'] / r['decoding']['clipva']):.2f}; main process, nothing else running)"
    )
    print(
        f"ratio        : {med(lambda r: r['end_to_end'] / r['encoder']):9.2f}  (end to end / encoder only; "
        "target >= 0.70)"
    )
    if "naive" in rounds[0]:
        print(
            f"ratio        : {med(lambda r: r['end_to_end'] / r['naive']):9.2f}  (end to end / naive loop; target >= 5)"
        )
        print(
            f"ceiling      : {med(lambda r: r['encoder'] / r['naive']):9.2f}  (encoder only / naive loop: "
            "end to end cannot beat its own encoder)"
        )
    print(load_average())


if __name__ == "__main__":
    main()
