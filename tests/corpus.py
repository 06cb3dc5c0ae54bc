"""A corpus of broken (and odd but valid) AFEW-VA inputs, each written as a tiny data set on disk.

`make_case(name, base)` writes three good clips (001..003) under ``base/afew-va`` plus the one thing case
`name` is about (in clip 004) and returns a `Case`: where the data set is and what indexing must make of
it. `make_corpus(root, names)` puts several clip-level cases into one data set (clips 004, 005, ...), for
end-to-end runs. Frames are 64x48; every clip has the same landmarks, so its crops differ only by pixels.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from clipva.afew import write_afew_clip

W, H = 64, 48
N_FRAMES = 4  # frames of the clip a case writes
GOOD_CLIPS = (1, 2, 3)
BAD_FRAME = 1  # the frame a per-frame case breaks


def face_landmarks() -> list[list[float]]:
    """68 landmarks on a diagonal inside a 64x48 frame (also inside 48x36)."""
    xs = np.linspace(20, 44, 68)
    ys = np.linspace(12, 36, 68)
    return np.stack([xs, ys], 1).round(2).tolist()


def frame_rgb(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Frame i of a clip as (h, w, 3) uint8: gradients that use the whole 0..255 range in each channel."""
    y, x = np.mgrid[0:h, 0:w]
    r = x * 255 // max(w - 1, 1)
    g = y * 255 // max(h - 1, 1)
    b = (x * 7 + y * 13 + 40 * i) % 256
    return np.stack([r, g, b], -1).astype(np.uint8)


def frame_grey(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Frame i as (h, w) uint8 grey levels covering 0..255."""
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 4 + y * 3 + 17 * i) % 256).astype(np.uint8)


def labels_of(n: int) -> dict[int, dict]:
    return {i: {"valence": i - 1, "arousal": 2 * i, "landmarks": face_landmarks()} for i in range(n)}


def write_good_clip(
    root: Path,
    clip_id: int = 1,
    n: int = 3,
    labels: dict | None = None,
    actor: str = "a1",
    images: list[Image.Image] | None = None,
    **kw,
) -> Path:
    """A valid clip folder root/{clip_id:03d} with n RGB frames (or `images`) and labels; returns the folder."""
    if images is None:
        images = [Image.fromarray(frame_rgb(i)) for i in range(n)]
    if labels is None:
        labels = labels_of(len(images))
    return write_afew_clip(root, clip_id, images, labels, actor, **kw)


@dataclass(frozen=True)
class Case:
    """A data set and what indexing it must give."""

    name: str
    root: Path  # the data root to index
    kind: str  # "bad": one fatal problem; "note": handled, listed as a note; "valid": no problem at all
    path: Path | None = None  # the file or folder the problem names
    what: str = ""  # the start of what the message says is wrong
    frame: str | None = None  # the frame, for a problem about one frame ("00001")
    clip: str | None = None  # the clip folder the problem is in: left out whole when frame is None
    skippable: bool = True  # False: there is nothing to index, so 'skip' stops too
    rgb: list[np.ndarray] = field(default_factory=list, compare=False)  # valid images: 8-bit RGB per frame

    @property
    def message(self) -> str:
        """How the problem starts, as BadInputError and the report print it: ``<path> (frame f): <what>``."""
        where = f"{self.path} (frame {self.frame})" if self.frame is not None else str(self.path)
        return f"{where}: {self.what}"


def _folder(root: Path, clip_id: int) -> Path:
    return root / f"{clip_id:03d}"


def _json(root: Path, clip_id: int) -> Path:
    return _folder(root, clip_id) / f"{clip_id:03d}.json"


def _png(root: Path, clip_id: int, frame: int = BAD_FRAME) -> Path:
    return _folder(root, clip_id) / f"{frame:05d}.png"


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _bad_png(name: str, what: str, damage: Callable[[bytes], bytes]) -> Callable[[Path, int], Case]:
    def build(root: Path, clip_id: int) -> Case:
        write_good_clip(root, clip_id, N_FRAMES)
        png = _png(root, clip_id)
        png.write_bytes(damage(png.read_bytes()))
        return Case(name, root, "bad", png, what, f"{BAD_FRAME:05d}", f"{clip_id:03d}")

    return build


def _flip_middle_byte(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0xFF
    return bytes(out)


def scrambled_pixels(data: bytes) -> bytes:
    """A PNG whose chunks are intact (lengths, CRCs) but whose image data is not a zlib stream: it passes
    PIL's verify(), which the index uses, and fails only when decoded, at extraction."""
    out, pos = bytearray(data[:8]), 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IDAT":
            body = bytes((b * 7 + 3) % 256 for b in body)
        out += length.to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        pos += 12 + length
    return bytes(out)


def _bad_json(name: str, what: str, text: str) -> Callable[[Path, int], Case]:
    def build(root: Path, clip_id: int) -> Case:
        write_good_clip(root, clip_id, N_FRAMES)
        _json(root, clip_id).write_text(text)
        return Case(name, root, "bad", _json(root, clip_id), what, None, f"{clip_id:03d}")

    return build


def _bad_label(name: str, what: str, edit: Callable[[dict], None]) -> Callable[[Path, int], Case]:
    """A clip whose label of frame BAD_FRAME is changed by edit(entry)."""

    def build(root: Path, clip_id: int) -> Case:
        labels = labels_of(N_FRAMES)
        edit(labels[BAD_FRAME])
        write_good_clip(root, clip_id, labels=labels)
        return Case(name, root, "bad", _json(root, clip_id), what, f"{BAD_FRAME:05d}", f"{clip_id:03d}")

    return build


def _missing_json(root: Path, clip_id: int) -> Case:
    write_good_clip(root, clip_id, N_FRAMES)
    _json(root, clip_id).unlink()
    return Case("missing_json", root, "bad", _json(root, clip_id), "annotation file is missing", None, f"{clip_id:03d}")


def _label_without_frame(root: Path, clip_id: int) -> Case:
    write_good_clip(root, clip_id, N_FRAMES, labels=labels_of(N_FRAMES + 1))
    return Case(
        "label_without_frame",
        root,
        "note",
        _json(root, clip_id),
        "label without a frame (PNG missing)",
        f"{N_FRAMES:05d}",
        f"{clip_id:03d}",
    )


def _frame_without_label(root: Path, clip_id: int) -> Case:
    labels = labels_of(N_FRAMES)
    del labels[BAD_FRAME]
    write_good_clip(root, clip_id, N_FRAMES, labels=labels)
    return Case(
        "frame_without_label",
        root,
        "note",
        _json(root, clip_id),
        "frame without a label",
        f"{BAD_FRAME:05d}",
        f"{clip_id:03d}",
    )


def _empty_clip_folder(root: Path, clip_id: int) -> Case:
    _folder(root, clip_id).mkdir(parents=True)
    return Case(
        "empty_clip_folder", root, "bad", _folder(root, clip_id), "clip folder has no frames", None, f"{clip_id:03d}"
    )


def _single_frame_clip(root: Path, clip_id: int) -> Case:
    write_good_clip(root, clip_id, 1)
    return Case(
        "single_frame_clip",
        root,
        "note",
        _folder(root, clip_id),
        "clip has a single frame",
        None,
        f"{clip_id:03d}",
        rgb=[frame_rgb(0)],
    )


def _image_mode(name: str, to_image: Callable[[int], Image.Image], rgb: Callable[[int], np.ndarray]):
    """A valid clip whose frames are to_image(i); load_rgb must give rgb(i)."""

    def build(root: Path, clip_id: int) -> Case:
        write_good_clip(root, clip_id, images=[to_image(i) for i in range(N_FRAMES)])
        return Case(name, root, "valid", clip=f"{clip_id:03d}", rgb=[rgb(i) for i in range(N_FRAMES)])

    return build


def _grey_as_rgb(i: int) -> np.ndarray:
    return np.repeat(frame_grey(i)[..., None], 3, axis=-1)


def _rgba(i: int) -> Image.Image:
    """Frame i with an alpha that varies over the frame (load_rgb drops it: the RGB stays as stored)."""
    alpha = (np.arange(W)[None, :].repeat(H, 0) * 4 % 256).astype(np.uint8)
    return Image.fromarray(np.dstack([frame_rgb(i), alpha]))


SIZES = [(64, 48), (80, 60), (48, 36), (64, 48)]


def _frame_sizes_differ(root: Path, clip_id: int) -> Case:
    write_good_clip(root, clip_id, images=[Image.fromarray(frame_rgb(i, w, h)) for i, (w, h) in enumerate(SIZES)])
    return Case(
        "frame_sizes_differ",
        root,
        "valid",
        clip=f"{clip_id:03d}",
        rgb=[frame_rgb(i, w, h) for i, (w, h) in enumerate(SIZES)],
    )


def _duplicate_folder_id(root: Path, clip_id: int) -> Case:
    """Folders 004 and 4: the same clip number twice; the second in sorted order is left out."""
    folder = write_good_clip(root, clip_id, N_FRAMES)
    twin = root / str(clip_id)
    shutil.copytree(folder, twin)
    (twin / folder.name).with_suffix(".json").rename(twin / f"{clip_id}.json")
    _edit_json(twin / f"{clip_id}.json", lambda doc: doc.update(video_id=str(clip_id)))
    return Case(
        "duplicate_folder_id",
        root,
        "bad",
        twin,
        f"duplicate clip id: {clip_id:03d} has the same number",
        None,
        str(clip_id),
    )


def _video_id(name: str, video_id: str) -> Callable[[Path, int], Case]:
    def build(root: Path, clip_id: int) -> Case:
        write_good_clip(root, clip_id, N_FRAMES, video_id=video_id)
        folder = f"{clip_id:03d}"
        what = f"video_id {video_id!r} disagrees with folder {folder!r}"
        return Case(name, root, "bad", _json(root, clip_id), what, None, f"{clip_id:03d}")

    return build


def _frame_links_out(root: Path, clip_id: int) -> Case:
    """Frame BAD_FRAME is a link to a PNG outside the data root: never read."""
    write_good_clip(root, clip_id, N_FRAMES)
    outside = root.parent / f"outside-{clip_id:03d}.png"
    png = _png(root, clip_id)
    png.rename(outside)
    png.symlink_to(outside)
    return Case("frame_links_out", root, "bad", png, "links out of the data root", f"{BAD_FRAME:05d}", f"{clip_id:03d}")


def _clip_folder_links_out(root: Path, clip_id: int) -> Case:
    """The clip folder is a link to a folder outside the data root: never read."""
    elsewhere = write_good_clip(root.parent / f"elsewhere-{clip_id:03d}", clip_id, N_FRAMES)
    _folder(root, clip_id).symlink_to(elsewhere)
    return Case(
        "clip_folder_links_out",
        root,
        "bad",
        _folder(root, clip_id),
        "clip folder links out of the data root",
        None,
        f"{clip_id:03d}",
    )


def _non_ascii_root(root: Path, clip_id: int) -> Case:
    """Good clips under a root whose name has spaces and non-ASCII characters (the others stay unused)."""
    odd = root.with_name("AFEW VA données ü 2")
    for k in (*GOOD_CLIPS, clip_id):
        write_good_clip(odd, k, N_FRAMES)
    return Case("non_ascii_root", odd, "valid", clip=f"{clip_id:03d}")


def _missing_root(root: Path, clip_id: int) -> Case:
    gone = root / "no such folder"
    return Case("missing_root", gone, "bad", gone, "data root does not exist or is not a folder", skippable=False)


def _set(key, value):
    return lambda entry: entry.update({key: value})


def _nan_point(entry: dict) -> None:
    entry["landmarks"][5] = [float("nan"), 20.0]


CASES: dict[str, Callable[[Path, int], Case]] = {
    "truncated_png": _bad_png(
        "truncated_png", "unreadable PNG (OSError: Truncated File Read)", lambda data: data[: len(data) // 2]
    ),
    "corrupt_png": _bad_png(
        "corrupt_png",
        "unreadable PNG (UnidentifiedImageError: cannot identify image file",
        lambda data: np.random.default_rng(0).bytes(len(data)),
    ),
    "png_bad_checksum": _bad_png("png_bad_checksum", "unreadable PNG (SyntaxError: broken PNG file", _flip_middle_byte),
    "missing_json": _missing_json,
    "malformed_json": _bad_json("malformed_json", "malformed JSON", '{"actor": "a1", "frames": {"00000": {'),
    "json_without_frames": _bad_json("json_without_frames", "no 'frames' object", '{"actor": "a1", "video_id": "004"}'),
    "non_numeric_valence": _bad_label(
        "non_numeric_valence", "valence is not a number ('high')", _set("valence", "high")
    ),
    "missing_arousal": _bad_label("missing_arousal", "missing arousal", lambda entry: entry.pop("arousal")),
    "valence_out_of_range": _bad_label("valence_out_of_range", "valence 11 is outside -10..10", _set("valence", 11)),
    "arousal_out_of_range": _bad_label(
        "arousal_out_of_range", "arousal -10.5 is outside -10..10", _set("arousal", -10.5)
    ),
    "nan_landmarks": _bad_label("nan_landmarks", "landmarks contain NaN or infinite values", _nan_point),
    "missing_landmarks": _bad_label("missing_landmarks", "missing landmarks", lambda entry: entry.pop("landmarks")),
    "landmarks_wrong_count": _bad_label(
        "landmarks_wrong_count",
        "landmarks have shape (67, 2), expected (68, 2)",
        lambda entry: entry["landmarks"].pop(),
    ),
    "landmarks_outside_frame": _bad_label(
        "landmarks_outside_frame",
        "landmarks fall outside the 64x48 frame",
        _set("landmarks", (np.array(face_landmarks()) + [80, 0]).tolist()),
    ),
    "label_without_frame": _label_without_frame,
    "frame_without_label": _frame_without_label,
    "empty_clip_folder": _empty_clip_folder,
    "single_frame_clip": _single_frame_clip,
    "grayscale_png": _image_mode("grayscale_png", lambda i: Image.fromarray(frame_grey(i)), _grey_as_rgb),
    "rgba_png": _image_mode("rgba_png", _rgba, frame_rgb),
    "png_16bit": _image_mode(
        "png_16bit", lambda i: Image.fromarray(frame_grey(i).astype(np.uint16) * 257), _grey_as_rgb
    ),
    "frame_sizes_differ": _frame_sizes_differ,
    "duplicate_folder_id": _duplicate_folder_id,
    "video_id_of_another_clip": _video_id("video_id_of_another_clip", "001"),
    "video_id_disagrees": _video_id("video_id_disagrees", "117"),
    "video_id_is_a_path": _video_id("video_id_is_a_path", "../../etc"),
    "frame_links_out": _frame_links_out,
    "clip_folder_links_out": _clip_folder_links_out,
    "non_ascii_root": _non_ascii_root,
    "missing_root": _missing_root,
}


ROOT_CASES = ("non_ascii_root", "missing_root")  # about the data root itself, not one clip of it
CLIP_CASES = [name for name in CASES if name not in ROOT_CASES]  # make_corpus puts them all in one data set


def make_case(name: str, base: Path) -> Case:
    """Good clips 001..003 under base/afew-va plus case `name` in clip 004."""
    root = base / "afew-va"
    for k in GOOD_CLIPS:
        write_good_clip(root, k, N_FRAMES)
    return CASES[name](root, 4)


def make_corpus(root: Path, names: list[str]) -> list[Case]:
    """One data set at root: good clips 001..003 and the clip-level cases `names` in clips 004, 005, ..."""
    for k in GOOD_CLIPS:
        write_good_clip(root, k, N_FRAMES)
    cases = [CASES[name](root, 4 + i) for i, name in enumerate(names)]
    if any(case.root != root for case in cases):
        raise ValueError("make_corpus takes only cases that live in a clip of the data set")
    return cases


def expected_frames(case_or_cases: Case | list[Case]) -> set[tuple[str, int]]:
    """(clip_id, frame) of every PNG on disk that 'skip' keeps: all but those of the bad cases."""
    cases = case_or_cases if isinstance(case_or_cases, list) else [case_or_cases]
    root = cases[0].root
    frames = {
        (folder.name, int(png.stem))
        for folder in root.iterdir()
        if folder.is_dir() and folder.name.isdigit()
        for png in folder.glob("*.png")
    }
    for case in cases:
        if case.kind == "bad":
            frames = {(c, f) for c, f in frames if c != case.clip or (case.frame is not None and f != int(case.frame))}
    return frames
