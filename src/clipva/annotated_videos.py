"""A folder of annotated videos -> a data set in the AFEW-VA layout, for training on your own recordings.

Input: each video ``NAME.mp4`` (any of `clipva.video.VIDEO_SUFFIXES`) has a label file beside it, either
``NAME.csv`` or ``NAME.json`` (not both):

- CSV: a header with ``valence,arousal`` and either ``frame`` (0-based index of the video's own frames) or
  ``time`` (seconds from the first frame); an optional ``actor`` column, one value per file.
- JSON: a list of objects with the same keys, or ``{"actor": ..., "labels": [...]}``.

Labels are in -`scale`..`scale` (10: AFEW-VA's -10..10; 1 for -1..1) and are written as -10..10.

Output, under `dst`: one clip folder per video, numbered 001, 002, ... in sorted file-name order, holding the
frames decoded at `fps` (None: every frame of the video) as ``00000.png ...`` and the labels as ``001.json``;
``videos.csv`` maps clip_id to its video and label file and counts frames, labels and faces; ``faces.csv``
lists, per frame, its time, the face box and whether the face was found (face_found, box_source).

Matching labels to decoded frames: ``time`` labels go to the decoded frame nearest in time, if within
`tolerance` seconds (default: half the interval between decoded frames); ``frame`` labels go to the frame
on screen at the decoded frame's time (exact when fps is None; with an fps, frame = floor(time * video fps),
which assumes a constant frame rate: give times for a variable-rate video). Decoded frames without a label
are written without a label entry (like AFEW-VA's unlabeled frames).

AFEW-VA keeps 68 landmarks per labeled frame and `clipva.afew` crops with their min/max box. The videos have
no landmarks, so each labeled frame gets 68 points spaced along the border of the tracked face box (clipped
to the frame): their min/max is that box, which is all that reading and cropping use. They are not facial
landmarks. A labeled frame without a box (no face in the whole video, or ``fill='empty'`` and no face in
that frame) keeps its PNG but loses its label, so that no whole-frame crop is trained on.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from clipva.afew import (
    BOX_COLUMNS,
    MAX_LABEL_FILE_BYTES,
    N_LANDMARKS,
    inside,
    load_json,
    short_repr,
    write_afew_clip,
    write_frame,
)
from clipva.atomic import write_csv
from clipva.errors import BadInputError
from clipva.faces import FaceDetector, track_main_face
from clipva.video import decode, list_videos, probe

log = logging.getLogger(__name__)
LABEL_SUFFIXES = (".csv", ".json")
_EPS = 1e-6
MAX_FRAME = 2**31 - 1  # frame numbers beyond this are in no video


def _as_float(value: object) -> float:
    """A label file's cell as a float: NaN for what is not a number (text, lists, booleans), inf for an
    integer beyond float range."""
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:
            return math.inf
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return math.nan
    return math.nan


def _first_line(err: Exception, limit: int = 200) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text[:limit]


def label_file(video: str | Path) -> Path:
    """The label file of a video (NAME.csv or NAME.json beside it); BadInputError if none or both."""
    video = Path(video)
    found = [video.with_suffix(s) for s in LABEL_SUFFIXES if video.with_suffix(s).is_file()]
    if not found:
        raise BadInputError(f"{video}: no label file (expected {video.stem}.csv or {video.stem}.json beside it)")
    if len(found) > 1:
        raise BadInputError(f"{video}: two label files ({found[0].name} and {found[1].name}): keep one")
    return found[0]


def _records(path: Path) -> tuple[pd.DataFrame, str | None]:
    """The label table of a CSV or JSON file as read (no checks of the values) and the actor of the JSON."""
    if path.suffix.lower() == ".csv":
        try:
            if path.stat().st_size > MAX_LABEL_FILE_BYTES:
                raise BadInputError(f"{path}: label file is larger than {MAX_LABEL_FILE_BYTES // 2**20} MiB")
            table = pd.read_csv(path, skipinitialspace=True, encoding="utf-8", encoding_errors="strict")
        except FileNotFoundError:
            raise BadInputError(f"{path}: label file is missing") from None
        except IsADirectoryError:
            raise BadInputError(f"{path}: label file is a folder, not a file") from None
        except (ValueError, UnicodeDecodeError) as err:  # pandas' ParserError and EmptyDataError are ValueErrors
            raise BadInputError(f"{path}: malformed CSV ({type(err).__name__}: {_first_line(err)})") from None
        return table, None
    data = load_json(path, "label file")
    actor = None
    if isinstance(data, dict):
        actor = data.get("actor")
        data = data.get("labels")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BadInputError(f'{path}: expected a list of label objects or {{"labels": [...]}}')
    return pd.DataFrame.from_records(data), None if actor is None else str(actor)


def read_labels(path: str | Path, scale: float = 10.0) -> tuple[pd.DataFrame, str | None]:
    """Check and read a label file: (table with 'frame' or 'time', valence, arousal in -10..10, actor or None).

    BadInputError names the file and, for a bad value, its row (the CSV line, or the JSON list index).
    """
    path = Path(path)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    table, actor = _records(path)
    table.columns = [str(c).strip().lower() for c in table.columns]
    repeated = table.columns[table.columns.duplicated()]
    if len(repeated):
        raise BadInputError(f"{path}: column {repeated[0]!r} appears more than once")
    keys = [k for k in ("frame", "time") if k in table.columns]
    missing = [c for c in ("valence", "arousal") if c not in table.columns]
    if table.empty:
        raise BadInputError(f"{path}: no labels")
    if missing or len(keys) != 1:
        need = "valence, arousal and one of frame or time"
        raise BadInputError(f"{path}: columns {', '.join(table.columns)}; need {need}")
    key = keys[0]
    ignored = [c for c in table.columns if c not in (key, "valence", "arousal", "actor")]
    if ignored:  # never used, whatever they hold (a path included)
        log.warning("%s: ignored columns: %s", path, ", ".join(short_repr(c) for c in ignored))
    csv = path.suffix.lower() == ".csv"
    where = (lambda i: f"line {i + 2}") if csv else (lambda i: f"label {i}")  # noqa: E731 - CSV line 1: header
    out = pd.DataFrame(index=table.index)
    for column in (key, "valence", "arousal"):
        values = table[column].map(_as_float).astype(float)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise BadInputError(f"{path} ({where(i)}): {column} is not a number ({short_repr(table[column].iloc[i])})")
        out[column] = values.astype(float)
    if (out[key] < 0).any():
        i = int(np.flatnonzero((out[key] < 0).to_numpy())[0])
        raise BadInputError(f"{path} ({where(i)}): {key} {out[key].iloc[i]} is negative")
    if key == "frame":
        beyond = out[key] > MAX_FRAME
        if beyond.any():
            i = int(np.flatnonzero(beyond.to_numpy())[0])
            raise BadInputError(f"{path} ({where(i)}): frame {out[key].iloc[i]:g} is beyond any video")
        fractional = out[key] != out[key].round()
        if fractional.any():
            i = int(np.flatnonzero(fractional.to_numpy())[0])
            raise BadInputError(f"{path} ({where(i)}): frame {out[key].iloc[i]} is not a whole number")
        out[key] = out[key].astype(int)
    duplicated = out[key].duplicated()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise BadInputError(f"{path} ({where(i)}): {key} {out[key].iloc[i]} is labeled twice")
    for column in ("valence", "arousal"):
        outside = out[column].abs() > scale + _EPS
        if outside.any():
            i = int(np.flatnonzero(outside.to_numpy())[0])
            raise BadInputError(
                f"{path} ({where(i)}): {column} {out[column].iloc[i]} is outside "
                f"-{scale:g}..{scale:g} (scale {scale:g})"
            )
        out[column] = (out[column] * (10.0 / scale)).clip(-10, 10).round(4)
    if "actor" in table.columns:
        actors = table["actor"].dropna().astype(str).unique()
        if len(actors) > 1:
            raise BadInputError(f"{path}: more than one actor ({', '.join(actors[:3])}): one video is one actor")
        actor = actors[0] if len(actors) else actor
    return out.sort_values(key).reset_index(drop=True), actor


def match_labels(
    labels: pd.DataFrame, times: np.ndarray, fps: float | None, video_fps: float, tolerance: float | None = None
) -> np.ndarray:
    """(valence, arousal) for each decoded frame (times in s; NaN where no label), as the module doc says."""
    times = np.asarray(times, dtype=np.float64)
    out = np.full((len(times), 2), np.nan)
    if not len(times) or not len(labels):
        return out
    va = labels[["valence", "arousal"]].to_numpy(np.float64)
    if "frame" in labels.columns:
        source = np.arange(len(times)) if fps is None else np.floor(times * video_fps + _EPS).astype(int)
        row_of = pd.Series(np.arange(len(labels)), index=labels["frame"].to_numpy())
        rows = row_of.reindex(source).to_numpy()
        has = ~np.isnan(rows)
        out[has] = va[rows[has].astype(int)]
        return out
    if tolerance is None:  # half the interval between decoded frames
        tolerance = (
            0.5 / fps
            if fps is not None
            else 0.5 * (float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / video_fps)
        )
    label_times = labels["time"].to_numpy(np.float64)
    right = np.clip(np.searchsorted(label_times, times), 1, len(label_times) - 1) if len(label_times) > 1 else None
    if right is None:
        nearest = np.zeros(len(times), dtype=int)
    else:
        left = right - 1
        nearest = np.where(np.abs(times - label_times[left]) <= np.abs(label_times[right] - times), left, right)
    close = np.abs(label_times[nearest] - times) <= tolerance + _EPS
    out[close] = va[nearest[close]]
    return out


def box_outline(box: tuple[float, float, float, float]) -> list[list[float]]:
    """68 points along the border of a box, 17 per side from each corner on, so their min/max is the box."""
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
    steps = np.linspace(0.0, 1.0, N_LANDMARKS // 4, endpoint=False)[:, None]
    points = np.concatenate([a + steps * (b - a) for a, b in zip(corners[:-1], corners[1:], strict=True)])
    return np.round(points, 2).tolist()


def _clip_box(box: np.ndarray, width: int, height: int) -> tuple[float, float, float, float] | None:
    if np.isnan(box).any():
        return None
    x0, y0, x1, y1 = np.clip(box, 0, [width, height, width, height])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def convert_video(
    video: str | Path,
    labels_path: str | Path,
    dst: str | Path,
    clip_id: int,
    *,
    fps: float | None,
    scale: float,
    tolerance: float | None,
    detector: FaceDetector,
    window: int,
    fill: str,
) -> tuple[dict, pd.DataFrame]:
    """One video -> clip folder ``dst/{clip_id:03d}``; returns its videos.csv row and its faces.csv rows. The
    settings are `convert_annotated_videos`'s."""
    video, labels_path, dst = Path(video), Path(labels_path), Path(dst)
    labels, actor = read_labels(labels_path, scale)
    info = probe(video)
    name = f"{clip_id:03d}"
    folder = dst / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("[0-9][0-9][0-9][0-9][0-9].png"), folder / f"{name}.json"]:  # of an earlier run
        old.unlink(missing_ok=True)
    times, detections, size = [], [], (info.width, info.height)
    for t, index, image in decode(video, fps):
        write_frame(folder, index, image)
        times.append(t)
        detections.append(detector(image))
        size = image.size
    faces = track_main_face(detections, window=window, fill=fill)
    values = match_labels(labels, np.array(times), fps, info.fps, tolerance)
    annotations, no_face = {}, 0
    for i, (valence, arousal) in enumerate(values):
        if np.isnan(valence):
            continue
        box = _clip_box(faces.loc[i, BOX_COLUMNS].to_numpy(np.float64), *size)
        if box is None:
            no_face += 1
            continue
        annotations[i] = {"valence": float(valence), "arousal": float(arousal), "landmarks": box_outline(box)}
    actor = actor or video.stem
    write_afew_clip(dst, clip_id, {}, annotations, actor)
    faces.insert(0, "clip_id", name)
    faces.insert(2, "time", np.round(times, 6))
    faces["labeled"] = faces["frame"].isin(list(annotations))
    row = {
        "clip_id": name,
        "video": video.name,
        "labels": labels_path.name,
        "actor": actor,
        "fps": fps if fps is not None else info.fps,
        "n_frames": len(times),
        "n_labels": len(labels),
        "n_labeled_frames": len(annotations),
        "n_labels_without_face": no_face,
        "n_face_found": int(faces["face_found"].sum()),
    }
    return row, faces


def convert_annotated_videos(
    src: str | Path,
    dst: str | Path,
    fps: float | None = None,
    scale: float = 10.0,
    tolerance: float | None = None,
    detector: FaceDetector | None = None,
    window: int = 5,
    fill: str = "interpolate",
) -> pd.DataFrame:
    """Convert every video in `src` (a folder, or one video file) with its label file into AFEW-VA under `dst`.

    All label files are checked before any video is decoded. Returns the videos.csv table (also written).
    """
    track_main_face([], window=window, fill=fill)  # checks window and fill before any work
    videos = list_videos(src)
    dst = Path(dst)
    label_files = [label_file(v) for v in videos]
    if Path(src).is_dir():  # a data root: nothing in it may lead out of it
        root = Path(src).resolve()
        for path in [*videos, *label_files]:
            if not inside(path, root):
                raise BadInputError(f"{path}: links out of the data root {root}: not read")
    for path in label_files:
        read_labels(path, scale)
    detector = detector or FaceDetector()
    rows, faces = [], []
    for k, (video, labels_path) in enumerate(zip(videos, label_files, strict=True), start=1):
        row, table = convert_video(
            video,
            labels_path,
            dst,
            k,
            fps=fps,
            scale=scale,
            tolerance=tolerance,
            detector=detector,
            window=window,
            fill=fill,
        )
        rows.append(row)
        faces.append(table)
    mapping = pd.DataFrame(rows)
    write_csv(dst / "videos.csv", mapping)
    write_csv(dst / "faces.csv", pd.concat(faces, ignore_index=True))
    return mapping
