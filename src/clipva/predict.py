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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

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
    return Model(encoder, visual, head, doc["window"], doc["face_crop"])


@torch.no_grad()
def _encode(model: Model, crops: list) -> np.ndarray:
    images = torch.stack([model.encoder.preprocess(c) for c in crops])
    if model.visual is None:
        return encode_images(model.encoder, images).cpu().numpy()
    from clipva.lora import encode_frames

    return encode_frames(model.visual, images, model.encoder.dtype).cpu().numpy()


def predict_video(
    path: str | Path,
    model: Model,
    fps: float | None = 10.0,
    no_face: str = "interpolate",
    smooth_window: int = 5,
    min_score: float = 0.5,
    batch_size: int = 32,
    detector: FaceDetector | None = None,
) -> pd.DataFrame:
    """Per-frame valence and arousal of one video: columns time (s), frame, valence, arousal, face_found."""
    from clipva.video import decode

    if no_face not in NO_FACE:
        raise ConfigError(f"predict.no_face: {no_face!r} is not one of {', '.join(NO_FACE)}")
    detector = detector or FaceDetector(min_score=min_score)
    times, detections = [], []
    for t, _, image in decode(path, fps):  # pass 1: faces
        times.append(t)
        detections.append(detector(image))
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
        return table
    margin = crop_margin(model.face_crop)
    features, crops = [], []
    for k, (_, _, image) in enumerate(decode(path, fps)):  # pass 2: crops through the image tower
        crops.append(image if margin is None else crop_face(image, tuple(boxes[k]), margin))
        if len(crops) == batch_size:
            features.append(_encode(model, crops))
            crops = []
    if crops:
        features.append(_encode(model, crops))
    x = np.concatenate(features)
    if len(x) != len(times):
        raise BadInputError(f"{path}: decoded {len(x)} frames on the second pass, {len(times)} on the first")
    pred = predict_clip(model.head, x, model.window) * VA_SCALE
    table[["valence", "arousal"]] = pred
    if no_face == "empty":
        table.loc[~found, ["valence", "arousal"]] = np.nan
    log.info("%s: %d frames, face in %d (%.0f%%)", path, len(table), found.sum(), 100 * found.mean())
    return table[COLUMNS]


def predict_video_files(
    video: str | Path, model: Model, csv: str | Path, plot: str | Path, title: str, **options
) -> pd.DataFrame:
    """`predict_video` (with `options`) written to `csv` and its curves to `plot` titled `title`; returns the
    table."""
    table = predict_video(video, model, **options)
    write_csv(csv, table, float_format="%.4f")
    video_curves(table, str(plot), title=title)
    return table
