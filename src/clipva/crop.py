"""Face crops: a square box around the annotated landmarks, with a margin."""

from __future__ import annotations

import math

from PIL import Image


def square_box(x0: float, y0: float, x1: float, y1: float, margin: float) -> tuple[int, int, int, int]:
    """A square around the landmark box (x0, y0, x1, y1), each side enlarged by `margin` of its size."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0, 1.0) * (1 + 2 * margin)
    left, top = math.floor(cx - side / 2), math.floor(cy - side / 2)
    size = math.ceil(side)
    return left, top, left + size, top + size


def crop_face(image: Image.Image, box: tuple[float, float, float, float] | None, margin: float) -> Image.Image:
    """Crop the face square; parts outside the frame are filled with black. box None -> whole frame."""
    if box is None or any(math.isnan(v) for v in box):
        return image
    return image.crop(square_box(*box, margin))
