"""Actor-centred features (`head.centre: actor`): each clip's features minus its actor's mean feature, the same
in every job of an experiment, for the head and the baselines it is measured against."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import copy_built, run_snakemake

from clipva.checkpoints import load_head
from clipva.evaluation import baselines
from clipva.sequences import load_splits
from clipva.store import ClipFeatures, write_features

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


@pytest.mark.e2e
def test_a_centred_run_trains_evaluates_and_is_measured_on_the_same_centred_features(built, tmp_path):
    copy_built(built, tmp_path)
    runs = {"runs": {"centred": {"head": {"centre": "actor"}}}}
    run_snakemake(tmp_path, "compare", overrides=runs)
    head, _ = load_head(tmp_path / "results/runs/centred/finetune/best.pt")
    assert head.cfg.centre == "actor"
    store, clips = tmp_path / "results/features/features.h5", tmp_path / "results/index/clips.csv"
    data = load_splits(str(store), str(clips), ("train", "val", "test"), centre="actor")
    # the head whitens with the statistics of the centred training frames it was trained on
    mean = np.concatenate([c.features for c in data["train"]]).mean(0)
    assert torch.allclose(head.feature_mean, torch.from_numpy(mean), atol=1e-4)
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
