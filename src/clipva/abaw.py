"""The ABAW valence-arousal challenge's files, from a run's predictions on Aff-Wild2.

One file per video, in the annotations' layout: the header ``valence,arousal``, then one line per frame of
the video, every frame, also those without a face crop. Those frames get no prediction of their own (there
is nothing to encode); they are filled by linear interpolation in time between the model's predictions of
the nearest frames with a face (the first and last prediction carry to the ends) and listed in a side table.
A video with no face crop at all gets the mean prediction of its set on every frame, also listed.

The challenge scores the CCC of valence and of arousal over all annotated frames of the set pooled, and
their mean. `score_files` computes that from the written files, and the same restricted to the frames with
a face crop: that one is what the evaluate job's pooled test metrics measure on the official Validation_Set.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from clipva.affwild2 import ANNOTATIONS, HEADER, SAMPLE_HEADER, VA_SCALE, read_labels
from clipva.atomic import atomic_path, write_csv, write_text
from clipva.errors import BadInputError
from clipva.metrics import ccc

PRED = ["valence_pred", "arousal_pred"]
SUBSETS = ("Validation_Set", "Test_Set")


def fill_video(frames: np.ndarray, values: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (-1..1) of the frames numbered `frames` (from 1) -> (every frame 1..n_frames, filled mask).

    Frames without a prediction are interpolated linearly in time; before the first and after the last
    predicted frame the nearest prediction is kept."""
    order = np.argsort(frames)
    frames, values = np.asarray(frames)[order], np.asarray(values, dtype=float)[order]
    every = np.arange(1, n_frames + 1)
    full = np.stack([np.interp(every, frames, values[:, d]) for d in range(values.shape[1])], axis=1)
    filled = ~np.isin(every, frames)
    return np.clip(full, -1.0, 1.0), filled


def video_file_text(values: np.ndarray) -> str:
    return HEADER + "\n" + "".join(f"{v:.6f},{a:.6f}\n" for v, a in values)


def _write_folder(folder: Path, files: dict[str, str]) -> None:
    """Write {name: text} as the folder's only files, replacing it whole (never a half-written folder)."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, text in files.items():
        (tmp / name).write_text(text)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def abaw_files(predictions: pd.DataFrame, videos: pd.DataFrame, subset: str) -> tuple[dict, pd.DataFrame]:
    """{<video>.txt: text} for every video of `subset`, and the side table of the frames filled in."""
    by_video = {v: t for v, t in predictions.groupby("clip_id")}
    rows = videos[videos["subset"] == subset]
    # A video in which no face was found has nothing to predict from: the mean prediction over the set's
    # frames with a face, which leaves the set's pooled mean (and so CCC's bias term) as the model has it.
    seen = predictions[predictions["clip_id"].isin(rows["video"])]
    fallback = seen[PRED].to_numpy().mean(0) / VA_SCALE if len(seen) else np.zeros(2)
    files, filled_rows = {}, []
    for row in rows.itertuples():
        table = by_video.get(row.video)
        if row.n_crops == 0:
            values, filled = np.tile(fallback, (int(row.n_frames), 1)), np.ones(int(row.n_frames), bool)
        elif table is None or not len(table):
            raise BadInputError(f"the run's predictions have no frame of {subset} video {row.video}")
        else:
            frames, known = table["frame"].to_numpy(), table[PRED].to_numpy() / VA_SCALE
            values, filled = fill_video(frames, known, int(row.n_frames))
        files[f"{row.video}.txt"] = video_file_text(values)
        filled_rows += [(row.video, subset, int(k)) for k in np.flatnonzero(filled) + 1]
    return files, pd.DataFrame(filled_rows, columns=["video", "set", "frame"])


def sample_file_text(files: dict[str, str]) -> str:
    """The test set release's single-file format: image_location,valence,arousal, one row per frame."""
    rows = [SAMPLE_HEADER]
    for name, text in sorted(files.items()):
        video = name.removesuffix(".txt")
        for k, line in enumerate(text.splitlines()[1:], 1):
            rows.append(f"{video}/{k:05d}.jpg,{line}")
    return "\n".join(rows) + "\n"


def read_video_file(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    if not lines or lines[0] != HEADER:
        raise BadInputError(f"{path}: the first line must be {HEADER!r}")
    return np.array([[float(x) for x in line.split(",")] for line in lines[1:]]).reshape(-1, 2)


def score_files(folder: Path, root: Path, videos: pd.DataFrame, subset: str = "Validation_Set") -> dict:
    """Pooled CCC of the files in `folder` against the annotations of `subset`: over every annotated frame
    (the challenge's score) and over the annotated frames with a face crop (the evaluate job's)."""
    crops = videos.set_index("video")
    pred_all, true_all, face = [], [], []
    for row in videos[videos["subset"] == subset].itertuples():
        labels, _ = read_labels(Path(root) / ANNOTATIONS / subset / f"{row.video}.txt")
        pred = read_video_file(folder / f"{row.video}.txt")
        if len(pred) != len(labels):
            raise BadInputError(f"{folder / row.video}.txt: {len(pred)} frames, the annotation has {len(labels)}")
        annotated = ~np.isnan(labels[:, 0])
        has_crop = np.zeros(len(labels), bool)
        numbers = crops.loc[row.video, "crops"]
        has_crop[np.asarray(numbers if isinstance(numbers, list) else [], dtype=int) - 1] = True
        pred_all.append(pred[annotated])
        true_all.append(labels[annotated])
        face.append(has_crop[annotated])
    pred, true, face = np.concatenate(pred_all), np.concatenate(true_all), np.concatenate(face)
    out = {}
    for name, keep in (("all_annotated_frames", np.ones(len(true), bool)), ("frames_with_a_face", face)):
        v, a = ccc(pred[keep, 0], true[keep, 0]), ccc(pred[keep, 1], true[keep, 1])
        out[name] = {"frames": int(keep.sum()), "valence_ccc": v, "arousal_ccc": a, "mean_ccc": (v + a) / 2}
    return out


def write_abaw(predictions_csv, videos_csv, frames_csv, root, out: dict) -> dict:
    """All ABAW outputs of a run: out["submission"] (folder of the test list's files), out["zip"], out["sample"]
    (the single-file format), out["validation"] (folder: Validation_Set's files), out["filled"] (frames
    without a face, filled in), out["score"] (the validation score from the files, JSON). Returns the score."""
    predictions = pd.read_csv(predictions_csv, dtype={"clip_id": str})
    videos = pd.read_csv(videos_csv, dtype={"video": str})
    frames = pd.read_csv(frames_csv, dtype={"clip_id": str}, usecols=["clip_id", "frame"])
    crops = frames.groupby("clip_id")["frame"].apply(list)
    videos["crops"] = videos["video"].map(crops)

    test_files, test_filled = abaw_files(predictions, videos, "Test_Set")
    val_files, val_filled = abaw_files(predictions, videos, "Validation_Set")
    _write_folder(Path(out["validation"]), val_files)
    score = score_files(Path(out["validation"]), Path(root), videos)
    _write_folder(Path(out["submission"]), test_files)
    with atomic_path(out["zip"]) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in sorted(test_files.items()):
            zf.writestr(name, text)
    write_text(out["sample"], sample_file_text(test_files))
    write_csv(out["filled"], pd.concat([test_filled, val_filled], ignore_index=True))
    faceless = {s: sorted(videos.loc[(videos["subset"] == s) & (videos["n_crops"] == 0), "video"]) for s in SUBSETS}
    summary = {"Validation_Set": score, "test_videos": len(test_files), "videos_without_a_face": faceless}
    write_text(out["score"], json.dumps(summary, indent=1) + "\n")
    return score
