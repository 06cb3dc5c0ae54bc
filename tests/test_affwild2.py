"""Aff-Wild2 as ABAW distributes it (dataset.format affwild2): the reader, the official split, the challenge's
files, and the whole workflow on the generated demo in that layout (issue #20)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import audmetric
import numpy as np
import pandas as pd
import pytest
from conftest import run_snakemake
from hypothesis import given
from hypothesis import strategies as st

from clipva.abaw import fill_video
from clipva.affwild2 import (
    ANNOTATIONS,
    CROPS,
    actor_of,
    index_affwild2,
    read_labels,
    read_test_list,
)
from clipva.affwild2_demo import make_affwild2_demo
from clipva.errors import BadInputError, ClipvaError, ConfigError
from clipva.settings import check_config
from clipva.splits import actor_folds, assign_splits, clip_table

TRAIN = ANNOTATIONS / "Train_Set"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("affwild2") / "aff"
    summary = make_affwild2_demo(root, n_videos=10, n_pairs=2, min_frames=10, max_frames=14, seed=2)
    return root, summary


def _copy(demo, tmp_path) -> Path:
    import shutil

    root = tmp_path / "aff"
    shutil.copytree(demo[0], root)
    return root


def test_index_maps_line_k_to_crop_k_and_lists_every_quirk(demo):
    root, summary = demo
    frames, videos, problems = index_affwild2(root, "error", summary["test_list"])
    generated = summary["videos"]
    assert set(videos["video"]) == set(generated)  # not the video of another track
    assert "other-track-1" not in set(frames["clip_id"])
    for name, info in generated.items():
        row = videos.set_index("video").loc[name]
        assert row["n_frames"] == info["n_frames"] and row["subset"] == info["set"]
        mine = frames[frames["clip_id"] == name]
        # every frame with a crop, none of those without
        assert sorted(mine["frame"]) == [k for k in range(1, info["n_frames"] + 1) if k not in info["no_face"]]
        assert all(Path(p).name == f"{k:05d}.jpg" for p, k in zip(mine["path"], mine["frame"], strict=True))
        if info["set"] == "Test_Set":
            assert not mine["labeled"].any() and row["frames_from"] == "test list"
            continue
        labels, _ = read_labels(root / ANNOTATIONS / info["set"] / f"{name}.txt")
        for k, valence, arousal, labeled in mine[["frame", "valence", "arousal", "labeled"]].itertuples(index=False):
            assert labeled == (k not in info["unannotated"])
            if labeled:  # the pipeline's -10..10 scale, line k of the file
                assert (valence, arousal) == pytest.approx(tuple(10 * labels[k - 1]))
    pairs = [n for n in generated if n.endswith(("_left", "_right"))]
    assert len(pairs) == 4 and frames.groupby("clip_id")["actor"].first()[pairs].nunique() == 2
    notes = [str(p) for p in problems]
    assert not any(p.fatal for p in problems)
    faceless = [n for n, info in generated.items() if len(info["no_face"]) == info["n_frames"]]
    assert {generated[n]["set"] for n in faceless} == {"Validation_Set", "Test_Set"}
    for name in faceless:  # kept in the video table: its challenge file is written from the set's mean
        assert videos.set_index("video").loc[name, "n_crops"] == 0
        assert any(name in n and "no face crop folder" in n and "mean prediction" in n for n in notes), name
    for name, info in generated.items():
        if info["no_face"] and info["set"] != "Test_Set" and name not in faceless:
            assert any(name in n and "have no face crop" in n for n in notes), name
        if info["unannotated"]:
            assert any(name in n and "marked -5" in n for n in notes), name
    assert any("outside the VA track" in n and "other-track-1" in n for n in notes)


def test_pairs_share_an_actor_and_other_names_do_not():
    assert actor_of("10-60-1280x720_right") == actor_of("10-60-1280x720_left") == "10-60-1280x720"
    assert actor_of("video59_right") == "video59" and actor_of("video10_1") == "video10_1"
    assert actor_of("left_video") == "left_video"


def _annotation(root: Path, name: str, text: str) -> Path:
    path = root / TRAIN / f"{name}.txt"
    path.write_text(text)
    return path


def test_malformed_annotation_lines_stop_the_run_or_are_reported(demo, tmp_path):
    root = _copy(demo, tmp_path)
    name = next(n for n, v in demo[1]["videos"].items() if v["set"] == "Train_Set" and not v["no_face"])
    n = demo[1]["videos"][name]["n_frames"]
    lines = ["valence,arousal", "0.1,0.2", "oops,0.2", "1.5,0.0", "-5,0.3", *["0.0,0.0"] * (n - 4)]
    path = _annotation(root, name, "\n".join(lines) + "\n")
    with pytest.raises(BadInputError, match=rf"{path}.*line 3 is not two numbers"):
        index_affwild2(root, "error")
    frames, _, problems = index_affwild2(root, "skip")
    bad = {p.frame: p.message for p in problems if p.fatal}
    assert set(bad) == {"00002", "00003", "00004"}
    assert "outside -1..1" in bad["00003"] and "one column only" in bad["00004"]
    mine = frames[frames["clip_id"] == name].set_index("frame")
    assert mine.loc[1, "labeled"] and not mine.loc[[2, 3, 4], "labeled"].any()  # labels left out, frames kept


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the first line must be the header"),
        (b"arousal,valence\n0.1,0.2\n", "the first line must be the header"),
        (b"valence,arousal\n\xff\xfe0.1,0.2\n", "not UTF-8"),
    ],
)
def test_unreadable_annotation_file_is_named(demo, tmp_path, content, message):
    root = _copy(demo, tmp_path)
    name = next(n for n, v in demo[1]["videos"].items() if v["set"] == "Train_Set")
    path = root / TRAIN / f"{name}.txt"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=f"{path}.*{message}"):
        index_affwild2(root, "error")
    _, videos, problems = index_affwild2(root, "skip")
    assert name not in set(videos["video"]) and any(p.path == str(path) and p.fatal for p in problems)


def test_paths_from_the_data_never_leave_the_root(demo, tmp_path):
    root = _copy(demo, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "00001.jpg").write_bytes((root / CROPS / "other-track-1" / "00001.jpg").read_bytes())
    video = next(n for n, v in demo[1]["videos"].items() if v["set"] == "Train_Set")
    crop = root / CROPS / video / "00002.jpg"
    crop.unlink()
    crop.symlink_to(outside / "00001.jpg")  # one crop links out
    linked = next(n for n, v in demo[1]["videos"].items() if v["set"] == "Validation_Set")
    folder = root / CROPS / linked
    os.rename(folder, outside / linked)
    folder.symlink_to(outside / linked, target_is_directory=True)  # a whole video's folder links out
    frames, _, problems = index_affwild2(root, "skip")
    assert str(crop) not in set(frames["path"]) and linked not in set(frames["clip_id"])
    assert not any(str(outside) in p for p in frames["path"])
    escaped = [p for p in problems if "links out of the data root" in p.message]
    assert {p.path for p in escaped} == {str(crop), str(folder)}
    with pytest.raises(BadInputError, match="links out of the data root"):
        index_affwild2(root, "error")
    test_list = tmp_path / "test.txt"
    test_list.write_text("../../etc\n")
    with pytest.raises(BadInputError, match=r"test.txt: line 1: '../../etc' is not a video name"):
        index_affwild2(root, "skip", test_list)


def test_test_list_as_names_or_as_the_sample_file(demo, tmp_path):
    root, summary = demo
    test = {n: v["n_frames"] for n, v in summary["videos"].items() if v["set"] == "Test_Set"}
    assert read_test_list(summary["test_list"]) == test  # the sample file gives every frame count
    faceless = next(n for n in test if len(summary["videos"][n]["no_face"]) == test[n])
    with_faces = [n for n in test if n != faceless]
    names = tmp_path / "names.txt"
    names.write_text("# the test videos\n" + "\n".join(with_faces) + "\n\n")
    assert read_test_list(names) == dict.fromkeys(with_faces)
    frames, videos, problems = index_affwild2(root, "error", names)
    rows = videos[videos["subset"] == "Test_Set"].set_index("video")
    assert sorted(rows.index) == sorted(with_faces) and (rows["frames_from"] == "last face crop").all()
    assert all(any(n in p.path and "gives no frame count" in p.message for p in problems) for n in with_faces)
    for text, message in [
        ("image_location,valence,arousal\na/00002.jpg,,\n", "does not follow frame 0 of a"),
        ("image_location,valence,arousal\na/00001.jpg,,\nb/00001.jpg,,\na/00002.jpg,,\n", "not in one block"),
        ("a\na\n", "listed twice"),
        ("# nothing\n", "names no video"),
    ]:
        names.write_text(text)
        with pytest.raises(BadInputError, match=f"{names}.*{message}"):
            read_test_list(names)
    with pytest.raises(ConfigError, match="split.test_list: .*missing.txt does not exist"):
        read_test_list(tmp_path / "missing.txt")
    # a test video without a face crop: its file needs the frame count, which only the sample file gives
    names.write_text("\n".join(test) + "\n")
    with pytest.raises(BadInputError, match=f"{faceless}: no face crop folder, and the test list gives no frame count"):
        index_affwild2(root, "error", names)
    _, videos, problems = index_affwild2(root, "skip", names)
    assert faceless not in set(videos["video"]) and any(p.fatal and faceless in p.path for p in problems)
    train = next(n for n, v in summary["videos"].items() if v["set"] == "Train_Set")
    names.write_text(f"{train}\n")
    with pytest.raises(BadInputError, match=f"test video {train} has annotations in Train_Set"):
        index_affwild2(root, "error", names)


def test_official_split_scores_validation_set_and_chooses_nothing_on_it(demo):
    root, summary = demo
    frames, _, _ = index_affwild2(root, "error", summary["test_list"])
    clips = assign_splits(clip_table(frames), {"method": "official", "official_val": 0.3, "seed": 0})
    by_subset = clips.groupby("subset")["split"].agg(set).to_dict()
    assert by_subset == {"Train_Set": {"train", "val"}, "Validation_Set": {"test"}, "Test_Set": {"unlabeled"}}
    assert (clips.groupby("actor")["split"].nunique() == 1).all()  # a left/right pair is never split
    folds = actor_folds(clips[clips["n_labeled"] > 0], 3, 0)  # cross-validation by video: pairs together
    assert set(folds) == set(clips.loc[clips["n_labeled"] > 0, "actor"])


def test_split_and_format_settings_that_cannot_go_together():
    base = {"dataset": {"format": "afew"}, "split": {"method": "official"}}
    with pytest.raises(ConfigError, match="needs dataset.format: affwild2"):
        check_config(base)
    with pytest.raises(ConfigError, match="split.test_list"):
        check_config({"dataset": {"format": "afew"}, "split": {"method": "random", "test_list": "t.txt"}})
    with pytest.raises(ConfigError, match="numbered clips"):
        check_config({"dataset": {"format": "affwild2"}, "split": {"method": "ids"}})
    check_config({"dataset": {"format": "affwild2"}, "split": {"method": "official", "test_list": "t.txt"}})


def test_frames_without_a_face_are_interpolated_in_time():
    values = np.array([[0.0, 1.0], [0.6, -1.0], [0.2, 0.2]])
    full, filled = fill_video(np.array([2, 5, 6]), values, 8)
    assert full[:, 0] == pytest.approx([0.0, 0.0, 0.2, 0.4, 0.6, 0.2, 0.2, 0.2])
    assert full[:, 1] == pytest.approx([1.0, 1.0, 1 / 3, -1 / 3, -1.0, 0.2, 0.2, 0.2])
    assert filled.tolist() == [True, False, True, True, False, False, True, True]


numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**30), 10**30) | st.sampled_from([-5, 1, -1])
label_lines = st.one_of(
    st.tuples(numbers, numbers).map(lambda t: f"{t[0]},{t[1]}"),
    st.sampled_from(["-5,-5", "-5,0.2", "0.1,0.2,0.3", "0.1", "", " 0.5 , -0.5 ", "1e400,0", "0x1p-2,0"]),
    st.text(max_size=20),  # any Unicode, commas and line breaks included
)
headers = st.sampled_from(["valence,arousal", "Valence, Arousal", "\ufeffvalence,arousal", "arousal,valence", ""])
encodings = st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1"])


@st.composite
def annotation_files(draw) -> bytes:
    text = "\n".join([draw(headers), *draw(st.lists(label_lines, max_size=12))])
    data = text.encode(draw(encodings), errors="replace")
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # truncated anywhere, inside a character too
    return draw(st.just(data) | st.binary(max_size=200))


@given(annotation_files())
def test_fuzzed_annotation_file_reads_or_names_the_file(content):
    import tempfile

    from hypothesis import event

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v.txt"
        path.write_bytes(content)
        try:
            labels, problems = read_labels(path)
        except ClipvaError as err:
            assert str(path) in str(err)
            event("refused, naming the file")
            return
        ok = ~np.isnan(labels[:, 0])
        assert (
            np.all(np.abs(labels[ok]) <= 1)
            and np.isnan(labels[~ok]).all()
            and np.isnan(labels[:, 1]).sum() == (~ok).sum()
        )
        assert all(p.path == str(path) and p.frame is not None for p in problems)
        event("read, some labels kept" if ok.any() else "read, no label kept")
        assert len(labels) == len(content.decode("utf-8").removeprefix("\ufeff").splitlines()) - 1


video_names = st.sampled_from(["1-30-1280x720", "video10_1_left", "../etc", "/abs", "a b", "é", ""]) | st.text(
    max_size=12
)
test_rows = st.one_of(
    st.tuples(video_names, st.integers(0, 4)).map(lambda t: f"{t[0]}/{t[1]:05d}.jpg,,"),
    video_names,
    st.text(max_size=20),
)


good_names = st.lists(st.sampled_from(["1-30-1280x720", "video10_1_left", "video10_1_right", "8-30"]), unique=True)


@st.composite
def some_test_lists(draw) -> str:
    """Mostly broken files, or valid ones in either form (which a stray row may still break)."""
    if draw(st.booleans()):
        return draw(st.sampled_from(["image_location,valence,arousal\n", ""])) + "\n".join(draw(st.lists(test_rows)))
    names = draw(good_names)
    if draw(st.booleans()):
        text = "".join(f"{n}  # a comment\n" for n in names)
    else:
        text = "image_location,valence,arousal\n" + "".join(
            f"{n}/{k:05d}.jpg,,\n" for n in names for k in range(1, draw(st.integers(1, 3)) + 1)
        )
    return text + "\n".join(draw(st.lists(test_rows, max_size=1)))


@given(some_test_lists(), encodings)
def test_fuzzed_test_list_reads_or_names_the_file(text, encoding):
    import re
    import tempfile

    from hypothesis import event

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "test.txt"
        path.write_bytes(text.encode(encoding, errors="replace"))
        try:
            videos = read_test_list(path)
        except ClipvaError as err:
            assert str(path) in str(err)
            event("refused, naming the file")
            return
        event("read")
        assert videos and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", n) for n in videos)
        assert all(c is None or c >= 1 for c in videos.values())


# --- end to end ----------------------------------------------------------------------------------------------


AFFWILD2 = {
    "dataset": {"root": "demo", "format": "affwild2"},
    "split": {"method": "official"},
    "face_crop": {"method": "none"},
}


@pytest.mark.e2e
def test_demo_in_aff_wild2_layout_end_to_end_to_the_challenge_files(tmp_path):
    run_snakemake(tmp_path, overrides=AFFWILD2)
    demo = tmp_path / "results/demo/affwild2"
    videos = pd.read_csv(tmp_path / "results/index/videos.csv", dtype={"video": str}).set_index("video")
    test = read_test_list(demo / "test_set.txt")
    sub = tmp_path / "results/abaw/submission"
    files = sorted(p for p in sub.iterdir() if p.name != ".snakemake_timestamp")  # Snakemake's, in directories
    assert [p.name for p in files] == sorted(f"{n}.txt" for n in test)
    for name, n_frames in test.items():  # every frame of every test video, with or without a face
        lines = (sub / f"{name}.txt").read_text().splitlines()
        assert lines[0] == "valence,arousal" and len(lines) == n_frames + 1
        values = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
        assert np.isfinite(values).all() and np.abs(values).max() <= 1
    # the test video where no face was found: every frame at the mean of the test videos' predictions
    faceless = videos.index[(videos["subset"] == "Test_Set") & (videos["n_crops"] == 0)]
    assert len(faceless) == 1
    predictions = pd.read_csv(tmp_path / "results/runs/main/eval/predictions.csv", dtype={"clip_id": str})
    seen = predictions[predictions["clip_id"].isin(test)][["valence_pred", "arousal_pred"]].to_numpy() / 10
    lines = (sub / f"{faceless[0]}.txt").read_text().splitlines()[1:]
    assert np.array([[float(x) for x in line.split(",")] for line in lines]) == pytest.approx(
        np.tile(seen.mean(0), (test[faceless[0]], 1)), abs=1e-6
    )
    with zipfile.ZipFile(tmp_path / "results/abaw/submission.zip") as zf:
        assert sorted(zf.namelist()) == [p.name for p in files]
        assert all(zf.read(p.name) == p.read_bytes() for p in files)
    single = (tmp_path / "results/abaw/predictions.txt").read_text().splitlines()
    assert single[0] == "image_location,valence,arousal" and len(single) == 1 + sum(test.values())

    # the official Validation_Set is the test split: its files score as the evaluate job does (audmetric)
    metrics = json.loads((tmp_path / "results/runs/main/eval/metrics.json").read_text())
    frames = pd.read_csv(tmp_path / "results/index/frames.csv", dtype={"clip_id": str})
    crops = frames.groupby("clip_id")["frame"].apply(set)
    truth, pred, face = [], [], []
    validation = videos[videos["subset"] == "Validation_Set"]
    assert len(validation) >= 2
    for name in validation.index:
        labels, _ = read_labels(demo / ANNOTATIONS / "Validation_Set" / f"{name}.txt")
        lines = (tmp_path / f"results/abaw/validation/{name}.txt").read_text().splitlines()[1:]
        assert len(lines) == len(labels) == validation.loc[name, "n_frames"]
        values = np.array([[float(x) for x in line.split(",")] for line in lines])
        keep = ~np.isnan(labels[:, 0])  # -5 rows are not scored
        truth.append(labels[keep])
        pred.append(values[keep])
        face.append(np.array([k + 1 in crops.get(name, ()) for k in np.flatnonzero(keep)], dtype=bool))
    truth, pred, face = np.concatenate(truth), np.concatenate(pred), np.concatenate(face)
    assert 0 < face.sum() < len(face)  # some annotated frames have no face: filled, and scored by ABAW

    def mean_ccc(keep):
        return np.mean([audmetric.concordance_cc(truth[keep, d], pred[keep, d]) for d in range(2)])

    # predictions.csv keeps 4 decimals on -10..10 (5 on the files' -1..1): the scores agree to that
    assert mean_ccc(face) == pytest.approx(metrics["pooled"]["mean_ccc"], abs=1e-5)
    score = json.loads((tmp_path / "results/abaw/validation_score.json").read_text())["Validation_Set"]
    assert score["all_annotated_frames"]["mean_ccc"] == pytest.approx(mean_ccc(np.ones(len(face), bool)), abs=1e-9)
    assert score["all_annotated_frames"]["frames"] == len(face)
    listed = json.loads((tmp_path / "results/abaw/validation_score.json").read_text())["videos_without_a_face"]
    assert listed == {s: sorted(videos.index[(videos["subset"] == s) & (videos["n_crops"] == 0)]) for s in listed}
    assert len(listed["Validation_Set"]) == 1 and list(listed["Test_Set"]) == list(faceless)
    filled = pd.read_csv(tmp_path / "results/abaw/no_face_frames.csv", dtype={"video": str})
    expected = sum(
        n - len(crops.get(v, ())) for v, n in videos["n_frames"].items() if v in test or v in validation.index
    )
    assert len(filled) == expected
    clips = pd.read_csv(tmp_path / "results/index/clips.csv", dtype={"clip_id": str})
    assert set(clips.loc[clips["subset"] == "Validation_Set", "split"]) == {"test"}
    # cross-validation by video: both people of a left/right pair in the same fold
    run_snakemake(
        tmp_path, "results/cv/folds/fold0.csv", overrides={**AFFWILD2, "split": {"method": "official", "folds": 3}}
    )
    fold = pd.read_csv(tmp_path / "results/cv/folds/fold0.csv", dtype={"clip_id": str})
    assert (fold.groupby("actor")["split"].nunique() == 1).all() and set(fold["split"]) >= {"train", "val", "test"}


def test_the_readme_s_aff_wild2_config_is_valid_once_its_paths_are_set():
    import copy

    import yaml
    from conftest import REPO
    from snakemake.utils import validate

    text = (REPO / "configs/affwild2.yaml").read_text().replace("/path/to/Aff-Wild2", "/data/Aff-Wild2")
    assert "/path/to" not in text and "sed 's#/path/to/Aff-Wild2#" in (REPO / "README.md").read_text()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for key, value in yaml.safe_load(text).items():
        config[key] = {**config.get(key, {}), **value}
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    check_config(config)
    assert config["dataset"] == {**config["dataset"], "root": "/data/Aff-Wild2", "format": "affwild2"}
    assert config["split"]["test_list"].startswith("/data/Aff-Wild2/") and config["split"]["method"] == "official"
    for demo in ("affwild2-demo.yaml",):
        merged = copy.deepcopy(yaml.safe_load((REPO / "config.yaml").read_text()))
        for key, value in yaml.safe_load((REPO / "configs" / demo).read_text()).items():
            merged[key] = {**merged.get(key, {}), **value}
        validate(merged, str(REPO / "workflow/schemas/config.schema.yaml"))
        check_config(merged)
