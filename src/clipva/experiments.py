"""Summaries across experiments: subject-independent cross-validation folds, and runs (variants) compared.

`cv_summary` reports every metric of every run as mean and standard deviation over folds (sample standard
deviation, ddof=1), each fold's value, and the value over all folds' test predictions pooled together
(with actor folds every labeled clip is tested exactly once, so this is the whole data set's score).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clipva.atomic import write_csv
from clipva.evaluation import metrics_on_test_split
from clipva.metrics import DIMENSIONS, METRICS
from clipva.plots import save_figure

log = logging.getLogger(__name__)

VIEWS = ("pooled", "per_clip")
PARTS = ("within_clip", "clip_level")  # clipva.metrics.clip_components: the CCC inside clips and of their levels


def _flat(metrics: dict) -> dict[tuple[str, str, str], float]:
    """(view, dimension, metric) -> value of one metrics.json (the test split's metrics and baselines)."""
    out = {}
    for view in VIEWS:
        for dim in DIMENSIONS:
            for metric in METRICS:
                out[(view, dim, metric)] = metrics[view][dim][metric]
        out[(view, "mean", "mean_ccc")] = metrics[view]["mean_ccc"]
    for part in PARTS:
        out.update({(part, dim, "ccc"): metrics[part][dim]["ccc"] for dim in DIMENSIONS})
        out[(part, "mean", "mean_ccc")] = metrics[part]["mean_ccc"]
    baselines = metrics.get("baselines", {})
    for probe in ("ridge_probe", "smoothed_ridge_probe"):
        if probe in baselines:
            out[(probe, "mean", "mean_ccc")] = baselines[probe]["test"]["mean_ccc"]
            for part in PARTS:
                if part in baselines[probe]:
                    out[(probe, "mean", f"{part}_mean_ccc")] = baselines[probe][part]["mean_ccc"]
    for dim, moved in metrics.get("smoothness", {}).items():
        out[("smoothness", dim, "change_ratio")] = moved["ratio"]
    if "constant" in baselines:
        out[("constant", "mean", "mean_ccc")] = baselines["constant"]["mean_ccc"]
    return out


def cv_summary(
    metrics: dict[tuple[str, int], dict],
    predictions: dict[tuple[str, int], pd.DataFrame],
    scores: dict[tuple[str, int], dict[str, float]] | None = None,
) -> pd.DataFrame:
    """One row per (run, view, dimension, metric): mean, std, all_folds (pooled predictions), fold0..foldK-1.

    `metrics` and `predictions` are keyed by (run, fold): each fold's metrics.json and predictions.csv.
    `scores`, keyed the same way, adds the criteria runs are chosen on, as views of their own with the mean
    CCC (no all_folds value): ``validation`` (the fine-tuning's best validation mean CCC) and ``selection``
    (the CV score of `cv.select`). Each run after the first also gets, per criterion, its paired difference
    from the first run (metric ``paired_difference``, fold by fold; its std over folds / sqrt(folds) is the
    standard error of the mean difference).
    """
    scores = scores or {}
    runs = list(dict.fromkeys(run for run, _ in metrics))
    rows = []
    for run in runs:
        folds = sorted(fold for r, fold in metrics if r == run)
        per_fold = [_flat(metrics[(run, fold)]) for fold in folds]
        for fold, flat in zip(folds, per_fold, strict=True):
            mine, first = scores.get((run, fold), {}), scores.get((runs[0], fold), {})
            flat.update({(view, "mean", "mean_ccc"): x for view, x in mine.items()})
            if run != runs[0]:
                flat.update({(v, "mean", "paired_difference"): x - first[v] for v, x in mine.items() if v in first})
        together = pd.concat([predictions[(run, fold)] for fold in folds], ignore_index=True)
        tested = together[together["split"] == "test"]
        if tested.duplicated(["clip_id", "frame"]).any():
            raise ValueError(f"cv_summary: run {run}: a clip is in the test split of two folds")
        overall = _flat({**metrics_on_test_split(together)})
        for key in per_fold[0]:
            values = np.array([f[key] for f in per_fold], dtype=float)
            rows.append(
                {
                    "run": run,
                    "view": key[0],
                    "dimension": key[1],
                    "metric": key[2],
                    "mean": float(np.nanmean(values)),
                    "std": float(np.nanstd(values, ddof=1)) if len(values) > 1 else float("nan"),
                    "all_folds": overall.get(key, float("nan")),
                    **{f"fold{fold}": v for fold, v in zip(folds, values, strict=True)},
                }
            )
    return pd.DataFrame(rows)


def compare_runs(metrics: dict[str, dict]) -> pd.DataFrame:
    """One row per run: its test metrics (pooled over frames, the per-clip mean CCC, the mean CCC within clips
    and of their levels) and baselines."""
    rows = []
    for run, m in metrics.items():
        row = {"run": run, "backbone": m.get("backbone", ""), "mean_ccc": m["pooled"]["mean_ccc"]}
        for metric in METRICS:
            for dim in DIMENSIONS:
                row[f"{metric}_{dim}"] = m["pooled"][dim][metric]
        row["per_clip_mean_ccc"] = m["per_clip"]["mean_ccc"]
        row["ridge_probe_mean_ccc"] = m["baselines"]["ridge_probe"]["test"]["mean_ccc"]
        row["smoothed_ridge_probe_mean_ccc"] = m["baselines"]["smoothed_ridge_probe"]["test"]["mean_ccc"]
        for part in PARTS:
            row[f"{part}_mean_ccc"] = m[part]["mean_ccc"]
            row[f"smoothed_ridge_probe_{part}_mean_ccc"] = m["baselines"]["smoothed_ridge_probe"][part]["mean_ccc"]
        for dim in DIMENSIONS:
            row[f"change_ratio_{dim}"] = m["smoothness"][dim]["ratio"]
        row["constant_mean_ccc"] = m["baselines"]["constant"]["mean_ccc"]
        row["best_epoch"] = m.get("best_epoch", {}).get("epoch", float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def plot_comparison(table: pd.DataFrame, path: str) -> None:
    """Test CCC of each run (valence, arousal, mean), with the ridge probe of the same features."""
    fig = Figure(figsize=(max(4.0, 1.6 * len(table) + 2), 3.6))
    ax = fig.subplots()
    x = np.arange(len(table))
    for k, (column, label) in enumerate([("ccc_valence", "valence"), ("ccc_arousal", "arousal"), ("mean_ccc", "mean")]):
        ax.bar(x + (k - 1) * 0.27, table[column], width=0.27, label=f"CCC {label}")
    ax.scatter(x, table["ridge_probe_mean_ccc"], marker="_", s=600, color="black", zorder=3, label="ridge probe (mean)")
    ax.set_xticks(x, table["run"])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(ylabel="test CCC (pooled)", title="runs compared on the configured split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_cv(table: pd.DataFrame, path: str) -> None:
    """Pooled test CCC per run over the folds: mean +- std as bars, each fold as a dot."""
    pooled = table[(table["view"] == "pooled") & (table["metric"].isin(["ccc", "mean_ccc"]))]
    runs = list(dict.fromkeys(pooled["run"]))
    folds = [c for c in table.columns if c.startswith("fold")]
    fig = Figure(figsize=(max(4.0, 1.8 * len(runs) + 2), 3.6))
    ax = fig.subplots()
    for k, dim in enumerate(("valence", "arousal", "mean")):
        part = pooled.set_index("run").loc[runs]
        part = part[part["dimension"] == dim]
        x = np.arange(len(runs)) + (k - 1) * 0.27
        ax.bar(x, part["mean"], yerr=part["std"], width=0.27, capsize=3, label=f"CCC {dim}")
        for j, run in enumerate(runs):
            ax.scatter([x[j]] * len(folds), part.loc[run, folds], color="black", s=8, zorder=3)
    ax.set_xticks(np.arange(len(runs)), runs)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(ylabel="test CCC (pooled per fold)", title=f"{len(folds)}-fold cross-validation by actor")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def cv_summary_files(
    runs: list[str],
    folds: int,
    metrics: list[str],
    predictions: list[str],
    out: dict[str, str],
    histories: list[str],
    selected: list[str],
    selection: list[str],
) -> None:
    """`cv_summary` of each run's folds, read from their metrics.json and predictions.csv paths (both in the
    order run by run, fold by fold), written to `out`'s ``summary`` (CSV) and ``plot`` paths. `histories`
    (fine-tuning history.json, same order) and `selection` (select.json of the runs `selected`, run by run,
    fold by fold) add the validation and selection views."""
    keys = [(run, fold) for run in runs for fold in range(folds)]
    found = {key: json.loads(Path(path).read_text()) for key, path in zip(keys, metrics, strict=True)}
    tables = {key: pd.read_csv(path, dtype={"clip_id": str}) for key, path in zip(keys, predictions, strict=True)}
    scores: dict[tuple[str, int], dict[str, float]] = {key: {} for key in keys}
    for key, path in zip(keys, histories, strict=True):
        scores[key]["validation"] = json.loads(Path(path).read_text())["best"]["val_mean_ccc"]
    chosen = [(run, fold) for run in selected for fold in range(folds)]
    for key, path in zip(chosen, selection, strict=True):
        scores[key]["selection"] = json.loads(Path(path).read_text())["mean_ccc"]
    table = cv_summary(found, tables, scores)
    write_csv(out["summary"], table, float_format="%.4f")
    plot_cv(table, out["plot"])
    for run in runs:
        mine = table[(table["run"] == run) & (table["metric"] == "mean_ccc")].set_index("view")
        said = [f"test mean CCC {mine.loc['pooled', 'mean']:.3f} +- {mine.loc['pooled', 'std']:.3f}"]
        said += [f"{view} {mine.loc[view, 'mean']:.3f}" for view in ("validation", "selection") if view in mine.index]
        log.info("%s over %d folds: %s", run, folds, ", ".join(said))
