"""Valence/arousal curves for your own videos, with a trained clipva model.

A model is the folder ``results/runs/<run>/model/`` that the workflow's ``export_model`` rule writes:
``model.json`` (the CLIP architecture and weights, precision, face crop, backbone), ``head.pt`` (the
temporal head with its window) and, for a LoRA run, ``adapter/`` (peft format). Prediction goes through
the same crop, preprocessing, image tower and temporal head as training:

1. decode the video at ``fps`` and detect faces in every frame; keep the main face and smooth its box
   (`clipva.faces.track_main_face`);
2. crop each frame around that box (frames without a face: the box interpolated from their neighbours),
   encode the crops, and run the temporal head over the sequence;
3. frames without a face are marked ``face_found = false``; with ``no_face: empty`` their values are left
   empty, with ``interpolate`` they keep the prediction made from the interpolated box.

Values are on the annotation scale of AFEW-VA, -10..10.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipva.afew import inside, load_json, short_repr
from clipva.atomic import write_text
from clipva.checkpoints import load_head
from clipva.crop import crop_face
from clipva.encoder import PRECISIONS, LoadedClip, encode_images, load_clip_from, register_model_configs
from clipva.errors import BadInputError, ConfigError
from clipva.faces import BOX_COLUMNS, FaceDetector, track_main_face
from clipva.head import TemporalHead
from clipva.sequences import VA_SCALE, predict_clip

log = logging.getLogger(__name__)
MODEL_FILE = "model.json"
CHECKPOINT_STEM = "clip_weights"  # a local CLIP checkpoint, copied into the model folder
NO_FACE = ("interpolate", "empty")
COLUMNS = ["time", "frame", "valence", "arousal", "face_found"]


def export_model(out_dir: str | Path, head: str | Path, adapter: str | Path, settings: dict) -> None:
    """Write a model folder from a run's fine-tuned head and adapter folder (copied for a LoRA run);
    `settings` holds the run's ``clip``, ``face_crop`` and ``training`` sections."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(head, out / "head.pt")
    lora = settings["training"]["backbone"] == "lora"
    if lora:
        shutil.copytree(adapter, out / "adapter", dirs_exist_ok=True)
    clip = dict(settings["clip"])
    weights = clip["pretrained"]
    if weights is not None and Path(weights).expanduser().is_file():
        # a local checkpoint travels inside the folder: a model's config never points outside it
        local = Path(weights).expanduser()
        shutil.copyfile(local, out / f"{CHECKPOINT_STEM}{local.suffix}")
        clip["pretrained"] = f"{CHECKPOINT_STEM}{local.suffix}"
    doc = {"clip": clip, "face_crop": settings["face_crop"], "backbone": "lora" if lora else "frozen"}
    write_text(out / MODEL_FILE, json.dumps(doc, indent=1))


def _model_error(doc_path: Path, problem: str) -> BadInputError:
    return BadInputError(f"{doc_path}: {problem} (not a model config that clipva wrote)")


def read_model_config(model_dir: str | Path) -> dict:
    """The checked ``model.json`` of a model folder, with a local checkpoint as a path inside the folder.

    A model folder may come from anyone: every field is checked, and ``clip.pretrained`` is an open_clip
    tag, null, or a file inside the folder (no path that leads out of it). BadInputError names the file.
    """
    import open_clip

    model_dir = Path(model_dir)
    doc_path = model_dir / MODEL_FILE
    if not doc_path.is_file():
        raise ConfigError(f"{model_dir}: not a clipva model folder (no {MODEL_FILE}; the workflow writes one to "
                          "results/runs/<run>/model/ with `snakemake results/runs/<run>/model`)")  # fmt: skip
    doc = load_json(doc_path, "model config")
    register_model_configs()
    if not isinstance(doc, dict):
        raise _model_error(doc_path, f"expected a JSON object, found {type(doc).__name__}")
    clip, face_crop = doc.get("clip"), doc.get("face_crop")
    if not isinstance(clip, dict) or not isinstance(face_crop, dict):
        raise _model_error(doc_path, "'clip' and 'face_crop' must be objects")
    if doc.get("backbone") not in ("frozen", "lora"):
        raise _model_error(doc_path, f"backbone {short_repr(doc.get('backbone'))} is not frozen or lora")
    arch, weights, precision = clip.get("model"), clip.get("pretrained"), clip.get("precision", "auto")
    if not isinstance(arch, str) or arch not in open_clip.list_models():
        raise _model_error(doc_path, f"clip.model {short_repr(arch)} is not an open_clip architecture")
    if precision not in PRECISIONS:
        raise _model_error(doc_path, f"clip.precision {short_repr(precision)} is not one of {', '.join(PRECISIONS)}")
    if weights is not None and not isinstance(weights, str):
        raise _model_error(doc_path, f"clip.pretrained {short_repr(weights)} is not a tag or a file name")
    if weights is not None and weights not in open_clip.list_pretrained_tags_by_model(arch):
        local = model_dir / weights
        if Path(weights).is_absolute() or not inside(local, model_dir.resolve()) or not local.is_file():
            raise _model_error(doc_path, f"clip.pretrained {short_repr(weights)} is neither an open_clip tag of "
                                         f"{arch} nor a checkpoint file inside the model folder")  # fmt: skip
        weights = str(local.resolve())
    method, margin = face_crop.get("method"), face_crop.get("margin", 0.0)
    if method not in ("landmarks", "none"):
        raise _model_error(doc_path, f"face_crop.method {short_repr(method)} is not landmarks or none")
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin <= 10:
        raise _model_error(doc_path, f"face_crop.margin {short_repr(margin)} is not a number in 0..10")
    return {"clip": {"model": arch, "pretrained": weights, "precision": precision},
            "face_crop": {"method": method, "margin": float(margin)}, "backbone": doc["backbone"]}  # fmt: skip


@dataclass
class Model:
    clip: LoadedClip
    visual: torch.nn.Module | None  # the image tower with adapters (LoRA), or None: clip's own tower
    head: TemporalHead
    window: dict
    face_crop: dict


def load_model(model_dir: str | Path) -> Model:
    """A model folder (see the module doc) ready to predict on this machine's device."""
    model_dir = Path(model_dir)
    doc = read_model_config(model_dir)
    clip = load_clip_from(doc["clip"])
    visual = None
    if doc["backbone"] == "lora":
        from clipva.lora import load_adapters

        visual = load_adapters(clip, model_dir / "adapter").to(clip.device)
    try:
        head, ckpt = load_head(model_dir / "head.pt", clip.device)
    except FileNotFoundError:
        raise BadInputError(f"{model_dir / 'head.pt'}: the model folder has no head") from None
    except Exception as err:  # torch's safe loader and the head's checks raise many types
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise BadInputError(f"{model_dir / 'head.pt'}: not a clipva head checkpoint ({reason})") from None
    head.eval()
    return Model(clip, visual, head, ckpt["window"], doc["face_crop"])


@torch.no_grad()
def _encode(model: Model, crops: list) -> np.ndarray:
    images = torch.stack([model.clip.preprocess(c) for c in crops])
    if model.visual is None:
        return encode_images(model.clip, images).cpu().numpy()
    from clipva.lora import encode_frames

    return encode_frames(model.visual, images, model.clip.dtype).cpu().numpy()


def predict_video(path: str | Path, model: Model, fps: float | None = 10.0, no_face: str = "interpolate",
                  smooth_window: int = 5, min_score: float = 0.5, batch_size: int = 32,
                  detector: FaceDetector | None = None) -> pd.DataFrame:  # fmt: skip
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
    table = pd.DataFrame({"time": np.round(times, 6), "frame": np.arange(len(times)), "valence": np.nan,
                          "arousal": np.nan, "face_found": found})  # fmt: skip
    if not found.any():
        log.warning("%s: no face found in any of its %d frames; its values are left empty", path, len(times))
        return table
    margin = model.face_crop.get("margin", 0.0) if model.face_crop["method"] == "landmarks" else None
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
    pred = predict_clip(model.head, x, model.window["window"], model.window["stride"]) * VA_SCALE
    table[["valence", "arousal"]] = pred
    if no_face == "empty":
        table.loc[~found, ["valence", "arousal"]] = np.nan
    log.info("%s: %d frames, face in %d (%.0f%%)", path, len(table), found.sum(), 100 * found.mean())
    return table[COLUMNS]
