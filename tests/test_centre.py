"""Actor-centred features (`head.centre: actor`): each clip's features minus its actor's mean feature, the same
in every job of an experiment, for the head and the baselines it is measured against."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import copy_built, run_snakemake

from clipva import tune
from clipva.checkpoints import load_head
from clipva.errors import ConfigError
from clipva.evaluation import baselines
from clipva.feature_sources import backbone_of
from clipva.sequences import load_splits
from clipva.store import ClipFeatures, write_features
from clipva.training import validation_ccc

SPLITS = ("train", "val", "test", "unlabeled")


def _store(tmp_path, rng):
    """Two actors, each with clips in every split (one unlabeled), their features offset by the actor."""
    rows, offsets = [], {"a": rng.normal(3, 1, 6), "b": rng.normal(-3, 1, 6)}
    with h5py.File(tmp_path / "f.h5", "w") as f:
        for k, (actor, split) in enumerate((a, s) for a in offsets for s in SPLITS):
            n = 5 + 3 * k  # clips of different lengths: the mean is over frames
            labels = np.full(n, np.nan if split == "unlabeled" else 1.0, dtype=np.float32)
            x = (offsets[actor] + rng.normal(0, 1, (n, 6))).astype(np.float32)
            write_features(f, ClipFeatures(f"{k:03d}", x, np.arange(n), labels, labels), actor)
            rows.append({"clip_id": f"{k:03d}", "actor": actor, "split": split})
    pd.DataFrame(rows).to_csv(tmp_path / "clips.csv", index=False)
    return str(tmp_path / "f.h5"), str(tmp_path / "clips.csv"), pd.DataFrame(rows)


def test_each_clip_loses_its_actor_s_mean_over_every_frame_of_every_clip(tmp_path):
    store, csv, table = _store(tmp_path, np.random.default_rng(0))
    raw = load_splits(store, csv, SPLITS)
    frames = {
        a: np.concatenate([c.features for s in SPLITS for c in raw[s] if c.clip_id in ids])
        for a, ids in table.groupby("actor")["clip_id"].apply(set).items()
    }
    actor = dict(zip(table["clip_id"], table["actor"], strict=True))
    # whichever splits a job reads, a clip loses the same mean: that of all its actor's frames, unlabeled included
    for wanted in (("train",), ("test", "unlabeled"), SPLITS):
        centred = load_splits(store, csv, wanted, centre="actor")
        for s in wanted:
            for c, r in zip(centred[s], raw[s], strict=True):
                expected = r.features - frames[actor[c.clip_id]].mean(0)
                np.testing.assert_allclose(c.features, expected, atol=1e-5)
                np.testing.assert_array_equal(c.valence, r.valence)
    everything = load_splits(store, csv, SPLITS, centre="actor")
    for a in ("a", "b"):  # each actor's frames now average to zero
        mine = np.concatenate([c.features for s in SPLITS for c in everything[s] if actor[c.clip_id] == a])
        np.testing.assert_allclose(mine.mean(0), 0, atol=1e-5)
    with pytest.raises(ValueError, match="centre 'video' is not one of none, actor"):
        load_splits(store, csv, ("train",), centre="video")


def test_actors_of_a_single_clip_are_warned_of(tmp_path, caplog):
    store, csv, table = _store(tmp_path, np.random.default_rng(1))
    table.assign(actor=table["clip_id"]).to_csv(csv, index=False)  # every clip its own actor
    with caplog.at_level("WARNING"):
        load_splits(store, csv, ("train",), centre="actor")
    assert "8 of 8 actors have a single clip: their clips lose their own level" in caplog.text


def test_the_search_and_the_selection_score_read_the_run_s_centring(tmp_path, monkeypatch):
    asked = []

    def loading(features, clips, splits, centre="none"):
        asked.append(centre)
        raise RuntimeError("stop here")

    monkeypatch.setattr(tune, "load_splits", loading)
    settings = {"head": {"centre": "actor"}, "finetune": {}, "pretrain": {"epochs": 0}}
    for call in (
        lambda: tune.selection_files("f.h5", "clips.csv", "text.npz", settings, 2, str(tmp_path / "s.json")),
        lambda: tune.worker_files("f.h5", "clips.csv", {}, settings, str(tmp_path / "j.log"), 0, str(tmp_path / "w")),
    ):
        with pytest.raises(RuntimeError, match="stop here"):
            call()
    assert asked == ["actor", "actor"]


def test_a_lora_backbone_refuses_centred_features():
    with pytest.raises(ConfigError, match="head.centre: actor centres the cached frozen features"):
        backbone_of({"backbone": "lora"}, None, centre="actor")
    assert backbone_of({"backbone": "frozen"}, None, centre="actor") is None  # the store's features, centred


@pytest.mark.e2e
def test_a_centred_run_trains_evaluates_and_is_measured_on_the_same_centred_features(built, tmp_path):
    copy_built(built, tmp_path)
    runs = {"runs": {"centred": {"head": {"centre": "actor"}}}}
    run_snakemake(tmp_path, "compare", overrides=runs)
    head, _ = load_head(tmp_path / "results/runs/centred/finetune/best.pt")
    assert head.cfg.centre == "actor"
    store, clips = tmp_path / "results/features/features.h5", tmp_path / "results/index/clips.csv"
    data = load_splits(str(store), str(clips), ("train", "val", "test"), centre="actor")
    # the head whitens with the statistics of the centred training frames it was pretrained on, and fine-tuning
    # kept the epoch of the best validation score on the centred validation clips: the saved head scores it again
    mean = np.concatenate([c.features for c in data["train"]]).mean(0)
    assert torch.allclose(head.feature_mean, torch.from_numpy(mean), atol=1e-4)
    history = json.loads((tmp_path / "results/runs/centred/finetune/history.json").read_text())
    window = load_head(tmp_path / "results/runs/centred/finetune/best.pt")[1]["window"]
    again = validation_ccc(head, data["val"], window)["mean"]
    assert again == pytest.approx(history["best"]["val_mean_ccc"], abs=1e-5)
    raw = load_splits(str(store), str(clips), ("val",))["val"]
    assert validation_ccc(head, raw, window)["mean"] != pytest.approx(again, abs=1e-3)
    # its baselines are fitted on the same centred features, so they differ from the main run's
    ours = json.loads((tmp_path / "results/runs/centred/eval/metrics.json").read_text())["baselines"]
    main = json.loads((tmp_path / "results/runs/main/eval/metrics.json").read_text())["baselines"]
    expected = baselines(data["train"], data["val"], data["test"])
    for name in ("ridge_probe", "smoothed_ridge_probe"):
        assert ours[name]["test"]["mean_ccc"] == pytest.approx(expected[name]["test"]["mean_ccc"], abs=1e-6)
    assert ours["ridge_probe"]["test"]["mean_ccc"] != pytest.approx(main["ridge_probe"]["test"]["mean_ccc"])
    compared = pd.read_csv(tmp_path / "results/compare/runs.csv")
    assert compared["run"].tolist() == ["main", "centred"]
    # LoRA computes its features through its adapters: no mean to take off, refused before any job runs
    lora = {"runs": {"centred": {"head": {"centre": "actor"}, "training": {"backbone": "lora"}}}}
    proc = run_snakemake(tmp_path, "-n", "compare", overrides=lora, check=False)
    assert proc.returncode != 0
    assert "config runs.centred: head.centre: actor centres the cached frozen features" in proc.stdout + proc.stderr
