"""Train/val/test splits by clip, never by frame: no clip (and with actor_kfold and official no actor) is in
two splits.

Clips without any label go to the split ``unlabeled``: they are predicted for the submission only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clipva.errors import ConfigError

SPLITS = ("train", "val", "test")
UNLABELED = "unlabeled"


def parse_id_ranges(spec: str | int) -> set[int]:
    """'1-420' or '1-10,15,20-30' -> the set of clip numbers."""
    ids: set[int] = set()
    for part in str(spec).replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ConfigError(f"split.ids: {spec!r} is not a list of ranges like '1-420,430'") from None
        if b < a:
            raise ConfigError(f"split.ids: empty range {part!r}")
        ids.update(range(a, b + 1))
    return ids


def clip_table(frames: pd.DataFrame) -> pd.DataFrame:
    """One row per clip: clip_id, actor, n_frames, n_labeled (and subset, Aff-Wild2's official set, where the
    index gives it)."""
    extra = {"subset": ("subset", "first")} if "subset" in frames else {}
    return (
        frames.groupby("clip_id", sort=True)
        .agg(actor=("actor", "first"), n_frames=("frame", "size"), n_labeled=("labeled", "sum"), **extra)
        .reset_index()
        .astype({"n_labeled": int})
    )


def _by_ids(clips: pd.DataFrame, ranges: dict) -> pd.Series:
    split = pd.Series("unused", index=clips.index)
    named = clips.loc[~clips["clip_id"].astype(str).str.fullmatch(r"\d+"), "clip_id"]
    if len(named):
        raise ConfigError(f"split.method ids needs numbered clips; clip {named.iloc[0]!r} has a name")
    numbers = clips["clip_id"].astype(int)
    taken: dict[int, str] = {}
    for name in SPLITS:
        ids = parse_id_ranges(ranges.get(name, ""))
        for i in ids & taken.keys():
            raise ConfigError(f"split.ids: clip {i} is in both {taken[i]} and {name}")
        taken.update(dict.fromkeys(ids, name))
        split[numbers.isin(ids)] = name
    return split


def _by_random(clips: pd.DataFrame, fractions: dict, seed: int) -> pd.Series:
    order = np.random.default_rng(seed).permutation(len(clips))
    n = len(clips)
    n_train = round(fractions["train"] * n)
    n_val = round(fractions["val"] * n)
    names = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val), dtype=object)
    split = pd.Series("", index=clips.index, dtype=object)
    split.iloc[order] = names
    return split


def _by_official(clips: pd.DataFrame, val_fraction: float, seed: int) -> pd.Series:
    """Aff-Wild2's official sets: Validation_Set is the test split (its score is what ABAW papers report,
    so nothing may be chosen on it); a seeded `val_fraction` of Train_Set's actors (a video, both people of
    a left/right pair) validates, the rest trains."""
    if "subset" not in clips:
        raise ConfigError("split.method official: the index has no official sets (it needs dataset.format affwild2)")
    split = pd.Series("unused", index=clips.index, dtype=object)
    split[clips["subset"] == "Validation_Set"] = "test"
    train = clips["subset"] == "Train_Set"
    actors = sorted(clips.loc[train, "actor"].unique())
    n_val = min(max(1, round(val_fraction * len(actors))), len(actors) - 1)
    held = set(np.random.default_rng(seed).permutation(actors)[:n_val]) if n_val > 0 else set()
    split[train] = np.where(clips.loc[train, "actor"].isin(held), "val", "train")
    return split


def actor_folds(clips: pd.DataFrame, folds: int, seed: int) -> dict[str, int]:
    """Assign each actor to one of `folds` folds, balancing the frames per fold (greedy, seeded order)."""
    frames_per_actor = clips.groupby("actor")["n_labeled"].sum()
    actors = list(frames_per_actor.index)
    if len(actors) < folds:
        raise ConfigError(f"split.folds: {folds} folds need at least {folds} actors, the data set has {len(actors)}")
    rng = np.random.default_rng(seed)
    order = sorted(rng.permutation(actors), key=lambda a: -frames_per_actor[a])
    load = np.zeros(folds)
    fold_of = {}
    for actor in order:
        k = int(load.argmin())
        fold_of[actor] = k
        load[k] += frames_per_actor[actor]
    return fold_of


def _by_actor_kfold(clips: pd.DataFrame, folds: int, fold: int, seed: int) -> pd.Series:
    if folds < 3:
        raise ConfigError("split.folds: actor_kfold needs at least 3 folds (one test, one val, the rest train)")
    if not 0 <= fold < folds:
        raise ConfigError(f"split.fold: {fold} is not in 0..{folds - 1}")
    fold_of = clips["actor"].map(actor_folds(clips, folds, seed))
    split = pd.Series("train", index=clips.index, dtype=object)
    split[fold_of == fold] = "test"
    split[fold_of == (fold + 1) % folds] = "val"
    return split


def assign_splits(clips: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Add the ``split`` column to a clip table according to the ``split`` config section."""
    clips = clips.copy()
    labeled = clips["n_labeled"] > 0
    method = cfg["method"]
    part = clips[labeled]
    if method == "ids":
        split = _by_ids(part, cfg["ids"])
    elif method == "random":
        split = _by_random(part, cfg["fractions"], cfg["seed"])
    elif method == "actor_kfold":
        split = _by_actor_kfold(part, cfg["folds"], cfg["fold"], cfg["seed"])
    elif method == "official":
        split = _by_official(part, cfg.get("official_val", 0.15), cfg["seed"])
    else:
        raise ConfigError(f"split.method: {method!r} is not one of ids, random, actor_kfold, official")
    clips["split"] = UNLABELED
    clips.loc[labeled, "split"] = split
    for name in SPLITS:
        if not (clips["split"] == name).any():
            raise ConfigError(f"split: the {name} split is empty with method {method!r} on {int(labeled.sum())} clips")
    return clips


def read_clips(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"clip_id": str, "actor": str, "split": str}, keep_default_na=False)
