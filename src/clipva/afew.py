"""A data set in the AFEW-VA layout (``001/00000.png`` frames, ``001/001.json`` labels): reading and writing.

The index is one pass over every clip. Each problem found is a `Problem`: fatal ones make the clip or frame
unusable (with ``on_bad_input: error`` the run stops on the first; with ``skip`` the clip or frame is left
out), notes are quirks of the real data (a frame without a label, a label without a frame) that are listed
in the validation report and handled.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clipva.atomic import write_text
from clipva.errors import BadInputError

N_LANDMARKS = 68
VA_RANGE = (-10, 10)
# Frame and clip numbers: AFEW-VA uses 5 and 3 digits; more than 9 is not a number this reader trusts.
FRAME_RE = re.compile(r"^(\d{1,9})\.png$", re.ASCII)
CLIP_RE = re.compile(r"^\d{1,9}$", re.ASCII)
FRAME_KEY_RE = CLIP_RE
MAX_LABEL_FILE_BYTES = 256 * 2**20  # a label file larger than this is refused, not read into memory
# Landmarks may stray this far (fraction of the frame size) outside the frame before it is an error.
LANDMARK_TOLERANCE = 0.05

# The face box of a frame in frames.csv (pixels: left, top, right, bottom), from its landmarks
BOX_COLUMNS = ["box_x0", "box_y0", "box_x1", "box_y1"]
FRAME_COLUMNS = [
    "clip_id",
    "actor",
    "frame",
    "path",
    "width",
    "height",
    "labeled",
    "valence",
    "arousal",
    *BOX_COLUMNS,
    "box_source",
]


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    frame: str | None = None
    fatal: bool = True

    def __str__(self) -> str:
        where = f"{self.path} (frame {self.frame})" if self.frame is not None else self.path
        return f"{where}: {self.message}"


def _label(value: object, key: str) -> tuple[float | None, str | None]:
    if value is None:
        return None, f"missing {key}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"{key} is not a number ({short_repr(value)})"
    if isinstance(value, int) and abs(value) > 10**6:  # also ints too large for a float
        return None, f"{key} {short_repr(value)} is outside {VA_RANGE[0]}..{VA_RANGE[1]}"
    if not math.isfinite(value):
        return None, f"{key} is not finite ({value!r})"
    if not VA_RANGE[0] <= value <= VA_RANGE[1]:
        return None, f"{key} {value} is outside {VA_RANGE[0]}..{VA_RANGE[1]}"
    return float(value), None


def _landmarks(value: object, width: int, height: int) -> tuple[np.ndarray | None, str | None]:
    if value is None:
        return None, "missing landmarks"
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range
        return None, "landmarks are not a list of [x, y] numbers"
    if points.shape != (N_LANDMARKS, 2):
        return None, f"landmarks have shape {points.shape}, expected ({N_LANDMARKS}, 2)"
    if not np.isfinite(points).all():
        return None, "landmarks contain NaN or infinite values"
    tol_x, tol_y = LANDMARK_TOLERANCE * width, LANDMARK_TOLERANCE * height
    if (
        points[:, 0].min() < -tol_x
        or points[:, 1].min() < -tol_y
        or points[:, 0].max() > width + tol_x
        or points[:, 1].max() > height + tol_y
    ):
        return None, f"landmarks fall outside the {width}x{height} frame"
    return points, None


def short_repr(value: object, limit: int = 40) -> str:
    """repr of a value from a data file, cut to `limit` characters for a message (an integer of thousands
    of digits would otherwise fill it)."""
    if isinstance(value, int) and abs(value) >= 10**30:
        return f"an integer of {len(str(value))} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_json(path: Path, what: str = "annotation file") -> object:
    """A JSON file's content; a missing, oversized or malformed file raises BadInputError naming it."""
    try:
        if path.stat().st_size > MAX_LABEL_FILE_BYTES:
            raise BadInputError(f"{path}: {what} is larger than {MAX_LABEL_FILE_BYTES // 2**20} MiB")
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: {what} is missing") from None
    except IsADirectoryError:
        raise BadInputError(f"{path}: {what} is a folder, not a file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInputError(f"{path}: malformed JSON ({err})") from None
    except RecursionError:
        raise BadInputError(f"{path}: malformed JSON (nested too deeply)") from None
    except ValueError as err:  # e.g. an integer literal with more digits than Python converts
        raise BadInputError(f"{path}: malformed JSON ({err})") from None


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, with every link followed, lies in the folder `root` (resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a link loop
        return False


def read_annotation(path: Path) -> dict:
    """Parse one clip's JSON and check its structure; raises BadInputError naming the file."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a JSON object, found {type(data).__name__}")
    if not isinstance(data.get("frames"), dict):
        raise BadInputError(f"{path}: no 'frames' object")
    return data


def _frame_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, after checking that its data is complete (CRCs, no truncation)."""
    with Image.open(path) as img:
        size = img.size
        img.verify()
    return size


def scan_clip(folder: Path, root: Path | None = None) -> tuple[pd.DataFrame, list[Problem]]:
    """One clip folder -> its usable frames (FRAME_COLUMNS) and every problem found.

    Files are read only where they lie in `root` (default: the folder's parent) once links are followed:
    a frame or annotation that links out of the data root is a problem, never read.
    """
    clip_id = folder.name
    root = (root or folder.parent).resolve()
    problems: list[Problem] = []
    json_path = folder / f"{clip_id}.json"
    pngs = {}
    for p in folder.iterdir():
        if not (m := FRAME_RE.match(p.name)):
            continue
        index = int(m.group(1))
        if not inside(p, root):
            problems.append(Problem(str(p), f"links out of the data root {root}: not read", f"{index:05d}"))
        elif index in pngs:
            first, second = sorted([pngs[index], p])
            twice = f"frame number {index} twice ({first.name}): not read"
            problems.append(Problem(str(second), twice, f"{index:05d}"))
            pngs[index] = first
        else:
            pngs[index] = p
    nothing = pd.DataFrame(columns=FRAME_COLUMNS)
    if not pngs:
        return nothing, [*problems, Problem(str(folder), "clip folder has no frames")]
    if not inside(json_path, root):
        return nothing, [*problems, Problem(str(json_path), f"links out of the data root {root}: not read")]
    try:
        data = read_annotation(json_path)
    except BadInputError as err:
        return nothing, [*problems, Problem(str(json_path), str(err).removeprefix(f"{json_path}: "))]
    actor = data.get("actor")
    if isinstance(actor, int) and not isinstance(actor, bool):
        actor = str(actor)
    if not isinstance(actor, str) or not actor.strip():
        given = "no actor given" if actor in (None, "") else f"actor {short_repr(actor)} is not a name"
        actor = f"unknown-{clip_id}"
        problems.append(Problem(str(json_path), f"{given}: treated as its own actor {actor!r}", fatal=False))
    video_id = data.get("video_id")
    if video_id is not None and str(video_id) != clip_id:
        problems.append(Problem(str(json_path), f"video_id {short_repr(video_id)} disagrees with folder {clip_id!r}"))
        return nothing, problems

    labels: dict[int, dict] = {}
    for key, entry in data["frames"].items():
        if not FRAME_KEY_RE.match(key):
            problems.append(Problem(str(json_path), f"frame key {short_repr(key)} is not a frame number"))
            continue
        if int(key) not in pngs:
            problems.append(Problem(str(json_path), "label without a frame (PNG missing)", key, fatal=False))
            continue
        labels[int(key)] = entry if isinstance(entry, dict) else {"_bad": entry}

    rows = []
    for index in sorted(pngs):
        path, name = pngs[index], f"{index:05d}"
        try:
            width, height = _frame_size(path)
        except Exception as err:  # PIL raises many types for broken files
            problems.append(Problem(str(path), f"unreadable PNG ({type(err).__name__}: {err})", name))
            continue
        row = dict(
            clip_id=clip_id,
            actor=actor,
            frame=index,
            path=str(path.resolve()),
            width=width,
            height=height,
            labeled=False,
            valence=np.nan,
            arousal=np.nan,
        )
        box = (np.nan,) * 4
        entry = labels.get(index)
        if entry is None:
            if labels or data["frames"]:
                problems.append(Problem(str(json_path), "frame without a label", name, fatal=False))
        else:
            valence, err_v = _label(entry.get("valence"), "valence")
            arousal, err_a = _label(entry.get("arousal"), "arousal")
            points, err_l = _landmarks(entry.get("landmarks"), width, height)
            errors = [e for e in (err_v, err_a, err_l) if e]
            if errors:
                problems.append(Problem(str(json_path), "; ".join(errors), name))
                continue
            row.update(labeled=True, valence=valence, arousal=arousal)
            box = (*points.min(axis=0), *points.max(axis=0))
        row.update(zip(BOX_COLUMNS, box, strict=True))
        rows.append(row)
    frames = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    frames = fill_boxes(frames)
    if len(frames) == 1:
        problems.append(Problem(str(folder), "clip has a single frame", fatal=False))
    if len(frames) and not frames["labeled"].any():
        problems.append(Problem(str(folder), "clip has no labels: predicted for the submission only", fatal=False))
    return frames, problems


def fill_boxes(frames: pd.DataFrame) -> pd.DataFrame:
    """Give unlabeled frames the landmark box of the nearest labeled frame of the clip (or none)."""
    cols = BOX_COLUMNS
    has = frames[BOX_COLUMNS[0]].notna()
    frames["box_source"] = np.where(has, "landmarks", "none")
    if has.any() and not has.all():
        order = frames["frame"].to_numpy()
        known = order[has.to_numpy()]
        nearest = known[np.abs(order[:, None] - known[None, :]).argmin(axis=1)]
        by_frame = frames.set_index("frame")[cols]
        frames[cols] = by_frame.loc[nearest].to_numpy()
        frames.loc[~has, "box_source"] = "nearest"
    return frames


def index_dataset(root: str | Path, on_bad_input: str = "error") -> tuple[pd.DataFrame, list[Problem]]:
    """Scan every clip folder under `root`; returns the frames table and all problems.

    With ``on_bad_input='error'`` the first fatal problem raises BadInputError (naming the file and frame);
    with ``'skip'`` the bad clips and frames are left out and the problems returned for the report.
    """
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: data root does not exist or is not a folder")
    real_root = root.resolve()
    folders = [p for p in sorted(root.iterdir()) if CLIP_RE.match(p.name) and p.is_dir()]
    if not folders:
        raise BadInputError(f"{root}: no clip folders (named by number, e.g. 001) found")
    problems: list[Problem] = []
    tables = []
    seen: dict[int, str] = {}
    for folder in folders:
        found: list[Problem] = []
        frames = None
        if int(folder.name) in seen:
            found = [Problem(str(folder), f"duplicate clip id: {seen[int(folder.name)]} has the same number")]
        elif not inside(folder, real_root):
            found = [Problem(str(folder), f"clip folder links out of the data root {real_root}: not read")]
        else:
            seen[int(folder.name)] = folder.name
            frames, found = scan_clip(folder, real_root)
        problems += found
        if on_bad_input == "error" and any(p.fatal for p in found):
            raise BadInputError(str(next(p for p in found if p.fatal)))
        if frames is not None and len(frames):
            tables.append(frames)
    if not tables:
        raise BadInputError(f"{root}: no usable clip found ({len(problems)} problems)")
    return pd.concat(tables, ignore_index=True), problems


def write_report(problems: list[Problem], frames: pd.DataFrame, path: str | Path, on_bad_input: str) -> None:
    """Human-readable validation report: what was found wrong and what was done about it."""
    fatal = [p for p in problems if p.fatal]
    notes = [p for p in problems if not p.fatal]
    lines = [
        "clipva validation report",
        f"clips: {frames['clip_id'].nunique()}, frames: {len(frames)}, labeled frames: {int(frames['labeled'].sum())}",
        f"on_bad_input: {on_bad_input}",
        "",
        f"left out ({len(fatal)}):",
        *(f"  {p}" for p in fatal),
        "",
        f"notes ({len(notes)}), handled:",
        *(f"  {p}" for p in notes),
    ]
    write_text(path, "\n".join(lines) + "\n")


def write_frame(folder: Path, index: int, image: Image.Image) -> Path:
    """One frame as ``folder/{index:05d}.png``, fast to write (the frames of a generated or converted data
    set are written once) and in a single write: much cheaper on slow file systems than PIL's chunked ones."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1, optimize=False)
    path = folder / f"{index:05d}.png"
    path.write_bytes(buf.getvalue())
    return path


def write_afew_clip(
    root: str | Path,
    clip_id: int,
    frames: Sequence[Image.Image] | Mapping[int, Image.Image],
    annotations: Mapping[int, dict],
    actor: str,
    video_id: str | None = None,
) -> Path:
    """Write one clip folder ``root/{clip:03d}``: frames as %05d.png, annotations as ``{clip:03d}.json``.

    `frames` is a sequence (frame i -> i) or a mapping frame index -> image (to leave gaps); `annotations`
    maps frame index -> {"valence", "arousal", "landmarks"}. Returns the clip folder.
    """
    folder = Path(root) / f"{clip_id:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in frames.items() if isinstance(frames, Mapping) else enumerate(frames):
        write_frame(folder, i, img)
    doc = {
        "actor": actor,
        "frames": {f"{i:05d}": ann for i, ann in sorted(annotations.items())},
        "video_id": video_id if video_id is not None else f"{clip_id:03d}",
    }
    # json.dumps (C encoder) writes the same bytes as json.dump(doc, f, indent=None, sort_keys=True), faster
    (folder / f"{clip_id:03d}.json").write_text(json.dumps(doc, indent=None, sort_keys=True))
    return folder


def read_frames(path: str | Path, **options) -> pd.DataFrame:
    """The frames table written by the index rule (clip ids kept as strings like '001'); `options` go to
    pandas.read_csv (usecols, chunksize: then an iterator of tables)."""
    return pd.read_csv(
        path,
        dtype={"clip_id": str, "actor": str, "path": str, "box_source": str, "subset": str},
        keep_default_na=False,
        na_values=[""],
        **options,
    )
