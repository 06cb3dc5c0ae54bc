"""peft LoRA adapters inside the CLIP image tower.

open_clip's attention is ``nn.MultiheadAttention``, which reads ``out_proj.weight`` directly: a LoRA on
``out_proj`` alone is never used. The default targets are the attention modules themselves (``attn``,
adapted by peft's MultiheadAttention layer) and the MLP linears ``c_fc`` and ``c_proj``. Only the adapters
train: every base weight of the model, the text tower included, is frozen.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from clipva.checkpoints import atomic_save
from clipva.encoder import LoadedClip
from clipva.errors import ConfigError

DEFAULT_TARGETS = ("attn", "c_fc", "c_proj")


def lora_config(cfg: dict) -> LoraConfig:
    targets = list(cfg.get("target_modules", DEFAULT_TARGETS))
    if targets == ["out_proj"]:
        raise ConfigError("lora.target_modules: out_proj alone is never used by nn.MultiheadAttention; "
                          "target 'attn' and/or the MLP linears 'c_fc', 'c_proj'")  # fmt: skip
    return LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=cfg["dropout"], target_modules=targets)


def add_adapters(clip: LoadedClip, cfg: dict, adapter_dir: str | Path | None = None) -> PeftModel:
    """Freeze the whole CLIP model and wrap its image tower with LoRA adapters (new, or loaded from
    `adapter_dir` to continue training). Returns the adapted image tower."""
    for p in clip.model.parameters():
        p.requires_grad_(False)
    try:
        if adapter_dir is not None:
            visual = PeftModel.from_pretrained(clip.model.visual, str(adapter_dir), is_trainable=True)
        else:
            visual = get_peft_model(clip.model.visual, lora_config(cfg))
    except ValueError as err:
        raise ConfigError(f"lora.target_modules: {err}") from None
    # adapters train in fp32 even where the base weights are bf16/fp16
    for name, p in visual.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    return visual


def load_adapters(clip: LoadedClip, adapter_dir: str | Path) -> PeftModel:
    """The image tower with saved adapters, for inference."""
    for p in clip.model.parameters():
        p.requires_grad_(False)
    visual = PeftModel.from_pretrained(clip.model.visual, str(adapter_dir), is_trainable=False)
    return visual.eval()


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def encode_frames(visual: nn.Module, images: torch.Tensor, dtype: torch.dtype, checkpointing: bool = False):
    """Image embeddings (float32) of a batch of preprocessed frames through the (adapted) image tower."""
    device = next(visual.parameters()).device
    images = images.to(device, dtype=dtype, non_blocking=True)
    if device.type == "cuda" and dtype != torch.float32:
        with torch.autocast("cuda", dtype=dtype):
            out = _forward(visual, images, checkpointing)
    else:
        out = _forward(visual, images, checkpointing)
    return out.float()


def _forward(visual: nn.Module, images: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    if checkpointing and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(visual, images, use_reentrant=False)
    return visual(images)


def save_adapters(visual: PeftModel, adapter_dir: str | Path) -> None:
    """peft's own format: adapter_config.json and adapter_model.safetensors."""
    visual.save_pretrained(str(adapter_dir))


NO_ADAPTERS = "NO_ADAPTERS.txt"


def save_no_adapters(adapter_dir: str | Path) -> None:
    """The adapter folder of a frozen-backbone run: a note that there are none (every run has the folder, so
    frozen and LoRA runs share one DAG)."""
    Path(adapter_dir).mkdir(parents=True, exist_ok=True)
    (Path(adapter_dir) / NO_ADAPTERS).write_text("frozen backbone: this run trains no adapters\n")


def export_merged(clip: LoadedClip, visual: PeftModel, path: str | Path) -> None:
    """Merge the adapters into the base weights and save the whole CLIP state dict, loadable again
    through ``clip.pretrained: <path>``."""
    merged = visual.merge_and_unload()
    clip.model.visual = merged
    atomic_save({k: v.float() for k, v in clip.model.state_dict().items()}, path)
