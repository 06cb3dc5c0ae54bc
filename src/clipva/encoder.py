"""Loading CLIP through open_clip: architecture, weights source, precision.

`clip.pretrained` is None (random initialisation, the offline default), an open_clip pretrained tag
(e.g. ``openai``), or the path of a local checkpoint file. Checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from clipva.errors import ConfigError

log = logging.getLogger(__name__)
MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INIT_SEED = 0  # seed of the random initialisation when clip.pretrained is null
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def register_model_configs() -> None:
    """Make the architectures shipped with clipva (e.g. ``clipva-tiny``) known to open_clip."""
    if "clipva-tiny" not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIG_DIR)


def cpu_has_fast_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True where the CPU has native bf16 matrix instructions (AMX or AVX512-BF16)."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that compute it natively (Ampere and newer), else fp16; fp32 on every CPU. CPUs
    with bf16 instructions (AMX, AVX512-BF16) encode faster in bf16, but their bf16 results differ from one
    CPU kind to the next, and with them every number downstream: on CPU the default is the precision whose
    results reproduce (bf16 stays one setting away). fp16 on a CPU (a model or config made for a GPU) falls
    back to fp32 with a warning."""
    if precision not in PRECISIONS:
        raise ConfigError(f"clip.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        log.warning("clip.precision: fp16 does not run on the CPU; using fp32 (set bf16 or auto to choose)")
        return "fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        log.warning(
            "clip.precision: bf16 on a CPU without AMX or AVX512-BF16 is emulated and several times "
            "slower than fp32 (auto picks fp32)"
        )
    if precision != "auto":
        return precision
    if device.type == "cuda":
        # counting emulation, older GPUs (V100, T4) report bf16 and then run it slowly
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "fp32"


def dtype_of(precision: str) -> torch.dtype:
    return _DTYPES[precision]


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_pretrained(model: str, pretrained: str | None) -> None:
    """Fail fast, with a clear message, on a weights source that cannot be loaded."""
    if pretrained is None:
        return
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained in tags:
        if os.environ.get("HF_HUB_OFFLINE") != "1" and not _hub_reachable():
            # Offline: open_clip may still find the weights in the local cache; never retry for a minute.
            import huggingface_hub.constants

            os.environ["HF_HUB_OFFLINE"] = "1"
            huggingface_hub.constants.HF_HUB_OFFLINE = True
        return
    path = Path(pretrained).expanduser()
    if path.is_file():
        return
    if any(sep in pretrained for sep in ("/", "\\")) or path.suffix:
        raise ConfigError(f"clip.pretrained: checkpoint file {str(path)!r} does not exist")
    raise ConfigError(
        f"clip.pretrained: {pretrained!r} is neither an existing checkpoint file nor a pretrained tag of "
        f"{model} (known tags: {', '.join(tags) or 'none'})"
    )


@dataclass
class LoadedClip:
    model: torch.nn.Module
    model_name: str
    preprocess: object  # torchvision transform: PIL image -> normalised tensor
    tokenizer: object
    precision: str
    device: torch.device

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return size[0] if isinstance(size, tuple) else int(size)

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def dtype(self) -> torch.dtype:
        return dtype_of(self.precision)


def load_clip(model: str, pretrained: str | None, precision: str = "auto", device: str = "auto") -> LoadedClip:
    """Build an open_clip model in eval mode with its validation transform and tokenizer."""
    register_model_configs()
    if model not in open_clip.list_models():
        raise ConfigError(f"clip.model: {model!r} is not an open_clip architecture (see open_clip.list_models())")
    check_pretrained(model, pretrained)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    local = Path(pretrained).expanduser() if pretrained else None
    source = str(local) if local is not None and local.is_file() else pretrained
    # Random initialisation is seeded: every job (extraction shards, text embeddings) builds the same model.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        clip_model, preprocess = _create(model, source, prec, dev, pretrained)
    clip_model.eval()
    return LoadedClip(clip_model, model, preprocess, open_clip.get_tokenizer(model), prec, dev)


def load_clip_from(settings: dict, device: str = "auto") -> LoadedClip:
    """load_clip with the config's `clip` section ({model, pretrained, precision})."""
    return load_clip(settings["model"], settings["pretrained"], settings["precision"], device)


def _create(model: str, source: str | None, prec: str, dev: torch.device, pretrained: str | None):
    try:
        clip_model, _, preprocess = open_clip.create_model_and_transforms(
            model, pretrained=source, precision=prec, device=dev, weights_only=True
        )
    except Exception as err:  # open_clip, huggingface_hub and torch.load raise many types
        if pretrained is None:
            raise
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"clip.pretrained: could not load {pretrained!r} for {model}: {reason}") from None
    return clip_model, preprocess


@torch.no_grad()
def encode_images(encoder: LoadedClip, images: torch.Tensor) -> torch.Tensor:
    """CLIP image embeddings (not normalised) as float32, for a batch of preprocessed images."""
    images = images.to(encoder.device, dtype=encoder.dtype, non_blocking=True)
    return encoder.model.encode_image(images).float()


@torch.no_grad()
def encode_texts(encoder: LoadedClip, texts: list[str]) -> torch.Tensor:
    tokens = encoder.tokenizer(texts).to(encoder.device)
    return encoder.model.encode_text(tokens).float()
