"""Deterministic synthetic face-video data set in the exact AFEW-VA layout.

Faces are drawn with PIL from iBUG-68 landmarks, so landmarks and pixels agree. Valence moves the mouth
corners (smile vs frown), mouth width and brow slant; arousal opens eyes and mouth and raises the brows.
Nuisances that carry no label: actor identity, face position, size and in-plane rotation, colours,
background texture and per-frame exposure (the whole-frame mean intensity is set by an auto-exposure
target drawn independently of the labels).

Layout: ``root/001/00000.png ...`` and ``root/001/001.json`` =
``{"actor": ..., "frames": {"00000": {"valence", "arousal", "landmarks"}}, "video_id": "001"}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from clipva.afew import write_afew_clip

_HAIR = np.array([(28, 22, 18), (66, 42, 24), (128, 84, 44), (196, 164, 104), (122, 52, 26), (150, 148, 146)])
_IRIS = np.array([(70, 45, 25), (50, 90, 140), (60, 100, 60), (35, 30, 28)])
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as PIL's convert("L")
_TINT = _LUMA - 1 / 3  # colour shift that moves luma but not the mean over R, G, B
_STREAM_CLIP, _STREAM_ACTOR = 1, 2  # child-generator tags: default_rng((seed, tag, index))


@dataclass(frozen=True)
class _Actor:
    """Persistent face identity, in face units (head spans y = -1 (top) .. 1 (chin), y down)."""

    half_width: float
    jaw_top: float
    eye_x: float
    eye_y: float
    eye_half_width: float
    mouth_y: float
    mouth_half_width: float
    hairline: float
    colours: dict[str, tuple[int, int, int]]  # skin, hair, brow, lip, iris and shades of skin


def _rgb(x) -> tuple[int, int, int]:
    r, g, b = np.clip(np.round(x), 0, 255).astype(int).tolist()
    return r, g, b


def _make_actor(seed: int, index: int) -> _Actor:
    rng = np.random.default_rng((seed, _STREAM_ACTOR, index))
    skin = np.array([238, 204, 178]) + rng.uniform() * np.array([-128, -132, -126]) + rng.normal(0, 6, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] + rng.normal(0, 8, 3)
    lip = skin * np.array([0.82, 0.52, 0.52])
    return _Actor(
        half_width=rng.uniform(0.66, 0.84),
        jaw_top=rng.uniform(-0.25, -0.08),
        eye_x=rng.uniform(0.27, 0.36),
        eye_y=rng.uniform(-0.31, -0.22),
        eye_half_width=rng.uniform(0.11, 0.14),
        mouth_y=rng.uniform(0.50, 0.58),
        mouth_half_width=rng.uniform(0.24, 0.30),
        hairline=rng.uniform(0.6, 0.8),
        colours={
            "skin": _rgb(skin),
            "hair": _rgb(hair),
            "brow": _rgb(np.minimum(hair, skin) * 0.55),
            "lip": _rgb(lip),
            "iris": _rgb(_IRIS[rng.integers(len(_IRIS))]),
            "neck": _rgb(skin * 0.85),
            "contour": _rgb(skin * 0.7),
            "nose": _rgb(skin * 0.75),
            "nostril": _rgb(skin * 0.6),
            "lid": _rgb(skin * 0.55),
            "lip_line": _rgb(lip * 0.6),
            "sclera": (238, 236, 230),
            "lash": (30, 22, 20),
            "mouth": (70, 22, 28),
        },
    )


def _points(x, y) -> np.ndarray:
    """(n, k, 2) points from x and y that broadcast to (n, k)."""
    return np.stack(np.broadcast_arrays(x, y), -1)


def _face_landmarks(actor: _Actor, valence: np.ndarray, arousal: np.ndarray) -> np.ndarray:
    """iBUG-68 landmarks (n, 68, 2) in face units for n frames with labels in -10..10."""
    v = np.asarray(valence, float)[:, None] / 10.0  # -1..1
    a = (np.asarray(arousal, float)[:, None] / 10.0 + 1.0) / 2.0  # 0..1
    hw, y0 = actor.half_width, actor.jaw_top
    opening = 0.01 + 0.22 * a
    t = np.linspace(0.0, np.pi, 17)  # jaw 0-16, subject's right ear -> chin -> left ear; chin drops with mouth
    jaw = _points(-hw * np.cos(t), y0 + (1.0 - y0 + 0.4 * opening) * np.sin(t))

    ex, ey, ew = actor.eye_x, actor.eye_y, actor.eye_half_width
    u = np.linspace(0.0, 1.0, 5)  # brow points outer (u=0) -> inner (u=1)
    brow_x = ex + ew * (1.3 - 2.3 * u)
    brow_y = ey - 0.15 - 0.12 * a - (0.03 + 0.03 * np.maximum(v, 0)) * np.sin(np.pi * u) - 0.07 * v * u**2
    brows = np.concatenate([_points(-brow_x, brow_y), _points(brow_x[::-1], brow_y[:, ::-1])], 1)

    upper, lower = 0.012 + 0.10 * a, 0.008 + 0.07 * a  # eye openness follows arousal
    eye_x = np.array([-1.0, -1 / 3, 1 / 3, 1.0, 1 / 3, -1 / 3]) * ew
    eye_y = ey + np.array([0, -1, -1, 0, 0, 0]) * upper + np.array([0, 0, 0, 0, 1, 1]) * lower
    eyes = np.concatenate([_points(eye_x - ex, eye_y), _points(eye_x + ex, eye_y)], 1)

    nose = np.array(
        [
            [0, ey],
            [0, ey + (0.22 - ey) / 3],
            [0, ey + 2 * (0.22 - ey) / 3],
            [0, 0.22],
            [-0.11, 0.26],
            [-0.055, 0.29],
            [0, 0.30],
            [0.055, 0.29],
            [0.11, 0.26],
        ]
    )
    nose = np.broadcast_to(nose, (len(v), 9, 2))

    mw = actor.mouth_half_width * (1.0 + 0.12 * v)
    corner = -0.16 * v  # corners up (negative y) when smiling

    def lip_line(f, side, thickness):  # f: x as a fraction of the mouth half-width; side -1 upper, 1 lower
        f = np.array(f)
        gap = opening / 2 * np.sqrt(np.clip(1 - (f / 0.85) ** 2, 0, 1))
        return _points(mw * f, actor.mouth_y + corner * f**2 + side * (gap + thickness * np.sqrt(1 - f**2)))

    mouth = [
        lip_line([-1, -0.6, -0.25, 0, 0.25, 0.6, 1], -1, 0.05),
        lip_line([0.6, 0.25, 0, -0.25, -0.6], 1, 0.065),
        lip_line([-0.85, -0.4, 0, 0.4, 0.85], -1, 0.0),
        lip_line([0.4, 0, -0.4], 1, 0.0),
    ]
    return np.concatenate([jaw, brows, nose, eyes, *mouth], 1)


def _head_outlines(actor: _Actor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forehead arc, hair cap and neck+shoulders polygons in face units (not landmarks)."""
    hw, y0 = actor.half_width, actor.jaw_top
    phi = np.linspace(0.0, np.pi, 24)
    forehead = np.stack([hw * np.cos(phi), y0 - (1 + y0) * np.sin(phi)], 1)
    phi_out = np.linspace(-0.15, np.pi + 0.15, 24)
    outer = np.stack([1.07 * hw * np.cos(phi_out), y0 - 1.07 * (1 + y0) * np.sin(phi_out)], 1)
    line = np.stack([hw * np.cos(phi[::-1]), y0 - 0.05 - actor.hairline * (1 + y0) * np.sin(phi[::-1])], 1)
    body = np.array(
        [
            [-0.3 * hw, 0.6],
            [0.3 * hw, 0.6],
            [0.35 * hw, 1.15],
            [1.9 * hw, 1.5],
            [2.2 * hw, 4.0],
            [-2.2 * hw, 4.0],
            [-1.9 * hw, 1.5],
            [-0.35 * hw, 1.15],
        ]
    )
    return forehead, np.concatenate([outer, line]), body


def _wave(rng: np.random.Generator, n: int, amplitude: float, periods: tuple[float, float], k: int = 2) -> np.ndarray:
    """Sum of k slow sinusoids with random periods and phases, overall amplitude ~ `amplitude`."""
    t = np.arange(n)[:, None]
    w = rng.dirichlet(np.ones(k))
    p, ph = rng.uniform(*periods, size=k), rng.uniform(0, 2 * np.pi, size=k)
    return amplitude * (w * np.sin(2 * np.pi * t / p + ph)).sum(1)


@dataclass(frozen=True)
class Dynamics:
    """How labels move, on the -10..10 scale: each clip has a level drawn uniformly in -level..level, smooth
    movement around it (3 sinusoids, overall amplitude drawn in 0.5..1.5 x `movement`, periods drawn
    log-uniformly in period/2..2 x period frames) and step changes (Poisson, `jumps` per 100 frames, sizes
    normal with sd `movement`) as annotators make when an expression sets in."""

    level: float = 5.0
    movement: float = 5.0
    period: float = 30.0
    jumps: float = 0.0

    def __post_init__(self):
        if self.level < 0 or self.movement < 0 or self.period <= 0 or self.jumps < 0:
            raise ValueError(f"demo dynamics need level, movement, jumps >= 0 and period > 0, got {self}")


def _labels(rng: np.random.Generator, n: int, dynamics: Dynamics) -> np.ndarray:
    """Integer trajectory in -10..10 of one dimension of one clip."""
    d = dynamics
    t = np.arange(n)[:, None]
    w = rng.dirichlet(np.ones(3))
    periods = d.period * np.exp(rng.uniform(np.log(0.5), np.log(2.0), 3))
    smooth = (w * np.sin(2 * np.pi * t / periods + rng.uniform(0, 2 * np.pi, 3))).sum(1)
    y = rng.uniform(-d.level, d.level) + rng.uniform(0.5, 1.5) * d.movement * smooth
    steps = rng.poisson(d.jumps / 100, n)
    steps[0] = 0
    y = y + np.cumsum(steps * rng.normal(0, d.movement, n))
    return np.clip(np.round(y), -10, 10).astype(int)


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Clip background: base colour plus smooth noise, stripes or blurred blobs."""
    base = rng.uniform(60, 190) + rng.normal(0, 15, 3)
    kind = rng.integers(3)
    if kind == 0:
        coarse = rng.normal(0, 40, (height // 16 + 2, width // 16 + 2, 3))
        img = Image.fromarray(np.clip(base + coarse, 0, 255).astype(np.uint8))
        return img.resize((width, height), Image.Resampling.BICUBIC)
    y, x = np.mgrid[0:height, 0:width]
    if kind == 1:
        angle, period = rng.uniform(0, np.pi), rng.uniform(8, 30)
        s = np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period)[..., None]
        arr = base + s * rng.uniform(-50, 50, 3)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    img = Image.new("RGB", (width, height), _rgb(base))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(4, 9)):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(8, 0.35 * height)
        draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r], fill=_rgb(base + rng.normal(0, 30, 3)))
    return img.filter(ImageFilter.GaussianBlur(3))


def _flat(pts: np.ndarray) -> list[float]:
    return pts.ravel().tolist()


def _draw_face(
    img: Image.Image,
    lm: np.ndarray,
    outlines: Sequence[np.ndarray],
    scale: float,
    actor: _Actor,
    shirt: tuple[int, int, int],
) -> None:
    """Draw one face (pixel landmarks `lm`, pixel outline polygons) onto `img` in place."""
    forehead, hair, body = outlines
    col, d = actor.colours, ImageDraw.Draw(img)
    d.polygon(_flat(body[2:]), fill=shirt)
    d.polygon(_flat(body[[0, 1, 2, 7]]), fill=col["neck"])
    d.polygon(_flat(np.concatenate([lm[:17], forehead])), fill=col["skin"], outline=col["contour"])
    d.polygon(_flat(hair), fill=col["hair"])
    w = lambda f: max(1, round(f * scale))  # noqa: E731 - stroke width in face units
    for brow in (lm[17:22], lm[22:27]):
        d.line(_flat(brow), fill=col["brow"], width=w(0.06), joint="curve")
    d.line(_flat(lm[27:31]), fill=col["nose"], width=w(0.025))
    d.line(_flat(lm[31:36]), fill=col["nostril"], width=w(0.025))
    for eye in (lm[36:42], lm[42:48]):
        d.polygon(_flat(eye), fill=col["sclera"])
        (x, y), rx = eye.mean(0), 0.055 * scale
        ry = min(rx, 0.45 * (eye[4:6, 1].mean() - eye[1:3, 1].mean()))
        d.ellipse([x - rx, y - ry, x + rx, y + ry], fill=col["iris"])
        d.line(_flat(eye[:4]), fill=col["lash"], width=w(0.03))
        d.line(_flat(eye[[3, 4, 5, 0]]), fill=col["lid"], width=1)
    d.polygon(_flat(lm[48:60]), fill=col["lip"])
    d.polygon(_flat(lm[60:68]), fill=col["mouth"], outline=col["lip_line"])


def _render_clip(
    seed: int, clip_id: int, actor: _Actor, size: tuple[int, int], min_frames: int, max_frames: int, dynamics: Dynamics
) -> tuple[list[Image.Image], dict[int, dict]]:
    """Frames and annotations of one clip; depends only on its arguments."""
    rng = np.random.default_rng((seed, _STREAM_CLIP, clip_id))
    width, height = size
    n = int(rng.integers(min_frames, max_frames + 1))
    valence, arousal = _labels(rng, n, dynamics), _labels(rng, n, dynamics)
    bg = _background(rng, width, height)
    shirt = _rgb(rng.uniform(30, 220) + rng.normal(0, 30, 3))
    scale = height / 2 * (rng.uniform(0.42, 0.6) + _wave(rng, n, 0.06, (40.0, 120.0)))  # head = 2*scale px
    cx = width * (0.5 + rng.uniform(-0.15, 0.15) + _wave(rng, n, 0.06, (30.0, 120.0)))
    cy = height * (0.5 + rng.uniform(-0.06, 0.06) + _wave(rng, n, 0.04, (30.0, 120.0)))
    angle = np.deg2rad(rng.uniform(-7, 7) + _wave(rng, n, 5.0, (30.0, 100.0)))
    # Auto-exposure: both the frame mean over R, G, B and the mean luma follow a label-free target that
    # averages 128 in every clip (so clip-level brightness cannot pair with clip-level labels), plus a slow
    # drift, per-frame flicker and a per-clip colour cast; a tint along _TINT makes the two means agree.
    drift = _wave(rng, n, 12.0, (20.0, 80.0))
    exposure = 128.0 + drift - drift.mean() + rng.normal(0, 10, n)
    cast = rng.normal(0, 5, 3)
    cast -= cast.mean()

    c, s = np.cos(angle), np.sin(angle)
    rot = scale[:, None, None] * np.moveaxis(np.array([[c, -s], [s, c]]), -1, 0)  # (n, 2, 2) face units -> px
    centre = np.stack([cx, cy], 1)
    lms = np.einsum("nkj,nij->nki", _face_landmarks(actor, valence, arousal), rot) + centre[:, None]
    margin, far = 2.0, np.array([width, height]) - 3.0  # keep every landmark inside the frame
    shift = np.maximum(margin - lms.min(1), 0) - np.maximum(lms.max(1) - far, 0)
    lms, centre = lms + shift[:, None], centre + shift
    outlines = [np.einsum("kj,nij->nki", o, rot) + centre[:, None] for o in _head_outlines(actor)]

    frames, annotations = [], {}
    for t, lm in enumerate(lms):
        img = bg.copy()
        _draw_face(img, lm, [o[t] for o in outlines], scale[t], actor, shirt)
        means = np.reshape(img.histogram(), (3, 256)) @ np.arange(256) / (width * height)  # fast channel means
        tint = (means.mean() - _LUMA @ means - _LUMA @ cast) / (_LUMA @ _TINT) * _TINT
        offset = np.round(exposure[t] - means.mean() + cast + tint).astype(int)
        frames.append(img.point(np.clip(np.arange(256) + offset[:, None], 0, 255).ravel().tolist()))
        annotations[t] = {"valence": int(valence[t]), "arousal": int(arousal[t]), "landmarks": np.round(lm, 2).tolist()}
    return frames, annotations


def make_demo(
    root: str | Path,
    n_clips: int = 60,
    n_actors: int = 6,
    min_frames: int = 20,
    max_frames: int = 50,
    frame_sizes: Sequence[tuple[int, int]] = ((160, 128), (192, 144)),
    unlabeled_clips: int = 1,
    seed: int = 0,
    dynamics: Dynamics | Mapping | None = None,
) -> dict:
    """Write a synthetic AFEW-VA-style data set under `root`; same arguments give byte-identical files.

    `frame_sizes` are (width, height); `dynamics` (a Dynamics or its fields) sets how labels move. Injected
    quirks (listed in the result's "quirks"): one frame PNG without an annotation entry, one annotation entry
    without its PNG (the clip's last frame), and the last `unlabeled_clips` clips with ``"frames": {}``. Clip
    k draws from its own generator, so it does not depend on how many clips are made (its actor and frame
    size do). Files of earlier runs are not removed. Returns
    {"root", "n_clips", "n_frames" (PNGs written), "n_labelled_frames" (PNG and label), "n_actors", "quirks"}.
    """
    if not (1 <= min_frames <= max_frames) or n_clips < 0 or n_actors < 1 or not frame_sizes:
        raise ValueError("need 1 <= min_frames <= max_frames, n_clips >= 0, n_actors >= 1, frame_sizes")
    if not isinstance(dynamics, Dynamics):
        dynamics = Dynamics(**(dynamics or {}))
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    actor_of = rng.permutation(np.arange(n_clips) % n_actors)  # every actor gets a clip if n_clips >= n_actors
    size_of = rng.permutation(np.arange(n_clips) % len(frame_sizes))
    actors = [_make_actor(seed, a) for a in range(n_actors)]
    n_labelled = max(n_clips - unlabeled_clips, 0)
    no_annotation_clip = n_labelled // 3 + 1 if n_labelled else None
    no_png_clip = 2 * n_labelled // 3 + 1 if n_labelled >= 2 else None

    quirks, n_frames, n_labelled_frames = [], 0, 0
    for k in range(n_clips):
        clip_id = k + 1
        frames, annotations = _render_clip(
            seed, clip_id, actors[actor_of[k]], tuple(frame_sizes[size_of[k]]), min_frames, max_frames, dynamics
        )
        name = f"{clip_id:03d}"
        if clip_id > n_labelled:
            annotations = {}
            quirks.append(f'clip {name}: unlabeled, all {len(frames)} frames present, "frames": {{}}')
        if clip_id == no_annotation_clip:
            i = len(frames) // 2
            del annotations[i]
            quirks.append(f"clip {name}: frame {i:05d}.png has no annotation entry")
        if clip_id == no_png_clip:
            i = len(frames) - 1
            frames = frames[:-1]
            quirks.append(f"clip {name}: annotation entry {i:05d} has no frame file ({i:05d}.png)")
        write_afew_clip(root, clip_id, frames, annotations, f"actor_{actor_of[k] + 1:02d}")
        n_frames += len(frames)
        n_labelled_frames += len(annotations.keys() & set(range(len(frames))))
    return {
        "root": str(root),
        "n_clips": n_clips,
        "n_frames": n_frames,
        "n_labelled_frames": n_labelled_frames,
        "n_actors": n_actors,
        "quirks": quirks,
    }


if __name__ == "__main__":
    import sys

    print(json.dumps(make_demo(sys.argv[1] if len(sys.argv) > 1 else "demo_data"), indent=1))
