"""peft LoRA adapters inside the CLIP image tower.

open_clip's attention is ``nn.MultiheadAttention``, which reads its weights directly instead of calling
submodules. peft's adapter for the whole module therefore merges the update into the base weights and
subtracts it again on every forward, which rounds the bf16/fp16 base weights a little at each call: they
drift. ``attn`` in ``lora.target_modules`` instead adapts the query/key/value projection
(``attn.in_proj_weight``) through peft's parameter targeting, a parametrization that adds the update on the
fly and never writes the base weights. ``c_fc`` and ``c_proj`` (the MLP linears) are ordinary module
targets. ``out_proj`` is refused: MultiheadAttention reads ``out_proj.weight`` directly, so a module adapter
on it is never used. Only the adapters train: every base weight of the model, the text tower included, is
frozen.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora.layer import ParamWrapper
from torch import nn

from clipva.checkpoints import atomic_save
from clipva.encoder import LoadedClip
from clipva.errors import ConfigError

log = logging.getLogger(__name__)
DEFAULT_TARGETS = ("attn", "c_fc", "c_proj")


ATTENTION_WEIGHT = "attn.in_proj_weight"


def lora_config(cfg: dict) -> LoraConfig:
    """peft's config for `cfg` (the lora section). Dropout is set on the module adapters afterwards
    (`_set_dropout`): peft refuses it for parameter targets, whose update has no input to drop."""
    targets = list(cfg.get("target_modules", DEFAULT_TARGETS))
    if "out_proj" in targets:
        raise ConfigError(
            "lora.target_modules: out_proj is never used by nn.MultiheadAttention, which reads its "
            "weight directly; target 'attn' and/or the MLP linears 'c_fc', 'c_proj'"
        )
    modules = [t for t in targets if t != "attn"]
    return LoraConfig(
        r=cfg["r"],
        lora_alpha=cfg["alpha"],
        lora_dropout=0.0,
        target_modules=modules or None,
        target_parameters=[ATTENTION_WEIGHT] if "attn" in targets else None,
    )


def _warn_if_merging(adapter_dir: str | Path) -> None:
    """Adapters saved with the whole attention module as a target (clipva before parameter targeting) load
    as peft's MultiheadAttention layer, which rounds half-precision base weights at every forward."""
    try:
        saved = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return  # peft reports a missing or unreadable config itself
    if "attn" in (saved.get("target_modules") or []):
        log.warning(
            "%s: these adapters target the whole attention module, which peft merges into the base "
            "weights and subtracts at every forward (half-precision weights drift); retrain them with this "
            "clipva, which adapts attn.in_proj_weight instead",
            adapter_dir,
        )


def _set_dropout(visual: PeftModel, p: float) -> None:
    for module in visual.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, nn.ModuleDict) and not isinstance(module, ParamWrapper):
            for name in dropouts:
                dropouts[name] = nn.Dropout(p) if p > 0 else nn.Identity()


def add_adapters(encoder: LoadedClip, cfg: dict, adapter_dir: str | Path | None = None) -> PeftModel:
    """Freeze the whole CLIP model and wrap its image tower with LoRA adapters (new, or loaded from
    `adapter_dir` to continue training). Returns the adapted image tower."""
    for p in encoder.model.parameters():
        p.requires_grad_(False)
    # open_clip checkpoints each residual block, so activations are kept for one block at a time
    encoder.model.visual.set_grad_checkpointing(bool(cfg.get("grad_checkpointing", False)))
    try:
        if adapter_dir is not None:
            _warn_if_merging(adapter_dir)
            visual = PeftModel.from_pretrained(encoder.model.visual, str(adapter_dir), is_trainable=True)
        else:
            visual = get_peft_model(encoder.model.visual, lora_config(cfg))
    except ValueError as err:
        raise ConfigError(f"lora.target_modules: {err}") from None
    _set_dropout(visual, cfg["dropout"])
    # adapters train in fp32 even where the base weights are bf16/fp16
    for name, p in visual.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    return visual


def load_adapters(encoder: LoadedClip, adapter_dir: str | Path) -> PeftModel:
    """The image tower with saved adapters, for inference."""
    for p in encoder.model.parameters():
        p.requires_grad_(False)
    _warn_if_merging(adapter_dir)
    visual = PeftModel.from_pretrained(encoder.model.visual, str(adapter_dir), is_trainable=False)
    return visual.eval()


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def encode_frames(visual: nn.Module, images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Image embeddings (float32) of a batch of preprocessed frames through the (adapted) image tower."""
    device = next(visual.parameters()).device
    images = images.to(device, dtype=dtype, non_blocking=True)
    if device.type == "cuda" and dtype != torch.float32:
        with torch.autocast("cuda", dtype=dtype):  # the fp32 adapters compute in the tower's precision
            return visual(images).float()
    return visual(images).float()


NO_ADAPTERS = "NO_ADAPTERS.txt"


def save_adapters(visual: PeftModel | None, adapter_dir: str | Path) -> None:
    """The adapters of a LoRA image tower in peft's own format (adapter_config.json,
    adapter_model.safetensors); for a frozen backbone (None), a note that there are none: every run has the
    folder, so frozen and LoRA runs share one DAG."""
    if visual is not None:
        visual.save_pretrained(str(adapter_dir))
        return
    Path(adapter_dir).mkdir(parents=True, exist_ok=True)
    (Path(adapter_dir) / NO_ADAPTERS).write_text("frozen backbone: this run trains no adapters\n")


def export_merged(model: str, pretrained: str | None, adapter_dir: str | Path, path: str | Path) -> None:
    """Merge the adapters of `adapter_dir` into CLIP `model` (weights `pretrained`) and save the whole state
    dict, loadable again through ``clip.pretrained: <path>``. The merge runs in fp32 on the CPU, whatever
    precision and device the adapters were trained in, so the exported weights carry no half-precision
    rounding."""
    from clipva.encoder import load_clip

    encoder = load_clip(model, pretrained, "fp32", "cpu")
    encoder.model.visual = load_adapters(encoder, adapter_dir).merge_and_unload()
    atomic_save(encoder.model.state_dict(), path)
