"""A trained model as a folder that is safe to take from a stranger: weights in safetensors, settings in JSON.

::

    model.json                  format and version; the CLIP architecture, weights and precision, the face
                                crop, the backbone, the head's architecture and window, the training data
                                and split, and the test metrics
    head.safetensors            the temporal head's weights
    adapter/                    LoRA runs: peft's adapter_config.json and adapter_model.safetensors
    clip_weights.safetensors    a run on a local CLIP checkpoint: that checkpoint, converted
    README.md                   the model card: data, metrics, intended use

Nothing in a model folder is executed or unpickled. Reading one checks every file first: a file of any other
kind (a pickle such as ``head.pt`` or ``adapter_model.bin`` among them) or a link that leads out of the
folder is refused, and every field of ``model.json`` is checked. BadInputError names the file.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from clipva.afew import inside, load_json, short_repr
from clipva.atomic import write_bytes, write_text
from clipva.encoder import PRECISIONS, register_model_configs
from clipva.errors import BadInputError, ConfigError
from clipva.head import HeadConfig, TemporalHead
from clipva.jobs import DIRECTORY_STAMP, export_hint
from clipva.windows import Window

FORMAT, VERSION = "clipva-model", 1
MODEL_FILE = "model.json"
HEAD_FILE = "head.safetensors"
ADAPTER_DIR = "adapter"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")  # what peft writes
CHECKPOINT_FILE = "clip_weights.safetensors"  # a local CLIP checkpoint, converted, inside the folder
CARD_FILE = "README.md"
SAFE_SUFFIXES = (".json", ".md", ".safetensors")  # text, or tensors with a JSON header: nothing runs
CROP_METHODS = ("landmarks", "detector", "none")


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    """A state dict as contiguous CPU tensors that share no memory (what safetensors stores)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items() if isinstance(v, torch.Tensor)}


def _clip_checkpoint(local: Path, out: Path) -> None:
    """A local CLIP checkpoint into the folder as safetensors (open_clip reads both)."""
    if local.suffix == ".safetensors":
        shutil.copyfile(local, out / CHECKPOINT_FILE)
        return
    state = torch.load(local, map_location="cpu", weights_only=True)  # the user's own file, as training read it
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    write_bytes(out / CHECKPOINT_FILE, safetensors_bytes(_tensors(state)))


def _metric_summary(metrics: dict) -> dict:
    pooled = metrics["pooled"]
    summary = {
        "test_mean_ccc": pooled["mean_ccc"],
        "n_test_frames": metrics.get("n_frames"),
        "n_test_clips": metrics.get("n_clips"),
    }
    for dim in ("valence", "arousal"):
        summary.update({f"test_{dim}_{m}": pooled[dim][m] for m in ("ccc", "pcc", "rmse")})
    for name, baseline in metrics.get("baselines", {}).items():
        score = baseline.get("mean_ccc", baseline.get("test", {}).get("mean_ccc"))
        if score is not None:
            summary[f"baseline_{name}_test_mean_ccc"] = score
    return summary


def _card(doc: dict) -> str:
    clip, training, metrics = doc["clip"], doc["training"], doc["metrics"]
    weights = clip["pretrained"] or "random initialisation (no pretrained weights: a demonstration model)"
    results = [
        f"- {key}: {value:.4f}" if isinstance(value, float) else f"- {key}: {value}" for key, value in metrics.items()
    ]
    window = doc["window"]
    backbone = "LoRA adapters in the image tower" if doc["backbone"] == "lora" else "frozen image tower"
    lines = [
        "# clipva model",
        "",
        "Per-frame valence and arousal (-10..10, AFEW-VA's scale) from face video: CLIP image features of face",
        "crops, then a temporal head over windows of frames. Made by clipva's `export_model` rule.",
        "",
        "## Model",
        "",
        f"- CLIP image encoder: {clip['model']}, weights: {weights}, precision: {clip['precision']}",
        f"- backbone: {doc['backbone']} ({backbone})",
        f"- face crop: {doc['face_crop']['method']}, margin {doc['face_crop']['margin']}",
        f"- temporal head: {doc['head']['type']}, windows of {window['window']} frames every {window['stride']}",
        "",
        "## Training data",
        "",
        f"- data set: {training.get('dataset', 'not recorded')}",
        f"- split: {training.get('split', 'not recorded')}",
        "",
        "## Test metrics (pooled over the test frames; CCC as the field defines it)",
        "",
        *results,
        "",
        "## Intended use",
        "",
        "Research on continuous valence/arousal from faces, on recordings like the training data. It is not a",
        "measure of anyone's feelings, and not for decisions about people. Scores outside the training data's",
        "faces, recording conditions and annotation conventions are unknown.",
        "",
        "Use: `clipva predict VIDEO --model THIS_FOLDER`. The folder holds JSON, Markdown and safetensors only;",
        "clipva refuses a model folder with any other file (a pickle included).",
    ]
    if doc["face_crop"]["method"] == "landmarks":
        lines += [
            "",
            "Trained on crops around annotated landmarks, whose box moves with the expression. `clipva predict`",
            "crops around the detected face, whose box does not: on video its curves differ from what it scored",
            "above. A model meant for videos is trained with `face_crop.method: detector`.",
        ]
    if doc["head"].get("centre", "none") == "actor":
        lines += [
            "",
            "Trained on actor-centred features (`head.centre: actor`): each actor's mean feature taken off. The",
            "test metrics above took off each test actor's mean over all its clips. In prediction each video is",
            "its own actor, so a video's overall level is not predicted, only how the values move within it",
            "around the training data's mean.",
        ]
    return "\n".join(lines) + "\n"


def export_model(
    out_dir: str | Path,
    head: str | Path,
    adapter: str | Path,
    settings: dict,
    metrics: str | Path | None = None,
    training: dict | None = None,
) -> None:
    """Write a model folder from a run's fine-tuned head (``best.pt``) and adapter folder. `settings` holds
    the run's ``clip``, ``face_crop`` and ``training`` sections; `metrics` is the run's metrics.json (for the
    card and model.json) and `training` says what it was trained on ({"dataset": ..., "split": ...})."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = torch.load(head, map_location="cpu", weights_only=True)  # the run's own checkpoint
    write_bytes(out / HEAD_FILE, safetensors_bytes(_tensors(ckpt["state_dict"])))
    lora = settings["training"]["backbone"] == "lora"
    if lora:
        (out / ADAPTER_DIR).mkdir(exist_ok=True)
        if not (Path(adapter) / "adapter_model.safetensors").is_file():
            raise BadInputError(f"{adapter}: no adapter_model.safetensors (adapters saved in another format)")
        for name in ADAPTER_FILES:
            if (Path(adapter) / name).is_file():
                shutil.copyfile(Path(adapter) / name, out / ADAPTER_DIR / name)
    clip = dict(settings["clip"])
    if clip["pretrained"] is not None and Path(clip["pretrained"]).expanduser().is_file():
        _clip_checkpoint(Path(clip["pretrained"]).expanduser(), out)
        clip["pretrained"] = CHECKPOINT_FILE
    head_config = {"type": "transformer", "smoothing": False, "output": "tanh", **ckpt["head_config"]}
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "clip": clip,
        "face_crop": settings["face_crop"],
        "backbone": "lora" if lora else "frozen",
        "head": head_config,
        "window": ckpt["window"],
        "training": training or {},
        "metrics": _metric_summary(json.loads(Path(metrics).read_text())) if metrics else {},
    }
    write_text(out / MODEL_FILE, json.dumps(doc, indent=1))
    write_text(out / CARD_FILE, _card(doc))


def _problem(path: Path, what: str) -> BadInputError:
    return BadInputError(f"{path}: {what}")


def check_files(model_dir: Path) -> None:
    """Refuse a folder with anything but JSON, Markdown and safetensors files, or with links leading out."""
    root = model_dir.resolve()
    for path in sorted(model_dir.rglob("*")):
        if not inside(path, root):
            raise _problem(path, "links out of the model folder: refused")
        if path.is_dir() or (path.name == DIRECTORY_STAMP and path.stat().st_size == 0):
            continue
        if path.suffix.lower() not in SAFE_SUFFIXES:
            raise _problem(
                path,
                f"not part of a clipva model: a model folder holds only {', '.join(SAFE_SUFFIXES)} "
                f"files, never a pickle (.pt, .bin, .pkl) or code; if an older clipva made it, {export_hint()} again",
            )


def _checked_head(doc_path: Path, head: object, window: object) -> tuple[HeadConfig, Window]:
    known = {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in fields(HeadConfig)}
    if not isinstance(head, dict) or not set(head) <= set(known) or "in_dim" not in head:
        raise _problem(doc_path, f"head {short_repr(head)} is not a head architecture")
    for key, value in head.items():
        want = {"int": int, "float": int | float, "str": str, "bool": bool}[known[key]]
        if isinstance(value, bool) != (known[key] == "bool") or not isinstance(value, want):
            raise _problem(doc_path, f"head.{key} {short_repr(value)} is not a {known[key]}")
    frames = [v for v in (window.values() if isinstance(window, dict) else []) if type(v) is int and 0 < v <= 10**5]
    if not isinstance(window, dict) or set(window) != {"window", "stride"} or len(frames) != 2:
        raise _problem(doc_path, f"window {short_repr(window)} is not {{window, stride}} in frames")
    try:
        checked = Window.from_dict(window)
    except ValueError as err:
        raise _problem(doc_path, f"window {short_repr(window)}: {err}") from None
    try:
        cfg = HeadConfig(**head)
        TemporalHead(cfg)  # checks the architecture (sizes, type) before any weight is read
    except Exception as err:  # the head's own checks raise several types
        raise _problem(doc_path, f"head {short_repr(head, 80)} cannot be built ({err})") from None
    return cfg, checked


def read_model_config(model_dir: str | Path) -> dict:
    """The checked ``model.json`` of a model folder (its files checked first, see the module doc), with a
    local checkpoint given as a path inside the folder and the head's architecture as a HeadConfig."""
    import open_clip

    model_dir = Path(model_dir)
    doc_path = model_dir / MODEL_FILE
    if not doc_path.is_file():
        raise ConfigError(
            f"{model_dir}: not a clipva model folder (no {MODEL_FILE}; for a run of the workflow, {export_hint()})"
        )
    check_files(model_dir)
    doc = load_json(doc_path, "model config")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _problem(doc_path, f'not a clipva model config (no "format": "{FORMAT}")')
    if doc.get("version") != VERSION:
        raise _problem(doc_path, f"model format version {short_repr(doc.get('version'))}; this clipva reads {VERSION}")
    clip, face_crop = doc.get("clip"), doc.get("face_crop")
    if not isinstance(clip, dict) or not isinstance(face_crop, dict):
        raise _problem(doc_path, "'clip' and 'face_crop' must be objects")
    if doc.get("backbone") not in ("frozen", "lora"):
        raise _problem(doc_path, f"backbone {short_repr(doc.get('backbone'))} is not frozen or lora")
    register_model_configs()
    arch, weights, precision = clip.get("model"), clip.get("pretrained"), clip.get("precision", "auto")
    if not isinstance(arch, str) or arch not in open_clip.list_models():
        raise _problem(doc_path, f"clip.model {short_repr(arch)} is not an open_clip architecture")
    if precision not in PRECISIONS:
        raise _problem(doc_path, f"clip.precision {short_repr(precision)} is not one of {', '.join(PRECISIONS)}")
    if weights is not None and not isinstance(weights, str):
        raise _problem(doc_path, f"clip.pretrained {short_repr(weights)} is not a tag or a file name")
    if weights is not None and weights not in open_clip.list_pretrained_tags_by_model(arch):
        local = model_dir / weights
        if Path(weights).is_absolute() or not inside(local, model_dir.resolve()) or not local.is_file():
            raise _problem(
                doc_path,
                f"clip.pretrained {short_repr(weights)} is neither an open_clip tag of "
                f"{arch} nor a checkpoint file inside the model folder",
            )
        weights = str(local.resolve())
    method, margin = face_crop.get("method"), face_crop.get("margin", 0.0)
    if method not in CROP_METHODS:
        raise _problem(doc_path, f"face_crop.method {short_repr(method)} is not one of {', '.join(CROP_METHODS)}")
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin <= 10:
        raise _problem(doc_path, f"face_crop.margin {short_repr(margin)} is not a number in 0..10")
    head, window = _checked_head(doc_path, doc.get("head"), doc.get("window"))
    return {
        "clip": {"model": arch, "pretrained": weights, "precision": precision},
        "face_crop": {"method": method, "margin": float(margin)},
        "backbone": doc["backbone"],
        "head": head,
        "window": window,
    }


def load_head_weights(model_dir: Path, cfg: HeadConfig, device: torch.device) -> TemporalHead:
    """The head of a model folder, from safetensors (never a pickle)."""
    path = model_dir / HEAD_FILE
    try:
        state = load_file(path, device="cpu")
        head = TemporalHead(cfg)
        head.load_state_dict(state)
    except FileNotFoundError:
        raise _problem(path, "the model folder has no head") from None
    except Exception as err:  # safetensors' header checks and load_state_dict raise several types
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise _problem(path, f"not the weights of the head model.json describes ({reason})") from None
    return head.to(device).eval()
