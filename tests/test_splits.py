import pandas as pd
import pytest

from clipva.errors import ConfigError
from clipva.splits import actor_folds, assign_splits, parse_id_ranges


def _clips(n=30, actors=6):
    return pd.DataFrame(
        {
            "clip_id": [f"{i:03d}" for i in range(1, n + 1)],
            "actor": [f"actor_{i % actors}" for i in range(n)],
            "n_frames": 10,
            "n_labeled": [10] * (n - 1) + [0],
        }
    )


CFG = {
    "seed": 0,
    "fractions": {"train": 0.6, "val": 0.2, "test": 0.2},
    "ids": {"train": "1-20", "val": "21-25", "test": "26-30"},
    "folds": 3,
    "fold": 0,
}


def test_parse_id_ranges():
    assert parse_id_ranges("1-3, 7,9-10") == {1, 2, 3, 7, 9, 10}
    with pytest.raises(ConfigError):
        parse_id_ranges("a-b")


@pytest.mark.parametrize("method", ["ids", "random", "actor_kfold"])
def test_every_clip_in_exactly_one_split_and_unlabeled_apart(method):
    out = assign_splits(_clips(), {**CFG, "method": method})
    assert out["clip_id"].is_unique
    assert out.loc[out["n_labeled"] == 0, "split"].eq("unlabeled").all()
    assert set(out["split"]) == {"train", "val", "test", "unlabeled"}


def test_ids_follow_the_ranges():
    out = assign_splits(_clips(), {**CFG, "method": "ids"})
    assert out.set_index("clip_id").loc["021", "split"] == "val"
    assert (out.loc[out["clip_id"].astype(int) <= 20, "split"] == "train").all()
    with pytest.raises(ConfigError, match="both train and val"):
        assign_splits(_clips(), {**CFG, "method": "ids", "ids": {"train": "1-21", "val": "21-25", "test": "26"}})


def test_random_is_seeded_and_by_clip():
    a = assign_splits(_clips(), {**CFG, "method": "random"})
    b = assign_splits(_clips(), {**CFG, "method": "random"})
    c = assign_splits(_clips(), {**CFG, "method": "random", "seed": 1})
    assert a["split"].tolist() == b["split"].tolist() != c["split"].tolist()


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_actor_kfold_has_no_actor_in_two_splits(fold):
    out = assign_splits(_clips(), {**CFG, "method": "actor_kfold", "fold": fold})
    labeled = out[out["split"] != "unlabeled"]
    assert (labeled.groupby("actor")["split"].nunique() == 1).all()


def test_actor_kfold_folds_partition_the_actors():
    tests = [
        set(assign_splits(_clips(), {**CFG, "method": "actor_kfold", "fold": f}).query("split == 'test'")["actor"])
        for f in range(3)
    ]
    assert set.union(*tests) == {f"actor_{i}" for i in range(6)}
    assert sum(len(t) for t in tests) == 6
    assert set(actor_folds(_clips(), 3, 0).values()) == {0, 1, 2}


def test_too_few_actors_is_a_config_error():
    with pytest.raises(ConfigError, match="need at least 5 actors"):
        assign_splits(_clips(actors=2), {**CFG, "method": "actor_kfold", "folds": 5})
