"""Where the temporal head's frame features come from during training.

- `CachedFeatures`: the frozen CLIP features of the HDF5 store (fast, any device).
- `AdaptedFrames`: face crops streamed from the frames through the CLIP image tower with trainable LoRA
  adapters (end to end); the labels and frame indices still come from the store.
Both yield the same batches (x, y, mask), so the training loops are shared.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from clipva.encoder import LoadedClip
from clipva.errors import ConfigError
from clipva.extract import decode_workers
from clipva.frames import FrameWindows
from clipva.lora import encode_frames, trainable_parameters
from clipva.sequences import collate
from clipva.store import ClipFeatures


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


class CachedFeatures:
    """The frozen backbone: features read from the store."""

    lr = 0.0

    def trainable(self) -> list[torch.nn.Parameter]:
        return []

    def train(self, mode: bool = True) -> None:
        pass

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cpu", enabled=False)

    def epoch_batches(
        self, clips: list[ClipFeatures], batches: list[list], epoch: int, device: torch.device
    ) -> Iterator[dict]:
        for windows in batches:
            yield _to(collate(clips, windows), device)

    def features_of(self, clips: list[ClipFeatures]) -> list[np.ndarray]:
        return [c.features for c in clips]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _concat_frames(windows: list[torch.Tensor]) -> torch.Tensor:
    """DataLoader collate: the frames of a batch's windows, concatenated (no padding goes through the tower)."""
    return torch.cat(windows)


def activation_bytes_per_frame(visual: torch.nn.Module, checkpointing: bool) -> int:
    """Estimated memory one frame keeps for the backward pass of a ViT image tower: about 24 bytes per token
    and channel in each block (ViT-B-32 on CPU: 11 MB a frame); with per-block checkpointing, each block's
    input plus one block's activations."""
    tower = getattr(visual, "get_base_model", lambda: visual)()
    if not hasattr(tower, "grid_size") or not hasattr(tower, "transformer"):
        raise ConfigError(
            f"lora.max_frames_per_step: auto knows the memory of ViT image towers only, not "
            f"{type(tower).__name__}; set a number of frames"
        )
    grid = tower.grid_size
    tokens, width, layers = grid[0] * grid[1] + 1, tower.transformer.width, tower.transformer.layers
    return tokens * width * (4 * layers + 24 if checkpointing else 24 * layers)


def available_memory(device: torch.device) -> int:
    """Bytes free for activations: the GPU's free memory on CUDA, else the RAM the kernel reports available."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 4 << 30


def frame_budget(setting: int | str, visual: torch.nn.Module, device: torch.device, checkpointing: bool) -> int:
    """lora.max_frames_per_step: `setting`, or for ``auto`` what memory allows: 70% of the GPU's free memory,
    a quarter of the available RAM on CPU (shared with the decoding workers and the rest of the machine)."""
    if setting != "auto":
        return int(setting)
    share = 0.7 if device.type == "cuda" else 0.25
    return max(1, int(share * available_memory(device) / activation_bytes_per_frame(visual, checkpointing)))


class AdaptedFrames:
    """The image tower with LoRA adapters, run on face crops decoded by DataLoader workers."""

    def __init__(self, encoder: LoadedClip, visual: torch.nn.Module, frames: pd.DataFrame, face_crop: dict, cfg: dict):
        """`visual` is clip's image tower with adapters; crops use clip's preprocessing, frames its precision."""
        self.encoder, self.visual, self.face_crop = encoder, visual, face_crop
        self.frames = frames.set_index(["clip_id", "frame"]).sort_index()  # once, not per loader
        self.preprocess, self.dtype, self.device = encoder.preprocess, encoder.dtype, encoder.device
        self.lr, self.cfg = cfg["lr"], cfg
        self.workers = decode_workers(cfg["num_workers"], torch.get_num_threads(), self.device)
        self.max_frames = frame_budget(cfg["max_frames_per_step"], visual, self.device, cfg["grad_checkpointing"])
        self._cache: dict[str, np.ndarray] = {}

    def trainable(self) -> list[torch.nn.Parameter]:
        return trainable_parameters(self.visual)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 activations underflow small adapter gradients: scale the loss (bf16 has fp32's range). Elsewhere
        the scaler is disabled and steps as the optimizer alone."""
        fp16_on_gpu = self.device.type == "cuda" and self.dtype == torch.float16
        return torch.amp.GradScaler(self.device.type, enabled=fp16_on_gpu)

    def train(self, mode: bool = True) -> None:
        self.visual.train(mode)
        if mode:
            self._cache.clear()  # the adapters are about to change

    def _loader(
        self, windows: list[tuple[str, np.ndarray]], batches: list[list[int]], augment: dict | None, seed: int
    ) -> DataLoader:
        """Yields, per list of window indices in `batches`, the windows' preprocessed frames concatenated."""
        dataset = FrameWindows(self.frames, windows, self.preprocess, self.face_crop, augment, seed)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=_concat_frames,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda" and torch.cuda.is_available(),
            prefetch_factor=2 if self.workers else None,
        )

    def epoch_batches(
        self, clips: list[ClipFeatures], batches: list[list], epoch: int, device: torch.device
    ) -> Iterator[dict]:
        """The windows of each batch go through the tower as one stack of their real frames (padding is
        added after); each batch's frames are decoded by the workers while the previous batch trains."""
        flat = [(clips[i].clip_id, clips[i].frame_index[a:b]) for windows in batches for i, a, b in windows]
        most = max(sum(b - a for _, a, b in windows) for windows in batches)
        if most > self.max_frames:
            raise ConfigError(
                f"lora: a step would run {most} frames through the image tower (windows per batch x window "
                f"length), more than lora.max_frames_per_step={self.max_frames}; lower the stage's batch_size "
                "(raise its accumulate to keep the effective batch) or head.window, or raise the limit where "
                "memory allows"
            )
        augment = self.cfg["augment"] if self.visual.training else None
        starts = np.cumsum([0] + [len(w) for w in batches])
        groups = [list(range(starts[k], starts[k + 1])) for k in range(len(batches))]
        frames = iter(self._loader(flat, groups, augment, seed=self.cfg["seed"] * 100_003 + epoch))
        for windows in batches:
            host = collate(clips, windows)
            del host["x"]  # the stored features are replaced by the tower's
            batch = _to(host, device)
            features = encode_frames(self.visual, next(frames), self.dtype)
            x = features.new_zeros(*batch["mask"].shape, features.shape[-1])
            x[batch["mask"]] = features
            batch["x"] = x
            yield batch

    @torch.no_grad()
    def features_of(self, clips: list[ClipFeatures]) -> list[np.ndarray]:
        """Features of every frame of `clips` through the adapted tower, decoded by one loader for all clips
        (cached until the adapters next train)."""
        chunk = 64
        todo = list({c.clip_id: c for c in clips if c.clip_id not in self._cache}.values())
        windows = [(c.clip_id, c.frame_index[s : s + chunk]) for c in todo for s in range(0, len(c.frame_index), chunk)]
        if windows:
            parts: dict[str, list[np.ndarray]] = {}
            loader = self._loader(windows, [[k] for k in range(len(windows))], None, 0)
            for (clip_id, _), images in zip(windows, loader, strict=True):
                parts.setdefault(clip_id, []).append(encode_frames(self.visual, images, self.dtype).cpu().numpy())
            self._cache.update({k: np.concatenate(v) for k, v in parts.items()})
        return [self._cache[c.clip_id] for c in clips]

    def state_dict(self) -> dict:
        return {k: v for k, v in self.visual.state_dict().items() if "lora_" in k}

    def load_state_dict(self, state: dict) -> None:
        missing = set(state) - set(self.visual.state_dict())
        if missing:
            raise KeyError(f"adapter weights {sorted(missing)[:3]} do not fit this model")
        self.visual.load_state_dict(state, strict=False)
        self._cache.clear()


def lora_backbone(
    clip_settings: dict,
    lora: dict,
    face_crop: dict,
    frames_csv: str,
    adapter_dir: str | None = None,
    trainable: bool = True,
) -> AdaptedFrames:
    """CLIP (the config's ``clip`` section) with LoRA adapters (``lora``) over the frames of `frames_csv`
    cropped by ``face_crop``: new adapters, or those of `adapter_dir` (trained further, or frozen for
    inference)."""
    from clipva.afew import read_frames
    from clipva.encoder import load_clip_from
    from clipva.lora import add_adapters, load_adapters

    encoder = load_clip_from(clip_settings)
    visual = add_adapters(encoder, lora, adapter_dir) if trainable else load_adapters(encoder, adapter_dir)
    return AdaptedFrames(encoder, visual.to(encoder.device), read_frames(frames_csv), face_crop, lora)


def backbone_of(
    settings: dict,
    frames_csv: str | None,
    adapter_dir: str | None = None,
    trainable: bool = True,
    centre: str = "none",
) -> AdaptedFrames | None:
    """The backbone a run's settings name ({"backbone": "frozen"}, or "lora" with the clip, lora and face_crop
    sections): None for the store's cached features, else `lora_backbone` over `frames_csv`. A head's
    `centre` other than none is refused with LoRA: it centres the store's frozen features, and a LoRA run's
    come through its adapters."""
    if settings["backbone"] != "lora":
        return None
    if centre != "none":
        raise ConfigError(f"head.centre: {centre} centres the cached frozen features; a LoRA run cannot use it")
    return lora_backbone(settings["clip"], settings["lora"], settings["face_crop"], frames_csv, adapter_dir, trainable)
