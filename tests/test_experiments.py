"""Cross-validation by actor, runs compared, one report: the summaries (unit) and the workflow (e2e)."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import copy_built, run_snakemake

from clipva.evaluation import metrics_on_test_split
from clipva.experiments import compare_runs, cv_summary
from clipva.splits import read_clips


def _predictions(seed: int, clips: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for clip in clips:
        for frame in range(10):
            v, a = rng.integers(-10, 11, 2)
            pred = {"valence_pred": v * 0.5 + rng.normal(0, 3), "arousal_pred": a * 0.3 + rng.normal(0, 3)}
            rows.append({"clip_id": clip, "frame": frame, "split": "test", "valence": v, "arousal": a, **pred})
    return pd.DataFrame(rows)


def _metrics(pred: pd.DataFrame) -> dict:
    m = metrics_on_test_split(pred)
    m["baselines"] = {
        "ridge_probe": {"test": {"mean_ccc": 0.1}},
        "smoothed_ridge_probe": {
            "test": {"mean_ccc": 0.2},
            "within_clip": {"mean_ccc": 0.3},
            "clip_level": {"mean_ccc": 0.05},
        },
        "constant": {"mean_ccc": 0.0},
    }
    return m


def test_cv_summary_is_mean_and_std_over_folds_and_pools_all_folds():
    preds = {("a", k): _predictions(k, [f"{k}{i}" for i in range(3)]) for k in range(3)}
    metrics = {key: _metrics(p) for key, p in preds.items()}
    table = cv_summary(metrics, preds)
    row = table[
        (table["run"] == "a")
        & (table["view"] == "pooled")
        & (table["dimension"] == "valence")
        & (table["metric"] == "ccc")
    ].iloc[0]
    folds = [metrics[("a", k)]["pooled"]["valence"]["ccc"] for k in range(3)]
    assert [row[f"fold{k}"] for k in range(3)] == pytest.approx(folds)
    assert row["mean"] == pytest.approx(np.mean(folds)) and row["std"] == pytest.approx(np.std(folds, ddof=1))
    everything = metrics_on_test_split(pd.concat(preds.values()))
    assert row["all_folds"] == pytest.approx(everything["pooled"]["valence"]["ccc"])
    assert row["all_folds"] != pytest.approx(row["mean"])  # pooling all folds is not averaging them
    probe = table[(table["view"] == "ridge_probe")].iloc[0]
    assert probe["mean"] == pytest.approx(0.1)
    assert table[(table["view"] == "smoothed_ridge_probe")].iloc[0]["mean"] == pytest.approx(0.2)
    moved = table[(table["view"] == "smoothness") & (table["dimension"] == "valence")].iloc[0]
    ratios = [metrics[("a", k)]["smoothness"]["valence"]["ratio"] for k in range(3)]
    assert moved["metric"] == "change_ratio" and moved["mean"] == pytest.approx(np.mean(ratios))
    within = table[(table["view"] == "within_clip") & (table["dimension"] == "arousal")].iloc[0]
    assert within["metric"] == "ccc"
    assert [within[f"fold{k}"] for k in range(3)] == pytest.approx(
        [metrics[("a", k)]["within_clip"]["arousal"]["ccc"] for k in range(3)]
    )
    assert within["all_folds"] == pytest.approx(everything["within_clip"]["arousal"]["ccc"])
    probe = table[(table["view"] == "smoothed_ridge_probe")].set_index("metric")
    assert probe.loc["within_clip_mean_ccc", "mean"] == pytest.approx(0.3)
    assert probe.loc["clip_level_mean_ccc", "mean"] == pytest.approx(0.05)
    # every metric of both views, both dimensions and the mean CCC; the CCC within clips and of clip levels
    # (both dimensions and the mean); 3 baselines and the smoothed probe's 2 parts; 2 smoothness ratios
    assert len(table) == 2 * (2 * 4 + 1) + 2 * 3 + 3 + 2 + 2


def test_cv_summary_adds_the_criteria_runs_are_chosen_on():
    preds = {("a", k): _predictions(k, [f"{k}{i}" for i in range(3)]) for k in range(2)}
    metrics = {key: _metrics(p) for key, p in preds.items()}
    scores = {("a", 0): {"validation": 0.4, "selection": 0.3}, ("a", 1): {"validation": 0.2, "selection": 0.1}}
    table = cv_summary(metrics, preds, scores).set_index("view")
    assert table.loc["validation", ["fold0", "fold1"]].tolist() == pytest.approx([0.4, 0.2])
    assert table.loc["selection", "mean"] == pytest.approx(0.2) and np.isnan(table.loc["selection", "all_folds"])
    assert table.loc["selection", "metric"] == "mean_ccc" and len(table) == 2 * (2 * 4 + 1) + 2 * 3 + 3 + 2 + 2 + 2
    # a second run gets its paired difference from the first, fold by fold, for each criterion both have
    preds |= {("b", k): preds[("a", k)] for k in range(2)}
    metrics |= {("b", k): metrics[("a", k)] for k in range(2)}
    scores |= {("b", 0): {"validation": 0.5}, ("b", 1): {"validation": 0.1}}  # b not scored for selection
    table = cv_summary(metrics, preds, scores)
    diff = table[(table["run"] == "b") & (table["metric"] == "paired_difference")].set_index("view")
    assert diff.loc["validation", ["fold0", "fold1"]].tolist() == pytest.approx([0.1, -0.1])
    assert diff.loc["validation", "mean"] == pytest.approx(0.0) and "selection" not in diff.index
    assert not (table[table["run"] == "a"]["metric"] == "paired_difference").any()


def test_cv_summary_refuses_a_clip_tested_in_two_folds():
    preds = {("a", 0): _predictions(0, ["1", "2"]), ("a", 1): _predictions(1, ["2", "3"])}
    with pytest.raises(ValueError, match="two folds"):
        cv_summary({k: _metrics(p) for k, p in preds.items()}, preds)


def test_compare_runs_has_a_row_per_run():
    metrics = {"main": _metrics(_predictions(0, ["1", "2"])), "other": _metrics(_predictions(1, ["1", "2"]))}
    table = compare_runs(metrics)
    assert table["run"].tolist() == ["main", "other"]
    assert table.loc[0, "mean_ccc"] == metrics["main"]["pooled"]["mean_ccc"]
    assert {
        "ccc_valence",
        "rmse_arousal",
        "sagr_valence",
        "ridge_probe_mean_ccc",
        "smoothed_ridge_probe_mean_ccc",
        "change_ratio_valence",
        "change_ratio_arousal",
    } <= set(table.columns)
    assert table.loc[1, "within_clip_mean_ccc"] == metrics["other"]["within_clip"]["mean_ccc"]
    assert table.loc[1, "clip_level_mean_ccc"] == metrics["other"]["clip_level"]["mean_ccc"]
    assert table.loc[0, "smoothed_ridge_probe_within_clip_mean_ccc"] == pytest.approx(0.3)
    assert table.loc[0, "smoothed_ridge_probe_clip_level_mean_ccc"] == pytest.approx(0.05)


# cv.runs: [] is `run`; its folds scored for selection too
VARIANTS = {
    "split": {"folds": 3},
    "runs": {"nopre": {"pretrain": {"epochs": 0}}},
    "cv": {"select": True},
    "tune": {"folds": 2},
}


@pytest.mark.e2e
def test_cross_validation_and_comparison_of_runs(built, tmp_path):
    copy_built(built, tmp_path)  # the main job done: the folds and the variant run are what is new
    run_snakemake(tmp_path, "all", "cv", "compare", overrides=VARIANTS)
    summary = pd.read_csv(tmp_path / "results/cv/summary.csv")
    assert set(summary["run"]) == {"main"}
    assert {"mean", "std", "all_folds", "fold0", "fold1", "fold2"} <= set(summary.columns)
    # the folds: each labeled clip tested exactly once, no actor in two splits of a fold
    frames = pd.read_csv(tmp_path / "results/index/frames.csv", dtype={"clip_id": str})
    labeled = set(frames.loc[frames["labeled"], "clip_id"])
    tested = []
    for k in range(3):
        clips = read_clips(tmp_path / f"results/cv/folds/fold{k}.csv")
        tested += clips.loc[clips["split"] == "test", "clip_id"].tolist()
        splits_of_actor = clips[clips["split"] != "unlabeled"].groupby("actor")["split"].nunique()
        assert (splits_of_actor == 1).all()
    assert sorted(tested) == sorted(labeled)
    # the summary's fold values are those folds' metrics
    fold1 = json.loads((tmp_path / "results/cv/main/fold1/eval/metrics.json").read_text())
    row = summary[(summary["run"] == "main") & (summary["view"] == "pooled") & (summary["metric"] == "mean_ccc")]
    assert row["fold1"].iloc[0] == pytest.approx(fold1["pooled"]["mean_ccc"], abs=1e-4)
    # the criteria runs are chosen on: each fold's best validation score, and its selection score by CV over the
    # fold's training and validation clips (the run pretrains, so it pretrains in each of those folds)
    chosen = summary[summary["run"] == "main"].set_index("view")
    for k in range(3):
        history = json.loads((tmp_path / f"results/cv/main/fold{k}/finetune/history.json").read_text())
        assert chosen.loc["validation", f"fold{k}"] == pytest.approx(history["best"]["val_mean_ccc"], abs=1e-4)
        selected = json.loads((tmp_path / f"results/cv/main/fold{k}/select.json").read_text())
        assert len(selected["folds"]) == 2 and selected["pretrained"]
        assert chosen.loc["selection", f"fold{k}"] == pytest.approx(np.mean(selected["folds"]), abs=1e-4)
        assert -1 <= selected["mean_ccc"] <= 1
    assert np.isnan(chosen.loc["selection", "all_folds"])  # a criterion, not a pooled test score
    compared = pd.read_csv(tmp_path / "results/compare/runs.csv")
    assert compared["run"].tolist() == ["main", "nopre"]
    for png in ("cv/summary.png", "compare/runs.png"):
        assert (tmp_path / "results" / png).read_bytes()[:4] == b"\x89PNG"
    nopre = json.loads((tmp_path / "results/runs/nopre/pretrain/history.json").read_text())
    assert nopre == []  # the variant's own settings: no pretraining epochs

    # adding a run trains only that run (and remakes the tables that list it)
    more = {**VARIANTS, "runs": {**VARIANTS["runs"], "mse": {"finetune": {"loss": "mse"}}}}
    dry = run_snakemake(tmp_path, "-n", "cv", "compare", overrides=more)
    planned = dry.stdout.split("Job stats:")[1].split("Reasons:")[0]
    assert "results/runs/mse/finetune/best.pt" in dry.stdout and "results/runs/main/" not in dry.stdout.replace(
        "results/runs/main/eval/metrics.json", ""
    )
    assert "cv_summary" not in planned and "extract_features" not in planned

    # one report: the config, the metrics, the CV summary, the comparison and every plot
    report = tmp_path / "report.html"
    run_snakemake(tmp_path, "--report", str(report), "all", "cv", "compare", overrides=VARIANTS)
    html = report.read_text()
    for name in (
        "summary.csv",
        "runs.csv",
        "config.yaml",
        "metrics.json",
        "summary.png",
        "runs.png",
        "curves.png",
        "circumplex.png",
    ):
        assert name in html, name
