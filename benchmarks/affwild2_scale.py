"""Aff-Wild2 at its scale: how each step grows with the number of videos (issue #20).

Synthetic sets in Aff-Wild2's layout (clipva.affwild2) of 50, 500 and 5,000 videos of --frames frames each
(default 520: 2.6 million frames at 5,000 videos, Aff-Wild2's count). Every crop is a hard link to one of a
few 112x112 JPEGs of the Aff-Wild2 demo's faces (the index reads one crop header per video; extraction
decodes what it encodes); the annotation files are real text, with -5 rows and frames without a crop.
70% of the videos are in Train_Set, 30% in Validation_Set.

Each step runs in a process of its own, which reports its time and its peak resident memory:

- index: `index_affwild2` and the writing of frames.csv and videos.csv;
- split: the official split from frames.csv;
- dry run: ``snakemake -n`` of the main job on the indexed set (``features.shards: 8``): its jobs must not
  grow with the videos, and its time only with what Snakemake stats;
- extraction of one shard of 10 videos (``clipva-tiny``): the cost of a shard whose size does not change;
  the part that grows with the data set is reading frames.csv, timed apart;
- merge: 8 shard stores of made-up 64-dimensional features (the tiny model's) into one store;
- head data: the fine-tuning and evaluate jobs' loading of every split's features, which they hold in
  memory (frames x embedding size x 4 bytes: 5.3 GB for ViT-B-32 at 2.6 million frames), then what they
  compute on all training frames at once: the head's whitening statistics and the ridge probes.

    .venv/bin/python benchmarks/affwild2_scale.py                      # 50, 500, 5000 videos (about 15 min)
    .venv/bin/python benchmarks/affwild2_scale.py --videos 50 500 --frames 100   # a quick look

The table it prints, with per-frame ratios between sizes (1.0 = linear), is in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, as_the_workflow_runs, load_average, machine, repo_config

SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
SHARDS = 8


def make_set(root: Path, n_videos: int, n_frames: int) -> int:
    """The data set (hard links for the crops); returns its number of crops."""
    import numpy as np

    from clipva.affwild2 import ANNOTATIONS, CROPS, HEADER
    from clipva.affwild2_demo import make_affwild2_demo

    faces = root.parent / f"{root.name}-faces"
    make_affwild2_demo(faces, n_videos=3, n_pairs=0, min_frames=8, max_frames=8, other_videos=0, seed=5)
    faces_jpg = sorted((faces / CROPS).glob("*/*.jpg"))
    # a file system caps the links to one file (ext4: 65,000), so the crops link to enough copies of the faces
    copies = faces / "copies"
    copies.mkdir()
    sources = []
    for j in range(max(len(faces_jpg), -(-n_videos * n_frames // 50_000))):
        sources.append(copies / f"{j}.jpg")
        sources[-1].write_bytes(faces_jpg[j % len(faces_jpg)].read_bytes())
    rng = np.random.default_rng(0)
    crops = 0
    for subset in ("Train_Set", "Validation_Set"):
        (root / ANNOTATIONS / subset).mkdir(parents=True, exist_ok=True)
    for v in range(n_videos):
        name = f"{v + 1}-30-640x360" + ("_left" if v % 10 == 0 else "_right" if v % 10 == 1 else "")
        subset = "Train_Set" if v % 10 < 7 else "Validation_Set"
        labels = np.round(rng.uniform(-1, 1, (n_frames, 2)), 3)
        labels[:5] = -5  # unannotated frames at the start
        lines = [HEADER, *(f"{a},{b}" for a, b in labels)]
        (root / ANNOTATIONS / subset / f"{name}.txt").write_text("\n".join(lines) + "\n")
        folder = root / CROPS / name
        folder.mkdir(parents=True)
        no_face = set(range(n_frames // 2, n_frames // 2 + 10))  # the face lost for 10 frames
        for k in range(1, n_frames + 1):
            if k not in no_face:
                os.link(sources[(v + k) % len(sources)], folder / f"{k:05d}.jpg")
                crops += 1
    return crops


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike getrusage's maxrss, not inherited across exec)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


def step(name: str, root: Path, work: Path, fit: bool = True) -> dict:
    """One step, in this process (called as `--step NAME`); returns its figures."""
    sys.path.insert(0, str(REPO / "src"))
    index, clips = work / "results/index/frames.csv", work / "results/index/clips.csv"
    out: dict = {}
    if name == "index":
        from clipva.afew import write_report
        from clipva.affwild2 import index_affwild2
        from clipva.atomic import write_csv

        start = time.perf_counter()  # each step's time leaves out its imports

        frames, videos, problems = index_affwild2(root, "error")
        write_report(problems, frames, work / "results/index/validation_report.txt", "error")
        write_csv(work / "results/index/videos.csv", videos)
        write_csv(index, frames)
        out["frames"] = len(frames)
    elif name == "split":
        from clipva.afew import read_frames
        from clipva.atomic import write_csv
        from clipva.splits import assign_splits, clip_table

        start = time.perf_counter()
        table = assign_splits(clip_table(read_frames(index)), {"method": "official", "official_val": 0.15, "seed": 0})
        write_csv(clips, table)
    elif name == "extract":
        import torch

        from clipva.encoder import load_clip_from
        from clipva.extract import extract_features, shard_frames
        from clipva.splits import read_clips

        torch.set_num_threads(2)
        shards = len(read_clips(clips)) // 10
        start = time.perf_counter()
        chosen = shard_frames(str(index), shards, 0)  # as the shard job reads its frames
        out.update(read_index_s=time.perf_counter() - start, read_peak_mb=peak_mb())
        encoder = load_clip_from({"model": "clipva-tiny", "pretrained": None, "precision": "fp32"})
        summary = extract_features(
            chosen, str(work / "shard.h5"), encoder, {"method": "none"}, None, num_workers=1, progress=False
        )
        out.update(shard_frames=summary["frames"], encode_s=summary["seconds"])
    elif name == "read_whole":  # what a shard job's reading held before it streamed: the whole table
        from clipva.afew import read_frames
        from clipva.extract import shard_clips
        from clipva.splits import read_clips

        shards = len(read_clips(clips)) // 10  # as the extract step's
        start = time.perf_counter()
        frames = read_frames(index)
        ids = frames["clip_id"].unique().tolist()
        out["shard_frames"] = int(frames["clip_id"].isin(shard_clips(ids, shards, 0)).sum())
    elif name == "merge":
        import numpy as np

        from clipva.afew import read_frames
        from clipva.store import ClipFeatures, atomic_h5, merge_stores, write_features

        frames = read_frames(index)
        ids = sorted(frames["clip_id"].unique())
        groups = dict(tuple(frames.groupby("clip_id")))
        rng = np.random.default_rng(0)
        shards = []
        for s in range(SHARDS):
            path = work / f"results/features/shards/{s}-of-{SHARDS}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_h5(path) as f:
                f.attrs.update(model="clipva-tiny", embed_dim=64)
                f.create_group("clips")
                for clip_id in ids[s::SHARDS]:
                    g = groups[clip_id]
                    feats = rng.standard_normal((len(g), 64), dtype=np.float32)
                    clip = ClipFeatures(clip_id, feats, g["frame"].to_numpy(), g["valence"], g["arousal"])
                    write_features(f, clip, actor=g["actor"].iloc[0])
            shards.append(path)
        start = time.perf_counter()  # the merge alone
        merge_stores(shards, work / "results/features/features.h5")
        out["store_mb"] = (work / "results/features/features.h5").stat().st_size / 2**20
    elif name == "head_data":
        from clipva.baselines import RidgeProbe
        from clipva.sequences import load_splits
        from clipva.training import head_config, new_head

        start = time.perf_counter()
        data = load_splits(str(work / "results/features/features.h5"), str(clips), ("train", "val", "test"))
        out["frames_loaded"] = sum(len(c.features) for s in data.values() for c in s)
        out["features_mb"] = sum(c.features.nbytes for s in data.values() for c in s) / 2**20
        out["load_peak_mb"] = peak_mb()
        out["load_s"] = time.perf_counter() - start
        if fit:  # what the fine-tuning and evaluate jobs compute on every training frame at once
            cfg, _ = head_config(repo_config()["head"], 64)
            fit_start = time.perf_counter()
            new_head(cfg, data["train"])  # the whitening statistics
            RidgeProbe(data["train"])  # the ridge probes (and the head's ridge start)
            out["fit_s"] = time.perf_counter() - fit_start
    else:
        raise SystemExit(f"unknown step {name}")
    out.update(seconds=time.perf_counter() - start, peak_mb=peak_mb())
    return out


def dry_run(root: Path, work: Path) -> dict:
    config = work / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "dataset": {"root": str(root), "format": "affwild2"},
                "split": {"method": "official"},
                "face_crop": {"method": "none"},
                "clip": {"model": "clipva-tiny"},
                "features": {"shards": SHARDS},
            }
        )
    )
    cmd = [SNAKEMAKE, "-n", "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores", "2", "--configfile", str(config)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    total = next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("total"))
    return {"seconds": seconds, "jobs": int(total)}


def child(name: str, root: Path, work: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--step", name, "--root", str(root), "--work", str(work)],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise SystemExit(f"step {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[50, 500, 5000])
    parser.add_argument("--frames", type=int, default=520, help="frames per video")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the data sets (default: a temporary one)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args.step, args.root, args.work)))
        return
    as_the_workflow_runs()
    print(f"# {machine()}; {load_average()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in args.videos:
            root, work = Path(tmp) / f"aff{n}", Path(tmp) / f"work{n}"
            start = time.perf_counter()
            crops = make_set(root, n, args.frames)
            made = time.perf_counter() - start
            row = {"videos": n, "crops": crops, "make_s": made}
            for name in ("index", "split"):
                row[name] = child(name, root, work)
            row["dry_run"] = dry_run(root, work)
            for name in ("read_whole", "extract", "merge", "head_data"):
                row[name] = child(name, root, work)
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(root)
            shutil.rmtree(work)
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    print(
        "\n| videos | crops | index s (MB) | split s | dry run s (jobs) | shard of 10 videos: read its frames s (MB), "
        "encode s (MB) | the whole table read s (MB) | merge s (MB, store MB) | head data s (MB) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        i, s, d, e, w, m, h = (
            r[k] for k in ("index", "split", "dry_run", "extract", "read_whole", "merge", "head_data")
        )
        print(
            f"| {r['videos']} | {r['crops']:,} | {i['seconds']:.1f} ({i['peak_mb']:.0f}) | {s['seconds']:.1f} | "
            f"{d['seconds']:.1f} ({d['jobs']}) | {e['read_index_s']:.1f} ({e['read_peak_mb']:.0f}), "
            f"{e['encode_s']:.1f} ({e['peak_mb']:.0f}) | {w['seconds']:.1f} ({w['peak_mb']:.0f}) | "
            f"{m['seconds']:.1f} ({m['peak_mb']:.0f}, {m['store_mb']:.0f}) | {h['features_mb']:.0f}: "
            f"{h['load_s']:.1f} ({h['load_peak_mb']:.0f}), {h['fit_s']:.1f} ({h['peak_mb']:.0f}) |"
        )
    print("\nper crop, each size against the one before it (1.0: linear; below 1: cheaper per crop):")
    for a, b in zip(rows, rows[1:], strict=False):
        ratio = b["crops"] / a["crops"]
        parts = [f"{k} {b[k]['seconds'] / a[k]['seconds'] / ratio:.2f}" for k in ("index", "split", "merge")]
        parts.append(f"head data {b['head_data']['load_s'] / a['head_data']['load_s'] / ratio:.2f}")
        parts.append(f"fit {b['head_data']['fit_s'] / a['head_data']['fit_s'] / ratio:.2f}")
        parts.append(f"read index {b['extract']['read_index_s'] / a['extract']['read_index_s'] / ratio:.2f}")
        parts.append(f"dry run (total) {b['dry_run']['seconds'] / a['dry_run']['seconds']:.2f}x")
        print(f"  {a['videos']} -> {b['videos']} videos: " + ", ".join(parts))


if __name__ == "__main__":
    main()
