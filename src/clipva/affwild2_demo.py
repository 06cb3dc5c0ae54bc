"""A tiny synthetic data set in Aff-Wild2's layout (clipva.affwild2), drawn by the AFEW-VA demo's renderer.

Each video shows one drawn person (its own identity); the first `n_pairs` videos are filmed pairs, written
as `<name>_left` and `<name>_right` of the same length. Crops are aligned as Aff-Wild2's are: a square
around the landmarks, resized to `size` x `size`. Videos are assigned to Train_Set, Validation_Set and the
test list by video name (a pair in one set). Quirks of the real data are injected and listed in the
result: runs of frames without a face crop, rows marked -5, and crop folders of videos outside the VA track.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from clipva.affwild2 import ANNOTATIONS, CROPS, HEADER, SAMPLE_HEADER, SETS
from clipva.crop import square_box
from clipva.demo import Dynamics, _make_actor, _render_clip

_STREAM_SPLIT = 3
SOURCE_SIZE = (160, 128)  # frames are drawn at this size, then the face is cropped and resized


def _aligned(frame: Image.Image, landmarks: list, size: int) -> Image.Image:
    points = np.asarray(landmarks)
    box = square_box(*points.min(0), *points.max(0), margin=0.2)
    return frame.crop(box).resize((size, size), Image.Resampling.BILINEAR)


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_affwild2_demo(
    root: str | Path,
    n_videos: int = 24,
    n_pairs: int = 2,
    min_frames: int = 30,
    max_frames: int = 60,
    size: int = 112,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    other_videos: int = 1,
    faceless: bool = True,
    seed: int = 0,
    dynamics: Dynamics | Mapping | None = None,
) -> dict:
    """Write the data set under `root`: annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/*.txt,
    cropped_aligned/<video>/%05d.jpg, and test_set.txt (the test videos as the release's sample prediction file:
    a row per frame, no annotations).

    With `faceless`, one more validation and one more test video have frames but no face crop at all (no
    crop folder), as a video where the detector never found a face.

    Returns {"root", "videos": {name: {"set", "n_frames", "no_face", "unannotated"}}, "test_list", "quirks"}.
    """
    if not (1 <= min_frames <= max_frames) or n_videos < 3 or not 0 <= 2 * n_pairs <= n_videos:
        raise ValueError("need 1 <= min_frames <= max_frames, n_videos >= 3 and 2 * n_pairs <= n_videos")
    if not isinstance(dynamics, Dynamics):
        dynamics = Dynamics(**(dynamics or {}))
    root = Path(root)
    bases = [f"{k + 1}-30-{SOURCE_SIZE[0]}x{SOURCE_SIZE[1]}" for k in range(n_videos - n_pairs)]
    names_of = {b: ([f"{b}_left", f"{b}_right"] if k < n_pairs else [b]) for k, b in enumerate(bases)}
    order = np.random.default_rng((seed, _STREAM_SPLIT)).permutation(len(bases))
    n_train = max(1, round(fractions[0] * len(bases)))
    n_val = max(1, round(fractions[1] * len(bases)))
    set_of = {}
    for rank, k in enumerate(order):
        set_of[bases[k]] = SETS[0] if rank < n_train else SETS[1] if rank < n_train + n_val else "Test_Set"
    for subset in SETS:
        (root / ANNOTATIONS / subset).mkdir(parents=True, exist_ok=True)

    videos, quirks, index = {}, [], 0
    for base in bases:
        length = None
        for name in names_of[base]:
            index += 1
            lo, hi = (length, length) if length else (min_frames, max_frames)
            frames, annotations = _render_clip(seed, index, _make_actor(seed, index), SOURCE_SIZE, lo, hi, dynamics)
            length = len(frames)
            subset = set_of[base]
            no_face, unannotated = [], []
            if index % 3 == 0 and length > 8:  # the face is lost for 3 frames in the middle
                no_face = list(range(length // 2, length // 2 + 3))
            if index % 4 == 1 and subset != "Test_Set":  # the annotators skipped the first two frames
                unannotated = [0, 1]
            folder = root / CROPS / name
            folder.mkdir(parents=True, exist_ok=True)
            for t, frame in enumerate(frames):
                if t not in no_face:
                    crop = _aligned(frame, annotations[t]["landmarks"], size)
                    (folder / f"{t + 1:05d}.jpg").write_bytes(_jpeg(crop))
            if subset != "Test_Set":
                lines = [HEADER]
                for t in range(length):
                    a = annotations[t]
                    lines.append("-5,-5" if t in unannotated else f"{a['valence'] / 10:.3f},{a['arousal'] / 10:.3f}")
                (root / ANNOTATIONS / subset / f"{name}.txt").write_text("\n".join(lines) + "\n")
            videos[name] = {
                "set": subset,
                "n_frames": length,
                "no_face": [t + 1 for t in no_face],
                "unannotated": [t + 1 for t in unannotated],
            }
            if no_face:
                quirks.append(f"{name}: frames {no_face[0] + 1}-{no_face[-1] + 1} have no face crop")
            if unannotated:
                quirks.append(f"{name}: frames 1-2 are marked -5")
    for j, subset in enumerate((SETS[1], "Test_Set") if faceless else ()):  # after the others: they stay as they are
        name = f"{len(bases) + j + 1}-30-{SOURCE_SIZE[0]}x{SOURCE_SIZE[1]}"
        actor = _make_actor(seed, 20_000 + j)
        _, annotations = _render_clip(seed, 20_000 + j, actor, SOURCE_SIZE, min_frames, max_frames, dynamics)
        n = len(annotations)
        if subset != "Test_Set":
            rows = [f"{annotations[t]['valence'] / 10:.3f},{annotations[t]['arousal'] / 10:.3f}" for t in range(n)]
            (root / ANNOTATIONS / subset / f"{name}.txt").write_text("\n".join([HEADER, *rows]) + "\n")
        videos[name] = {"set": subset, "n_frames": n, "no_face": list(range(1, n + 1)), "unannotated": []}
        quirks.append(f"{name}: no face crop at all")
    for j in range(other_videos):  # a video of another ABAW track: crops, no VA annotation
        folder = root / CROPS / f"other-track-{j + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        frames, annotations = _render_clip(seed, 10_000 + j, _make_actor(seed, 10_000 + j), SOURCE_SIZE, 4, 4, dynamics)
        for t, frame in enumerate(frames):
            (folder / f"{t + 1:05d}.jpg").write_bytes(_jpeg(_aligned(frame, annotations[t]["landmarks"], size)))
        quirks.append(f"other-track-{j + 1}: crops of a video outside the VA track")
    # the test list as the challenge releases it: a sample prediction file, one row per frame of each video
    test = [(n, v["n_frames"]) for n, v in sorted(videos.items()) if v["set"] == "Test_Set"]
    rows = [f"{n}/{t:05d}.jpg,," for n, length in test for t in range(1, length + 1)]
    (root / "test_set.txt").write_text("\n".join([SAMPLE_HEADER, *rows]) + "\n")
    return {"root": str(root), "videos": videos, "test_list": str(root / "test_set.txt"), "quirks": quirks}
