"""Peak memory of extraction: 60 vs 600 clips (AFEW-VA scale), each extraction in its own subprocess.

A synthetic AFEW-VA of 600 clips of 40..60 frames (~30k frames) is generated and indexed once; the
60-clip run extracts its first 60 clips. Each run is a fresh ``python benchmarks/extraction_memory.py
--child`` process running clipva.extract.extract_features, which reports its own peak RSS
(getrusage(RUSAGE_SELF).ru_maxrss) and that of its DataLoader workers (getrusage(RUSAGE_CHILDREN): the
largest of them; they run at the same time, so main + workers x largest worker bounds the total).
The model is small (clipva-tiny by default: 30k frames through ViT-B-32 take about an hour on 2 cores);
the memory that could grow with the number of clips (the index table, the pending features, the HDF5
file) does not depend on the model, whose weights are a constant.

    .venv/bin/python benchmarks/extraction_memory.py                       # clipva-tiny, 60 vs 600 clips
    .venv/bin/python benchmarks/extraction_memory.py --model ViT-S-32 --clips 6 60
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import AFEW_VA_CLIPS, as_the_workflow_runs, demo_dataset, first_clips, indexed, load_average, machine

HERE = Path(__file__).resolve().parent


def child(frames_path: str, model: str, out: str, workers: int, batch_size: int) -> None:
    """One extraction in this process; prints a JSON line with its peak memory and throughput."""
    import pandas as pd

    from clipva.encoder import load_clip
    from clipva.extract import extract_features

    frames = pd.read_pickle(frames_path)
    clip = load_clip(model, None, "auto")
    summary = extract_features(
        frames, out, clip, {"method": "landmarks", "margin": 0.2}, None, batch_size, workers, progress=False
    )
    mib = 1 / 1024  # ru_maxrss is in KiB on Linux
    print(
        json.dumps(
            {
                **summary,
                "main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * mib,
                "worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * mib,
            }
        )
    )


def measure(frames, n_clips: int, tmp: Path, args) -> dict:
    part = first_clips(frames, n_clips)
    path = tmp / f"frames-{n_clips}.pkl"
    part.to_pickle(path)
    cmd = [
        sys.executable,
        str(HERE / "extraction_memory.py"),
        "--child",
        str(path),
        "--model",
        args.model,
        "--workers",
        str(args.workers),
        "--batch-size",
        str(args.batch_size),
        "--out",
        str(tmp / f"{n_clips}.h5"),
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"extraction of {n_clips} clips failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    result["total_mib"] = result["main_mib"] + args.workers * result["worker_mib"]
    return result


def main() -> None:
    as_the_workflow_runs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clipva-tiny")
    parser.add_argument("--clips", type=int, nargs=2, default=[60, AFEW_VA_CLIPS], metavar=("SMALL", "LARGE"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data", help="folder to generate the data set in, or reuse (default: a temporary one)")
    parser.add_argument("--child", metavar="FRAMES_PKL", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model, args.out, args.workers, args.batch_size)
        return
    small, large = args.clips
    with tempfile.TemporaryDirectory() as tmp:
        root = demo_dataset(args.data or Path(tmp) / "afew-va", large)
        frames = indexed(root)
        print(
            f"model {args.model} (random init), batch {args.batch_size}, workers {args.workers}; "
            f"{small} vs {large} clips",
            flush=True,
        )
        print(f"machine: {machine()}; {load_average()}", flush=True)
        results = {n: measure(frames, n, Path(tmp), args) for n in (small, large)}
    for n, r in results.items():
        print(
            f"{n:4d} clips, {r['frames']:6d} frames: peak RSS main {r['main_mib']:7.1f} MiB, largest worker "
            f"{r['worker_mib']:6.1f} MiB, main + {args.workers} workers {r['total_mib']:7.1f} MiB; "
            f"{r['frames_per_s']:.0f} frames/s ({r['wall_s']:.0f} s with start-up)"
        )
    ratio = results[large]["total_mib"] / results[small]["total_mib"]
    main_ratio = results[large]["main_mib"] / results[small]["main_mib"]
    print(
        f"ratio      : {ratio:9.3f}  (peak RSS {large} / {small} clips, main + workers; main alone {main_ratio:.3f};"
        f" target <= 1.2)"
    )
    print(load_average())


if __name__ == "__main__":
    main()
