"""The workflow's own overhead: dry run, no-op run, and the number of jobs, at AFEW-VA scale.

A synthetic AFEW-VA of 600 clips of 40..60 frames (~30k frames) is generated; a 60-clip set is made of
links to its first 60 clip folders. For each, a config file (merged over the repo's config.yaml) sets
``dataset.root`` to it and ``clip.model: clipva-tiny``, and Snakemake runs as

    snakemake -s <repo>/Snakefile -d <tmp>/<n>clips --cores 2 --configfile <tmp>/<n>clips.yaml ...

- dry run: ``-n results/submission.csv`` (median of --repeat runs), and its number of jobs, for 60 and
  600 clips, and for 600 clips with ``features.shards: 4`` (jobs may grow with sharding only);
- no-op: the workflow is built once for --build-clips clips (pretrain and finetune shortened to 1 epoch:
  the no-op does not depend on them), then ``results/submission.csv`` is asked for again (median of
  --repeat runs); it must report nothing to be done.

Every time includes Snakemake's start-up (the interpreter, its imports), as a user sees it.

    .venv/bin/python benchmarks/workflow.py                    # builds 60 clips for the no-op
    .venv/bin/python benchmarks/workflow.py --build-clips 600  # the no-op at full scale (a long build)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import AFEW_VA_CLIPS, REPO, as_the_workflow_runs, demo_dataset, load_average, machine, median

SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"


def subset(root: Path, n_clips: int, dest: Path) -> Path:
    """A data set of the first n_clips clip folders of root, as symbolic links."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in sorted(p for p in root.iterdir() if p.is_dir())[:n_clips]:
        (dest / folder.name).symlink_to(folder)
    return dest


def workdir(tmp: Path, name: str, root: Path, shards: int = 1) -> tuple[Path, Path]:
    """A working directory and a config file pointing at the data set root."""
    wd = tmp / name
    wd.mkdir()
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "dataset": {"root": str(root)},
                "clip": {"model": "clipva-tiny"},
                "features": {"shards": shards},
                "pretrain": {"epochs": 1},
                "finetune": {"epochs": 1, "warmup_epochs": 1},
            }
        )
    )
    return wd, cfg


def snakemake(wd: Path, cfg: Path, *args: str, log: Path | None = None) -> tuple[float, str]:
    # the targets go first: --configfile takes several values
    cmd = [SNAKEMAKE, *args, "-s", str(REPO / "Snakefile"), "-d", str(wd), "--cores", "2", "--configfile", str(cfg)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    out = done.stdout + done.stderr
    if log is not None:
        log.write_text(out)
    if done.returncode:
        sys.exit(f"snakemake failed ({' '.join(cmd)}):\n{out[-3000:]}")
    return seconds, out


def jobs_of(out: str) -> int:
    found = re.search(r"^total\s+(\d+)\s*$", out, re.MULTILINE)
    return int(found.group(1)) if found else 0


def dry_run(wd: Path, cfg: Path, repeat: int) -> tuple[float, int]:
    runs = [snakemake(wd, cfg, "-n", "results/submission.csv") for _ in range(repeat)]
    return median([s for s, _ in runs]), jobs_of(runs[0][1])


def main() -> None:
    as_the_workflow_runs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, nargs=2, default=[60, AFEW_VA_CLIPS], metavar=("SMALL", "LARGE"))
    parser.add_argument("--build-clips", type=int, default=60, help="clips of the data set built for the no-op run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", help="folder to generate the data set in, or reuse (default: a temporary one)")
    parser.add_argument("--keep", help="work in this new folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    small, large = args.clips
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        root = demo_dataset(args.data or tmp / "afew-va", large)
        roots = {large: root, small: subset(root, small, tmp / f"afew-va-{small}")}
        if args.build_clips not in roots:
            roots[args.build_clips] = subset(root, args.build_clips, tmp / f"afew-va-{args.build_clips}")
        print(f"snakemake {SNAKEMAKE}; clip.model clipva-tiny; {large}-clip data set at {root}", flush=True)
        print(f"machine: {machine()}; {load_average()}", flush=True)
        dry = {}
        for n, shards in ((small, 1), (large, 1), (large, 4)):
            wd, cfg = workdir(tmp, f"dry-{n}clips-{shards}shards", roots[n], shards)
            dry[n, shards] = dry_run(wd, cfg, args.repeat)
            print(
                f"dry run, {n:4d} clips, {shards} shard(s): {dry[n, shards][0]:5.2f} s (median of {args.repeat}), "
                f"{dry[n, shards][1]} jobs",
                flush=True,
            )
        wd, cfg = workdir(tmp, f"build-{args.build_clips}clips", roots[args.build_clips])
        build, _ = snakemake(wd, cfg, "results/submission.csv", log=tmp / "build.log")
        print(f"build, {args.build_clips} clips: {build:.0f} s (pretrain/finetune 1 epoch)", flush=True)
        noops = [snakemake(wd, cfg, "results/submission.csv") for _ in range(args.repeat)]
        nothing = all("Nothing to be done" in out for _, out in noops)
        noop = median([s for s, _ in noops])
        print(
            f"no-op,   {args.build_clips:4d} clips: {noop:5.2f} s (median of {args.repeat}; "
            f"{'nothing to be done' if nothing else 'NOT a no-op: jobs ran'})"
        )
    print(
        f"dry run {large} clips: {dry[large, 1][0]:.2f} s (target < 3 s); ratio {large}/{small} clips "
        f"{dry[large, 1][0] / dry[small, 1][0]:.2f}"
    )
    print(f"no-op   {args.build_clips} clips: {noop:.2f} s (target < 3 s)")
    print(
        f"jobs    : {dry[small, 1][1]} ({small} clips), {dry[large, 1][1]} ({large} clips), "
        f"{dry[large, 4][1]} ({large} clips, 4 shards)"
    )
    print(load_average())


if __name__ == "__main__":
    main()
