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

    def epoch_batches(self, clips: list[ClipFeatures], batches: list[list], epoch: int,
                      device: torch.device) -> Iterator[dict]:  # fmt: skip
        for windows in batches:
            yield _to(collate(clips, windows), device)

    def clip_features(self, clip: ClipFeatures) -> np.ndarray:
        return clip.features

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class AdaptedFrames:
    """The image tower with LoRA adapters, run on face crops decoded by DataLoader workers."""

    def __init__(self, clip: LoadedClip, visual: torch.nn.Module, frames: pd.DataFrame, face_crop: dict, cfg: dict):
        """`visual` is clip's image tower with adapters; crops use clip's preprocessing, frames its precision."""
        self.clip, self.visual, self.frames, self.face_crop = clip, visual, frames, face_crop
        self.preprocess, self.dtype = clip.preprocess, clip.dtype
        self.lr, self.cfg = cfg["lr"], cfg
        self._cache: dict[str, np.ndarray] = {}

    def trainable(self) -> list[torch.nn.Parameter]:
        return trainable_parameters(self.visual)

    def train(self, mode: bool = True) -> None:
        self.visual.train(mode)
        self._cache.clear()  # features change with every step

    def _loader(self, windows: list[tuple[str, np.ndarray]], batch_size: int, augment: dict | None,
                seed: int) -> DataLoader:  # fmt: skip
        dataset = FrameWindows(self.frames, windows, self.preprocess, self.face_crop, augment, seed)
        workers = self.cfg["num_workers"]
        return DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=torch.cuda.is_available(),
                          prefetch_factor=2 if workers else None)  # fmt: skip

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        b, t = images.shape[:2]
        x = encode_frames(self.visual, images.flatten(0, 1), self.dtype, self.cfg["grad_checkpointing"])
        return x.view(b, t, -1)

    def epoch_batches(self, clips: list[ClipFeatures], batches: list[list], epoch: int,
                      device: torch.device) -> Iterator[dict]:  # fmt: skip
        """Batches of equal-length windows are stacked; each batch's frames are decoded by the workers
        while the previous batch trains."""
        flat = [(clips[i].clip_id, clips[i].frame_index[a:b]) for windows in batches for i, a, b in windows]
        length = max(len(f) for _, f in flat)
        most = max(len(w) for w in batches) * length
        if most > self.cfg["max_frames_per_step"]:
            raise ConfigError(
                f"lora: a step would run {most} frames through the image tower (windows per batch x window "
                f"length), more than lora.max_frames_per_step={self.cfg['max_frames_per_step']}; lower the "
                "stage's batch_size (raise its accumulate to keep the effective batch) or head.window, or "
                "raise the limit where memory allows"
            )
        augment = self.cfg["augment"] if self.visual.training else None
        loader = self._loader(flat, 1, augment, seed=self.cfg["seed"] * 100_003 + epoch)
        it = iter(loader)
        for windows in batches:
            batch = _to(collate(clips, windows), device)
            frames = [next(it)[0] for _ in windows]
            images = torch.zeros(len(windows), length, *frames[0].shape[1:])
            for k, f in enumerate(frames):
                images[k, : len(f)] = f
            batch["x"] = self._encode(images[:, : batch["mask"].shape[1]])
            yield batch

    @torch.no_grad()
    def clip_features(self, clip: ClipFeatures) -> np.ndarray:
        """Features of every frame of a clip through the adapted tower (cached until the next train step)."""
        if clip.clip_id not in self._cache:
            chunk = 64
            windows = [(clip.clip_id, clip.frame_index[s : s + chunk]) for s in range(0, len(clip.frame_index), chunk)]
            parts = [self._encode(images).squeeze(0).cpu().numpy() for images in self._loader(windows, 1, None, 0)]
            self._cache[clip.clip_id] = np.concatenate(parts)
        return self._cache[clip.clip_id]

    def state_dict(self) -> dict:
        return {k: v for k, v in self.visual.state_dict().items() if "lora_" in k}

    def load_state_dict(self, state: dict) -> None:
        missing = set(state) - set(self.visual.state_dict())
        if missing:
            raise KeyError(f"adapter weights {sorted(missing)[:3]} do not fit this model")
        self.visual.load_state_dict(state, strict=False)


def lora_backbone(settings: dict, frames_csv: str, adapter_dir: str | None = None,
                  trainable: bool = True) -> AdaptedFrames:  # fmt: skip
    """The LoRA backbone of a training rule's params (``backbone``: lora, clip, face_crop sections): new
    adapters, or those of `adapter_dir` (trained further, or frozen for inference)."""
    from clipva.afew import read_frames
    from clipva.encoder import load_clip
    from clipva.lora import add_adapters, load_adapters

    clip = load_clip(settings["clip"]["model"], settings["clip"]["pretrained"], settings["clip"]["precision"])
    if trainable:
        visual = add_adapters(clip, settings["lora"], adapter_dir)
    else:
        visual = load_adapters(clip, adapter_dir)
    return AdaptedFrames(clip, visual.to(clip.device), read_frames(frames_csv), settings["face_crop"], settings["lora"])
