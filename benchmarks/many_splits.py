"""The head against the smoothed ridge probe over many splits of one data set, not one: a test split of a dozen
clips (the demo's) decides a comparison by chance as often as not, and so does the validation split that picks
the head's settings.

On a workflow folder whose main job has run (its features and index; with `snakemake cv`, its actor folds),
fine-tunes the main run's head (its settings as that folder resolved them, a setting added since then at
config.yaml's default, changed by --set) on the configured split, on --random more random splits by clip
(seeds 1.., the configured fractions) and on each actor fold, and fits the smoothed ridge probe on the same
clips; prints the test mean CCC of both per split, and their means and the head's lead per kind of split.
Nothing is written into the folder.

    .venv/bin/python benchmarks/many_splits.py heldout                              # after `all cv` in heldout/
    .venv/bin/python benchmarks/many_splits.py . --set finetune.start_folds=0       # the start chosen on validation
    .venv/bin/python benchmarks/many_splits.py . --random 0 --folds 0               # the configured split only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from common import as_the_workflow_runs, machine, repo_config

from clipva.baselines import ridge_baselines
from clipva.metrics import evaluate_predictions
from clipva.sequences import VA_SCALE, load_splits, predict_clip
from clipva.splits import assign_splits, read_clips
from clipva.training import finetune, head_config, new_head


def scores(clips, preds) -> tuple[float, float, float]:
    """Test mean CCC over the labeled frames as metrics.json has it: pooled, within clips, of clip levels."""
    pred = np.concatenate([p[c.labeled] for c, p in zip(clips, preds, strict=True)])
    true = np.concatenate([c.labels[c.labeled] for c in clips]) / VA_SCALE
    ids = np.concatenate([[c.clip_id] * int(c.labeled.sum()) for c in clips])
    m = evaluate_predictions(pred, true, ids)
    return m["pooled"]["mean_ccc"], m["within_clip"]["mean_ccc"], m["clip_level"]["mean_ccc"]


def settings_of(folder: Path, changes: list[str]) -> dict:
    """The main run's resolved settings (results/config.yaml), with KEY=VALUE changes (head.* or finetune.*)."""
    resolved = yaml.safe_load((folder / "results" / "config.yaml").read_text())
    run = resolved["runs"][resolved["config"].get("run", "main")]
    for section in ("head", "finetune"):  # a setting added since the folder ran: today's default
        run[section] = {**repo_config()[section], **run[section]}
    for change in changes:
        key, _, value = change.partition("=")
        section, _, name = key.partition(".")
        if section not in ("head", "finetune") or name not in run[section]:
            sys.exit(f"--set {change}: not a head.* or finetune.* setting of {folder / 'results' / 'config.yaml'}")
        run[section][name] = yaml.safe_load(value)
    return run


def main() -> None:
    as_the_workflow_runs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a workflow folder (the --directory the main job ran in)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="head.* or finetune.*")
    parser.add_argument("--random", type=int, default=4, help="random splits by clip besides the configured one")
    parser.add_argument("--folds", type=int, default=5, help="actor folds of `snakemake cv` (0: none)")
    args = parser.parse_args()
    results = args.folder / "results"
    run = settings_of(args.folder, args.set)
    if run["head"].get("centre", "none") != "none" or run["training"]["backbone"] != "frozen":
        sys.exit("many_splits.py: frozen features as stored only (head.centre: none, no LoRA)")
    with tempfile.TemporaryDirectory(prefix="many_splits_") as tmp:
        compare(args, results, run, Path(tmp))


def compare(args: argparse.Namespace, results: Path, run: dict, tmp: Path) -> None:
    """Fine-tune and fit on every split (the random ones' tables written into `tmp`), print the table."""
    clips = read_clips(results / "index" / "clips.csv")
    splits = {"configured": results / "index" / "clips.csv"}
    for seed in range(1, args.random + 1):
        table = assign_splits(clips.drop(columns="split"), {**run["split"], "method": "random", "seed": seed})
        table.to_csv(tmp / f"random{seed}.csv", index=False)
        splits[f"random{seed}"] = tmp / f"random{seed}.csv"
    for k in range(args.folds):
        path = results / "cv" / "folds" / f"fold{k}.csv"
        if not path.is_file():
            sys.exit(f"{path}: no actor folds; run `snakemake cv` in {args.folder} first, or pass --folds 0")
        splits[f"fold{k}"] = path
    print(f"machine: {machine()}; folder {args.folder}; changes: {args.set or 'none'}", flush=True)
    print(f"{'split':12s} {'head':>7s} {'probe':>7s} {'lead':>7s}  (within clips, clip levels: head / probe)")
    rows = {}
    for name, path in splits.items():
        start = time.perf_counter()
        data = load_splits(str(results / "features" / "features.h5"), str(path), ("train", "val", "test"))
        config, window = head_config(run["head"], data["train"][0].features.shape[1])
        torch.manual_seed(run["pretrain"]["seed"])
        head, _, _ = finetune(data["train"], data["val"], new_head(config, data["train"]), window, run["finetune"])
        head_scores = scores(data["test"], [predict_clip(head, c.features, window) for c in data["test"]])
        probe = ridge_baselines(data["train"], data["val"], data["test"])["smoothed_ridge_probe"]
        probe_scores = scores(data["test"], probe["test_predictions"])
        rows[name] = (head_scores, probe_scores)
        print(
            f"{name:12s} {head_scores[0]:7.3f} {probe_scores[0]:7.3f} {head_scores[0] - probe_scores[0]:+7.3f}  "
            f"({head_scores[1]:.3f} / {probe_scores[1]:.3f}, {head_scores[2]:.3f} / {probe_scores[2]:.3f}; "
            f"{time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    by_clip = [n for n in rows if not n.startswith("fold")]
    for kind, names in (("configured and random", by_clip), ("actor folds", [n for n in rows if n not in by_clip])):
        if names:
            head = np.array([rows[n][0][0] for n in names])
            probe = np.array([rows[n][1][0] for n in names])
            print(
                f"{kind} ({len(names)}): head {head.mean():.3f}, smoothed probe {probe.mean():.3f}, "
                f"lead {(head - probe).mean():+.3f}, head ahead in {int((head > probe).sum())}"
            )


if __name__ == "__main__":
    main()
