"""Windows of consecutive face crops, decoded in DataLoader workers, with light augmentation for training.

Used by the LoRA path, which adapts the image tower end to end and so reads frames instead of features.
The crop and preprocessing are those of feature extraction; augmentation (crop jitter, horizontal flip,
colour) is drawn once per window, so a window stays temporally consistent, from (seed, epoch, item).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset

from clipva.afew import BOX_COLUMNS
from clipva.crop import crop_face, crop_margin, load_rgb


class FrameWindows(Dataset):
    """Item i -> (T, 3, H, W) preprocessed crops of window i: (clip_id, frame indices)."""

    def __init__(
        self,
        frames: pd.DataFrame,
        windows: list[tuple[str, np.ndarray]],
        preprocess,
        face_crop: dict,
        augment: dict | None = None,
        seed: int = 0,
    ):
        """`frames`: the index's frame table, or the same indexed by (clip_id, frame) and sorted (reused
        across loaders)."""
        indexed = list(frames.index.names) == ["clip_id", "frame"]
        table = frames if indexed else frames.set_index(["clip_id", "frame"]).sort_index()
        self.items = []
        self.preprocess, self.margin = preprocess, crop_margin(face_crop)
        for clip_id, indices in windows:
            rows = table.loc[[(clip_id, int(i)) for i in indices]]
            boxes = None if self.margin is None else rows[BOX_COLUMNS].to_numpy(dtype=np.float64)
            self.items.append((rows["path"].tolist(), boxes))
        self.augment, self.seed = augment, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        paths, boxes = self.items[i]
        rng = np.random.default_rng([self.seed, i])
        aug = self._draw(rng) if self.augment else None
        out = []
        for k, path in enumerate(paths):
            image = load_rgb(path)
            box = None if boxes is None else boxes[k]
            if aug is not None and box is not None:
                box = _jitter(box, aug["shift"], aug["scale"])
            image = crop_face(image, None if box is None else tuple(box), self.margin)
            if aug is not None:
                image = TF.adjust_brightness(image, aug["brightness"])
                image = TF.adjust_contrast(image, aug["contrast"])
                image = TF.adjust_saturation(image, aug["saturation"])
                if aug["flip"]:
                    image = TF.hflip(image)
            out.append(self.preprocess(image))
        return torch.stack(out)

    def _draw(self, rng: np.random.Generator) -> dict:
        a = self.augment
        return {
            "shift": rng.uniform(-a["crop_jitter"], a["crop_jitter"], 2),
            "scale": 1 + rng.uniform(-a["crop_jitter"], a["crop_jitter"]),
            "flip": bool(a["flip"] and rng.random() < 0.5),
            "brightness": 1 + rng.uniform(-a["colour"], a["colour"]),
            "contrast": 1 + rng.uniform(-a["colour"], a["colour"]),
            "saturation": 1 + rng.uniform(-a["colour"], a["colour"]),
        }


def _jitter(box: np.ndarray, shift: np.ndarray, scale: float) -> np.ndarray:
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * scale, (y1 - y0) * scale
    cx, cy = cx + shift[0] * w, cy + shift[1] * h
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
