"""Frames as 8-bit RGB, whatever their PNG mode, and face crops: a square box around the landmarks."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pyspng
from PIL import Image

from clipva.errors import BadInputError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_rgb(path: str | Path) -> Image.Image:
    """Decode one frame into an 8-bit RGB image; raises BadInputError naming `path` if it cannot be decoded.

    PNG frames are decoded by libspng (pyspng), faster than PIL (benchmarks/extraction.py times both;
    benchmarks/README.md has the figures), with the same pixels: grey (1, L), palette (P) and colour
    frames become RGB, an alpha channel (LA, RGBA, a palette or grey transparency) is dropped, not
    composited (video frames are opaque, and the colour under the alpha is kept as stored), and 16-bit
    samples keep their high byte (v >> 8), which gives back exactly an 8-bit frame saved as v * 257 or
    v * 256. A frame that is not a PNG, or that libspng refuses (a broken or truncated file), goes to PIL,
    which applies the same rules, decodes what it can and raises for the rest.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise BadInputError(f"{path}: cannot decode frame ({type(err).__name__}: {err})") from None
    if data.startswith(_PNG_SIGNATURE):
        try:
            return Image.fromarray(pyspng.load(data, format="RGB"), "RGB")
        except RuntimeError:
            pass  # PIL decides: it decodes what it can, or raises naming the file
    return _load_rgb_pil(io.BytesIO(data), path)


def _load_rgb_pil(source, path: str | Path) -> Image.Image:
    """PIL's decoding of load_rgb: PIL's own conversion, except for 16-bit grey (I;16, I;16B, and I, as
    which some Pillow versions open it), whose high byte is kept; PIL's convert("RGB") would instead clip
    every value above 255 to white."""
    try:
        with Image.open(source) as img:
            if img.mode.startswith("I"):
                grey = np.clip(np.asarray(img).astype(np.int64), 0, 65535) >> 8
                return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
            return img.convert("RGB")
    except Exception as err:  # PIL raises many types for broken files
        raise BadInputError(f"{path}: cannot decode frame ({type(err).__name__}: {err})") from None


def square_box(x0: float, y0: float, x1: float, y1: float, margin: float) -> tuple[int, int, int, int]:
    """A square around the landmark box (x0, y0, x1, y1), each side enlarged by `margin` of its size."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0, 1.0) * (1 + 2 * margin)
    left, top = math.floor(cx - side / 2), math.floor(cy - side / 2)
    size = math.ceil(side)
    return left, top, left + size, top + size


def crop_margin(face_crop: dict) -> float | None:
    """The face-crop policy of a config's ``face_crop`` section, in one place: the margin around the face box
    (methods ``landmarks`` and ``detector``), or None when frames are used whole (``none``)."""
    return None if face_crop["method"] == "none" else float(face_crop.get("margin", 0.0))


def crop_face(image: Image.Image, box: tuple[float, float, float, float] | None, margin: float) -> Image.Image:
    """Crop the face square; parts outside the frame are filled with black. box None -> whole frame."""
    if box is None or any(math.isnan(v) for v in box):
        return image
    return image.crop(square_box(*box, margin))
