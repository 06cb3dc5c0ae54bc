"""Valence/arousal curves for your own videos, with a trained clipva model.

A model is a folder that `clipva.model_folder` writes from a fine-tuned run (the workflow's ``export_model``
rule, `clipva.jobs.RUN_MODEL`: JSON settings, safetensors weights, a model card; nothing in it is unpickled).
Prediction goes through the same crop, preprocessing, image tower and temporal head as training:

1. decode the video at ``fps`` and detect faces in every frame; keep the main face and smooth its box
   (`clipva.faces.track_main_face`);
2. crop each frame around that box (frames without a face: the box interpolated from their neighbours),
   encode the crops, and run the temporal head over the sequence;
3. frames without a face are marked ``face_found = false``; with ``no_face: empty`` their values are left
   empty, with ``interpolate`` they keep the prediction made from the interpolated box.

Values are on the annotation scale of AFEW-VA, -10..10.

`predict_folder` runs a batch (the ``clipva predict`` command): one progress bar over all videos, a
``summary.csv`` with a row per video, a video that cannot be decoded skipped and listed rather than ending the
batch, and videos whose outputs were made by the same model, settings and video file skipped on a rerun.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from clipva.atomic import write_csv
from clipva.crop import crop_face, crop_margin
from clipva.encoder import LoadedClip, encode_images, load_clip_from
from clipva.errors import BadInputError, ConfigError
from clipva.faces import BOX_COLUMNS, FaceDetector, track_main_face
from clipva.head import TemporalHead
from clipva.model_folder import ADAPTER_DIR, load_head_weights, read_model_config
from clipva.plots import video_curves
from clipva.sequences import VA_SCALE, predict_clip
from clipva.windows import Window

if TYPE_CHECKING:  # clipva.video (PyAV) is imported where videos are read
    from clipva.video import VideoInfo

log = logging.getLogger(__name__)
NO_FACE = ("interpolate", "empty")
COLUMNS = ["time", "frame", "valence", "arousal", "face_found"]


@dataclass
class Model:
    encoder: LoadedClip
    visual: torch.nn.Module | None  # the image tower with adapters (LoRA), or None: clip's own tower
    head: TemporalHead
    window: Window
    face_crop: dict


LANDMARK_MODEL = (
    "%s was trained on crops around annotated landmarks, whose box moves with the expression; here faces are "
    "cropped around the detected box, which does not, so its curves differ from what it scored in evaluation "
    "(docs/videos.md#the-face-detector). A model meant for videos is trained with face_crop.method: detector"
)


def load_model(model_dir: str | Path) -> Model:
    """A model folder (`clipva.model_folder`) ready to predict on this machine's device."""
    model_dir = Path(model_dir)
    doc = read_model_config(model_dir)
    encoder = load_clip_from(doc["clip"])
    visual = None
    if doc["backbone"] == "lora":
        from clipva.lora import load_adapters

        visual = load_adapters(encoder, model_dir / ADAPTER_DIR).to(encoder.device)
    head = load_head_weights(model_dir, doc["head"], encoder.device)
    if doc["face_crop"]["method"] == "landmarks":
        log.warning(LANDMARK_MODEL, model_dir)
    return Model(encoder, visual, head, doc["window"], doc["face_crop"])


@torch.no_grad()
def _encode(model: Model, crops: list) -> np.ndarray:
    images = torch.stack([model.encoder.preprocess(c) for c in crops])
    if model.visual is None:
        return encode_images(model.encoder, images).cpu().numpy()
    from clipva.lora import encode_frames

    return encode_frames(model.visual, images, model.encoder.dtype).cpu().numpy()


def predict_video(path: str | Path, model: Model, **options) -> pd.DataFrame:
    """Per-frame valence and arousal of one video: columns time (s), frame, valence, arousal, face_found.

    `options` are `predict_video_and_boxes`'s."""
    return predict_video_and_boxes(path, model, **options)[0]


def predict_video_and_boxes(
    path: str | Path,
    model: Model,
    fps: float | None = 10.0,
    no_face: str = "interpolate",
    smooth_window: int = 5,
    min_score: float = 0.5,
    batch_size: int = 32,
    detector: FaceDetector | None = None,
    progress: Callable[[float], object] | None = None,
    overlap: bool | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """`predict_video`'s table, and the face box of each of its rows (x0, y0, x1, y1; interpolated where no
    face was found, NaN in a video without any).

    `progress(n)` is told of each frame's two passes (0.5 each). `overlap` decodes and crops in a second
    thread while the encoder runs (default: on CUDA, where the encoder does not need the CPU's cores).
    """
    from clipva.video import decode

    if no_face not in NO_FACE:
        raise ConfigError(f"predict.no_face: {no_face!r} is not one of {', '.join(NO_FACE)}")
    detector = detector or FaceDetector(min_score=min_score)
    tick = progress or (lambda n: None)
    times, detections = [], []
    for t, _, image in decode(path, fps):  # pass 1: faces
        times.append(t)
        detections.append(detector(image))
        tick(0.5)
    if not times:
        raise BadInputError(f"{path}: no frames decoded")
    track = track_main_face(detections, window=smooth_window, fill="interpolate")
    boxes = track[BOX_COLUMNS].to_numpy(dtype=np.float64)
    found = track["face_found"].to_numpy(dtype=bool)
    table = pd.DataFrame(
        {
            "time": np.round(times, 6),
            "frame": np.arange(len(times)),
            "valence": np.nan,
            "arousal": np.nan,
            "face_found": found,
        }
    )
    if not found.any():
        log.warning("%s: no face found in any of its %d frames; its values are left empty", path, len(times))
        return table, boxes
    margin = crop_margin(model.face_crop)
    if overlap is None:
        overlap = model.encoder.device.type == "cuda"
    cropped = (
        image if margin is None else crop_face(image, tuple(boxes[k]), margin)
        for k, (_, _, image) in enumerate(decode(path, fps))
    )
    features, crops = [], []
    for crop in _prefetched(cropped, 2 * batch_size) if overlap else cropped:  # pass 2: the image tower
        crops.append(crop)
        tick(0.5)
        if len(crops) == batch_size:
            features.append(_encode(model, crops))
            crops = []
    if crops:
        features.append(_encode(model, crops))
    x = np.concatenate(features)
    if len(x) != len(times):
        raise BadInputError(f"{path}: decoded {len(x)} frames on the second pass, {len(times)} on the first")
    if model.head.cfg.centre == "actor":  # the model's card says so: the video is its own actor
        x = x - x[found].mean(0)
        log.info("%s: features minus the video's mean (head.centre: actor): its level is not predicted", path)
    pred = predict_clip(model.head, x, model.window) * VA_SCALE
    table[["valence", "arousal"]] = pred
    if no_face == "empty":
        table.loc[~found, ["valence", "arousal"]] = np.nan
    log.info("%s: %d frames, face in %d (%.0f%%)", path, len(table), found.sum(), 100 * found.mean())
    return table[COLUMNS], boxes


def _prefetched(items: Iterable, depth: int) -> Iterator:
    """`items`, produced by a second thread up to `depth` ahead; its exception is raised here, in order."""
    done, slots = object(), queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((done, None))
        except BaseException as err:  # handed to the consumer, which raises it
            slots.put((done, err))

    worker = threading.Thread(target=produce, name="clipva-decode", daemon=True)
    worker.start()
    try:
        while True:
            item, err = slots.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        worker.join()


def predict_video_files(
    video: str | Path,
    model: Model,
    csv: str | Path,
    plot: str | Path,
    title: str,
    annotated: str | Path | None = None,
    page: str | Path | None = None,
    info: VideoInfo | None = None,
    **options,
) -> pd.DataFrame:
    """`predict_video` (with `options`) written to `csv` and its curves to `plot` titled `title`; with
    `annotated`, the video with box and gauge drawn (`clipva.annotate`); with `page`, the HTML page that
    plays it (or the video itself) beside the curves (`clipva.page`). `info` is the video's `probe`, read
    here when not given and needed. Returns the table."""
    from clipva.page import write_page
    from clipva.video import probe

    table, boxes = predict_video_and_boxes(video, model, **options)
    write_csv(csv, table, float_format="%.4f")
    video_curves(table, str(plot), title=title)
    if info is None and (annotated is not None or page is not None):
        info = probe(video)
    if annotated is not None:
        from clipva.annotate import write_annotated_video

        write_annotated_video(video, table, boxes, annotated, info.fps)
    if page is not None:
        write_page(annotated or video, table, page, info.duration)
    return table


SUMMARY = "summary.csv"
_KEY = ["model", "fps", "no_face", "video_bytes", "video_mtime_ns"]  # what makes a video's outputs current


def model_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 (first 16 hex digits) of a model folder's files, names and contents."""
    digest = hashlib.sha256()
    root = Path(model_dir)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _summary_row(table: pd.DataFrame, duration: float) -> dict:
    row = {"duration_s": round(duration, 3), "frames": len(table), "frames_with_face": int(table["face_found"].sum())}
    for dim in ("valence", "arousal"):
        values = table[dim].dropna()
        for stat in ("mean", "min", "max"):
            row[f"{dim}_{stat}"] = round(float(getattr(values, stat)()), 4) if len(values) else np.nan
    return row


def summarize(videos: list[Path], tables: list[Path], out: str | Path) -> pd.DataFrame:
    """summary.csv (`out`) of videos already predicted into `tables` (their NAME.csv files, in the same order)."""
    from clipva.video import probe

    rows = []
    for video, csv in zip(videos, tables, strict=True):
        table = pd.read_csv(csv)
        rows.append(
            {"video": Path(video).name, "status": "done", "reason": "", **_summary_row(table, probe(video).duration)}
        )
    summary = _summary_table(rows).drop(columns=_KEY)
    write_csv(out, summary, float_format="%.4f")
    return summary


def _previous(out: Path) -> dict[str, dict]:
    """The rows of an earlier summary.csv in `out` by video name (none if it is missing or unreadable)."""
    try:
        old = pd.read_csv(out / SUMMARY, dtype={"model": str, "no_face": str})
    except (OSError, ValueError, pd.errors.ParserError):
        return {}
    if not {"video", "status", *_KEY} <= set(old.columns):
        return {}
    return {str(row["video"]): row for row in old.to_dict("records")}


def predict_folder(
    videos: list[Path],
    model_dir: str | Path,
    out: str | Path,
    fps: float | None = 10.0,
    no_face: str = "interpolate",
    progress: bool = True,
    load: Callable[[Path], Model] | None = None,
    annotate: bool = False,
) -> pd.DataFrame:
    """NAME.csv, NAME.png and NAME.html in `out` for each video, and `out`/summary.csv; returns the summary.

    With `annotate`, also NAME.annotated.mp4 (`clipva.annotate`). A video whose outputs exist and whose
    summary row has the same model (its files' hash), fps, no_face setting and video file (size and
    modification time) is not predicted again. A video that cannot be read is skipped: its row has status
    "skipped" and the reason, and the others go on. The summary is rewritten (atomically) after each video,
    so a killed batch keeps what it finished.
    """
    from tqdm import tqdm

    from clipva.video import probe

    if no_face not in NO_FACE:
        raise ConfigError(f"--no-face: {no_face!r} is not one of {', '.join(NO_FACE)}")
    stems: dict[str, Path] = {}
    for video in videos:
        if video.stem in stems:
            raise BadInputError(f"{stems[video.stem]} and {video}: both would be written as {video.stem}.csv")
        stems[video.stem] = video
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint, previous, rows = model_fingerprint(model_dir), _previous(out), []
    model = None
    todo, infos = [], {}
    for video in videos:
        stat = video.stat() if video.is_file() else None
        key = {
            "model": fingerprint,
            "fps": float(fps) if fps else 0.0,
            "no_face": no_face,
            "video_bytes": stat.st_size if stat else -1,
            "video_mtime_ns": stat.st_mtime_ns if stat else -1,
        }
        old = previous.get(video.name)
        current = (
            old is not None
            and old["status"] == "done"
            and all(str(old[k]) == str(key[k]) for k in _KEY)
            and (out / f"{video.stem}.csv").is_file()
            and (out / f"{video.stem}.png").is_file()
            and (out / f"{video.stem}.html").is_file()
            and (not annotate or (out / f"{video.stem}.annotated.mp4").is_file())
        )
        rows.append({**old, **key} if current else {"video": video.name, "status": "todo", "reason": "", **key})
        if not current:
            todo.append(len(rows) - 1)
            try:
                infos[video] = probe(video)
            except BadInputError as err:
                infos[video] = err
    skipped_current = len(videos) - len(todo)
    if skipped_current:
        log.info(
            "%d of %d videos are up to date in %s (same model, settings and file)", skipped_current, len(videos), out
        )
    expected = sum(
        (max(1, round(i.duration * fps)) if fps else i.n_frames) for i in infos.values() if not isinstance(i, Exception)
    )
    with tqdm(total=expected, unit="frame", disable=not (progress and todo), mininterval=1, smoothing=0.1) as bar:
        for index in todo:
            video = videos[index]
            info = infos[video]
            try:
                if isinstance(info, Exception):
                    raise info
                if model is None:
                    model = (load or load_model)(Path(model_dir))
                table = predict_video_files(
                    video,
                    model,
                    out / f"{video.stem}.csv",
                    out / f"{video.stem}.png",
                    video.name,
                    annotated=out / f"{video.stem}.annotated.mp4" if annotate else None,
                    page=out / f"{video.stem}.html",
                    info=info,
                    fps=fps,
                    no_face=no_face,
                    progress=bar.update,
                )
                rows[index].update(status="done", reason="", **_summary_row(table, info.duration))
            except BadInputError as err:
                log.warning("skipped %s", err)
                rows[index].update(status="skipped", reason=str(err))
            write_csv(out / SUMMARY, _summary_table(rows), float_format="%.4f")
    summary = _summary_table(rows)
    write_csv(out / SUMMARY, summary, float_format="%.4f")
    return summary


def _summary_table(rows: list[dict]) -> pd.DataFrame:
    columns = ["video", "status", "reason", "duration_s", "frames", "frames_with_face"]
    columns += [f"{d}_{s}" for d in ("valence", "arousal") for s in ("mean", "min", "max")] + _KEY
    return pd.DataFrame(rows).reindex(columns=columns)
