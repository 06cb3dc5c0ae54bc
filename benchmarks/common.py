"""Shared helpers of the benchmarks: the synthetic AFEW-VA-scale data set, machine description, timing.

Not a benchmark itself; the scripts next to it import it (they run as ``python benchmarks/NAME.py``).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# AFEW-VA: 600 clips, ~30k frames. The demo's clips get 40..60 frames (50 on average) at this scale.
AFEW_VA_CLIPS = 600
MIN_FRAMES, MAX_FRAMES = 40, 60
N_ACTORS = 60
CROP = {"method": "landmarks", "margin": 0.2}
REPO = Path(__file__).resolve().parent.parent


def repo_config() -> dict:
    """The repository's config.yaml: the settings the benchmarks measure with."""
    import yaml

    return yaml.safe_load((REPO / "config.yaml").read_text())


def as_the_workflow_runs() -> None:
    """Run the calling benchmark under the OpenMP wait policy that the workflow gives its jobs
    (workflow/rules/common.smk: PASSIVE unless the environment sets one), so that its figures are the
    workflow's. libgomp reads the policy once, when torch loads it, so the script starts again with it set.
    A policy set in the environment is kept: OMP_WAIT_POLICY=ACTIVE measures spinning threads."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, *sys.argv])


def demo_dataset(root: str | Path, n_clips: int, seed: int = 0, frame_size: tuple[int, int] | None = None) -> Path:
    """A synthetic AFEW-VA of `n_clips` clips of 40..60 frames under `root` (made once: a marker file records
    the arguments, so a cache folder given with --data is reused by later runs). Frames are the demo's
    160x128 and 192x144 unless `frame_size` (width, height) is given."""
    from clipva.demo import make_demo

    root = Path(root)
    args = {
        "n_clips": n_clips,
        "n_actors": min(N_ACTORS, n_clips),
        "min_frames": MIN_FRAMES,
        "max_frames": MAX_FRAMES,
        "seed": seed,
    }
    if frame_size:
        args["frame_sizes"] = [list(frame_size)]
    marker = root / "clipva-benchmark.json"
    if marker.is_file() and json.loads(marker.read_text()).get("args") == args:
        return root
    start = time.perf_counter()
    summary = make_demo(root, **args)
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps({"args": args, "n_frames": summary["n_frames"], "seconds": seconds}))
    print(f"[data] generated {n_clips} clips, {summary['n_frames']} frames in {seconds:.0f} s under {root}", flush=True)
    return root


def indexed(root: str | Path):
    """The frames table of a data set folder (cached next to it as frames.pkl)."""
    import pandas as pd

    from clipva.afew import index_dataset

    cache = Path(root) / "frames.pkl"
    if cache.is_file():
        return pd.read_pickle(cache)
    frames, _ = index_dataset(root)
    frames.to_pickle(cache)
    return frames


def first_clips(frames, n_clips: int):
    """The rows of the first `n_clips` clips (in clip id order)."""
    keep = sorted(frames["clip_id"].unique())[:n_clips]
    return frames[frames["clip_id"].isin(keep)].reset_index(drop=True)


def machine() -> str:
    """One line describing this machine: CPU model, cores, memory, torch threads, GPU."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = set(next(line for line in info.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]  # words, not substrings
    except (OSError, StopIteration):
        isa = []
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        mem = float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    wait = os.environ.get("OMP_WAIT_POLICY", "unset")
    return (
        f"{cpu}, {os.cpu_count()} cores ({'/'.join(isa) or '?'}), {mem:.0f} GiB, {gpu}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads, OMP_WAIT_POLICY {wait})"
    )


def load_average() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average ?"


def median(values) -> float:
    return float(np.median(np.asarray(values, dtype=float)))
