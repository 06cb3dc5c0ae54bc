"""Aff-Wild2 as the ABAW challenges distribute it, read in place: the valence-arousal track's annotations and
the aligned face crops.

    <root>/annotations/VA_Estimation_Challenge/Train_Set/<video>.txt        valence,arousal   (header)
    <root>/annotations/VA_Estimation_Challenge/Validation_Set/<video>.txt   one line per video frame
    <root>/cropped_aligned/<video>/00001.jpg                                 frame 1's aligned face crop

Line k of an annotation file (after the header) is frame k of the video, numbered from 1 as the crops are;
-5 marks a frame without an annotation; the crop of a frame where no face was found is missing. Videos
with two people are two videos, `<name>_left` and `<name>_right`, which share one "actor" here (the video
without its suffix), so that cross-validation by actor keeps the pair in one fold.

The index is the frame table of clipva.afew (labels on its -10..10 scale, every frame's path in place) with
the official set of each video, and a video table with every video's frame count (the rows a submission
file needs). Problems are `clipva.afew.Problem`s: malformed files and labels are fatal (``on_bad_input``
decides), the quirks of the real data are notes listed in the report with what was done.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clipva.afew import BOX_COLUMNS, FRAME_COLUMNS, MAX_LABEL_FILE_BYTES, VA_RANGE, Problem, inside, short_repr
from clipva.errors import BadInputError, ConfigError

ANNOTATIONS = Path("annotations", "VA_Estimation_Challenge")
CROPS = "cropped_aligned"
SETS = ("Train_Set", "Validation_Set")
TEST_SET = "Test_Set"  # videos named by split.test_list: no annotations, predicted for the submission
HEADER = "valence,arousal"
SAMPLE_HEADER = "image_location,valence,arousal"  # the test set release's sample prediction file
NO_LABEL = -5.0
VA_SCALE = float(VA_RANGE[1])  # the index keeps AFEW-VA's -10..10 scale, on which the pipeline works
# Video names become clip ids, HDF5 group names and submission file names: nothing that could leave a folder.
VIDEO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$", re.ASCII)
CROP_RE = re.compile(r"^(\d{1,9})\.jpg$", re.ASCII)
PAIR_RE = re.compile(r"_(left|right)$", re.ASCII)
COUNT_HINT = "the test set release's sample prediction file as split.test_list gives the count"
VIDEO_COLUMNS = ["video", "actor", "subset", "n_frames", "frames_from", "n_crops", "n_labeled"]


def actor_of(video: str) -> str:
    """The person group of a video: the two people of `<name>_left` and `<name>_right` share `<name>`."""
    return PAIR_RE.sub("", video)


def ranges(numbers) -> str:
    """[3, 4, 5, 9] -> '00003-00005, 00009' (at most 8 ranges, then how many more)."""
    numbers = sorted(int(n) for n in numbers)
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    text = [f"{a:05d}" if a == b else f"{a:05d}-{b:05d}" for a, b in spans[:8]]
    if len(spans) > 8:
        text.append(f"and {len(spans) - 8} more ranges")
    return ", ".join(text)


def _read_text(path: Path, what: str, unusable) -> str:
    """A whole text file; BadInputError naming it if it is too large or not UTF-8, `unusable(why)` (the
    exception to raise) if it is missing or a folder."""
    try:
        if path.stat().st_size > MAX_LABEL_FILE_BYTES:
            raise BadInputError(f"{path}: {what} is larger than {MAX_LABEL_FILE_BYTES // 2**20} MiB")
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise unusable("does not exist") from None
    except IsADirectoryError:
        raise unusable("is a folder, not a text file") from None
    except UnicodeDecodeError as err:
        raise BadInputError(f"{path}: {what} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_labels(path: Path) -> tuple[np.ndarray, list[Problem]]:
    """One annotation file -> (n_frames, 2) valence/arousal in -1..1 (row k-1 is frame k; NaN where -5 or
    unusable) and the problems of single lines (fatal: that frame is left out). A file that cannot be read
    as a whole (missing, too large, not UTF-8, wrong header) raises BadInputError naming it."""
    text = _read_text(path, "annotation file", lambda why: BadInputError(f"{path}: annotation file {why}"))
    lines = text.removeprefix("\ufeff").splitlines()
    if not lines or lines[0].replace(" ", "").lower() != HEADER:
        found = short_repr(lines[0]) if lines else "an empty file"
        raise BadInputError(f"{path}: the first line must be the header {HEADER!r}, found {found}")
    labels = np.full((len(lines) - 1, 2), np.nan)
    problems = []
    for k, line in enumerate(lines[1:]):
        frame = f"{k + 1:05d}"
        fields = line.split(",")
        try:
            if len(fields) != 2:
                raise ValueError
            values = (float(fields[0]), float(fields[1]))
        except ValueError:
            problems.append(Problem(str(path), f"line {k + 2} is not two numbers: {short_repr(line)}", frame))
            continue
        if NO_LABEL in values:
            if values != (NO_LABEL, NO_LABEL):
                problems.append(Problem(str(path), f"line {k + 2}: -5 (no annotation) in one column only", frame))
            continue
        if not all(-1.0 <= v <= 1.0 for v in values):  # also NaN and inf
            problems.append(Problem(str(path), f"line {k + 2}: {short_repr(line)} is outside -1..1", frame))
            continue
        labels[k] = values
    return labels, problems


def read_test_list(path: str | Path) -> dict[str, int | None]:
    """The challenge's test videos -> their frame count where the file gives it (else None).

    Two forms: a text file with one video name a line (blank lines and # comments skipped), or the sample
    prediction file of the test set release (header ``image_location,valence,arousal``, then one row
    ``<video>/<00001>.jpg,,`` per frame of every test video), which also gives each video's frame count.
    """
    path = Path(path)
    text = _read_text(path, "the test list", lambda why: ConfigError(f"split.test_list: {path} {why}"))
    lines = text.removeprefix("\ufeff").splitlines()
    sample = bool(lines) and lines[0].replace(" ", "").lower().startswith(SAMPLE_HEADER)
    videos: dict[str, int | None] = {}
    last = None
    for number, line in enumerate(lines[1:] if sample else lines, 2 if sample else 1):
        if sample:
            location = line.split(",", 1)[0].strip()
            if not location:
                continue
            name, _, image = location.partition("/")
            frame = CROP_RE.match(image)
            if not frame or not VIDEO_RE.match(name):
                raise BadInputError(f"{path}: line {number}: {short_repr(location)} is not <video>/<00001>.jpg")
            if name in videos and name != last:
                raise BadInputError(f"{path}: line {number}: the rows of {name} are not in one block")
            last, count = name, videos.get(name) or 0
            if int(frame.group(1)) != count + 1:
                raise BadInputError(f"{path}: line {number}: {location} does not follow frame {count} of {name}")
            videos[name] = count + 1
            continue
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not VIDEO_RE.match(name):
            raise BadInputError(f"{path}: line {number}: {short_repr(name)} is not a video name")
        if name in videos:
            raise BadInputError(f"{path}: line {number}: video {name} is listed twice")
        videos[name] = None
    if not videos:
        raise BadInputError(f"{path}: the test list names no video")
    return videos


def _list_crops(folder: Path, root: Path) -> tuple[dict[int, Path], list[Problem]]:
    """frame number -> crop file of one video's folder; crops linking out of the data root are not read."""
    crops: dict[int, Path] = {}
    problems = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not (m := CROP_RE.match(entry.name)):
                continue
            path, number = folder / entry.name, int(m.group(1))
            if entry.is_symlink() and not inside(path, root):
                problems.append(Problem(str(path), f"links out of the data root {root}: not read", f"{number:05d}"))
            elif number in crops or number == 0:
                what = "frame number 0 (frames are numbered from 1)" if number == 0 else f"frame {number} twice"
                problems.append(Problem(str(path), f"{what}: not read", f"{number:05d}"))
            else:
                crops[number] = path
    return crops, problems


def _crop_size(path: Path) -> tuple[int, int]:
    """The size of one crop (its header only: Aff-Wild2's crops of one video share a size, and decoding every
    one of millions of frames here would cost as much as extraction, which reports undecodable frames)."""
    with Image.open(path) as img:
        return img.size


def _video_frames(video, actor, subset, crops, labels, size) -> pd.DataFrame:
    numbers = np.array(sorted(crops), dtype=np.int64)
    n = len(numbers)
    valence = np.full(n, np.nan)
    arousal = np.full(n, np.nan)
    if labels is not None:  # every crop is a frame of the file
        valence, arousal = labels[numbers - 1, 0] * VA_SCALE, labels[numbers - 1, 1] * VA_SCALE
    frames = pd.DataFrame(
        {
            "clip_id": video,
            "actor": actor,
            "frame": numbers,
            "path": [str(crops[k]) for k in numbers],
            "width": size[0],
            "height": size[1],
            "labeled": ~np.isnan(valence),
            "valence": valence,
            "arousal": arousal,
            **{c: np.nan for c in BOX_COLUMNS},
            "box_source": "none",  # aligned crops: the whole frame is the face
            "subset": subset,
        },
        columns=[*FRAME_COLUMNS, "subset"],
    )
    return frames


def index_affwild2(
    root: str | Path, on_bad_input: str = "error", test_list: str | Path | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, list[Problem]]:
    """Index the VA track of an Aff-Wild2 folder: (frames, videos, problems).

    frames: FRAME_COLUMNS plus `subset` (Train_Set, Validation_Set, Test_Set), one row per face crop of a
    video of the track or of the test list; videos: VIDEO_COLUMNS. With ``on_bad_input='error'`` the first
    fatal problem raises BadInputError naming the file (and frame); with ``'skip'`` it is left out and
    returned for the report.
    """
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: data root does not exist or is not a folder")
    real_root = root.resolve()
    crops_root = root / CROPS
    if not crops_root.is_dir():
        raise BadInputError(f"{crops_root}: no {CROPS}/ folder (Aff-Wild2's aligned face crops) in the data root")
    problems: list[Problem] = []

    def found(new: list[Problem]) -> None:
        problems.extend(new)
        if on_bad_input == "error" and (fatal := next((p for p in new if p.fatal), None)):
            raise BadInputError(str(fatal))

    videos: dict[str, tuple[str, Path | None]] = {}  # name -> (subset, annotation file)
    for subset in SETS:
        folder = root / ANNOTATIONS / subset
        if not folder.is_dir():
            raise BadInputError(f"{folder}: the {subset} annotations of the VA track are missing")
        for path in sorted(folder.iterdir()):
            if path.suffix != ".txt":
                continue
            name = path.stem
            if not VIDEO_RE.match(name):
                found([Problem(str(path), f"{short_repr(name)} is not a video name: not read")])
            elif name in videos:
                found([Problem(str(path), f"video {name} is also in {videos[name][0]}: not read")])
            elif not inside(path, real_root):
                found([Problem(str(path), f"links out of the data root {real_root}: not read")])
            else:
                videos[name] = (subset, path)
    test_frames = read_test_list(test_list) if test_list is not None else {}
    for name in test_frames:
        if name in videos:
            raise BadInputError(f"{test_list}: test video {name} has annotations in {videos[name][0]}")
        videos[name] = (TEST_SET, None)
    if not videos:
        raise BadInputError(f"{root / ANNOTATIONS}: no annotation files (<video>.txt) in {' or '.join(SETS)}")

    tables, rows = [], []
    for name, (subset, path) in sorted(videos.items()):
        folder = crops_root / name
        labels = None
        if path is not None:
            try:
                labels, bad_lines = read_labels(path)
            except BadInputError as err:
                found([Problem(str(path), str(err).removeprefix(f"{path}: "))])
                continue
            found(bad_lines)
        crops: dict[int, Path] = {}
        size, why = None, "no face crop folder"
        if folder.is_dir():
            if not inside(folder, real_root):
                found([Problem(str(folder), f"links out of the data root {real_root}: not read")])
                continue
            crops, bad_crops = _list_crops(folder, real_root)
            found(bad_crops)
            why = "an empty face crop folder (00001.jpg, ...)"
            if crops:
                try:
                    size = _crop_size(crops[min(crops)])
                except Exception as err:  # PIL raises many types for broken files
                    what = f"unreadable JPEG ({type(err).__name__}: {err}): video left out"
                    found([Problem(str(crops[min(crops)]), what)])
                    continue
        n_frames: int | None = None
        if labels is not None:
            n_frames, frames_from = len(labels), "annotation"
            if crops:
                _note_gaps(problems, path, labels, crops)
                why = "no face crop within the annotated frames"
            crops = {k: v for k, v in crops.items() if k <= n_frames}
        elif test_frames[name] is not None:
            n_frames, frames_from = test_frames[name], "test list"
            beyond = [k for k in crops if k > n_frames]
            if beyond:
                what = f"{len(beyond)} face crops lie beyond the test list's {n_frames} frames ({ranges(beyond)})"
                found([Problem(str(folder), f"{what}: not used", fatal=False)])
                crops = {k: v for k, v in crops.items() if k <= n_frames}
        elif crops:
            n_frames, frames_from = max(crops), "last face crop"
            what = f"the test list gives no frame count: {n_frames} frames, up to the last face crop"
            found([Problem(str(folder), f"{what} ({COUNT_HINT})", fatal=False)])
        if not crops:
            found([_faceless(folder, subset, why, n_frames)])
            if n_frames is not None and subset != SETS[0]:  # its challenge file is still written
                rows.append([name, actor_of(name), subset, n_frames, frames_from, 0, 0])
            continue
        frames = _video_frames(name, actor_of(name), subset, crops, labels, size)
        tables.append(frames)
        rows.append([name, actor_of(name), subset, n_frames, frames_from, len(frames), int(frames["labeled"].sum())])

    used = set(videos)
    others = [p.name for p in crops_root.iterdir() if p.name not in used and p.is_dir()]
    if others:
        listed = ", ".join(sorted(others)[:20]) + (f" and {len(others) - 20} more" if len(others) > 20 else "")
        what = f"{len(others)} crop folders of videos outside the VA track: not used ({listed})"
        problems.append(Problem(str(crops_root), what, fatal=False))
    if not tables:
        raise BadInputError(f"{root}: no usable video found ({len(problems)} problems)")
    return pd.concat(tables, ignore_index=True), pd.DataFrame(rows, columns=VIDEO_COLUMNS), problems


def _faceless(folder: Path, subset: str, why: str, n_frames: int | None) -> Problem:
    """The note (or, for a test video of unknown length, the fatal problem) of a video without a face crop."""
    if subset == SETS[0]:
        return Problem(str(folder), f"{why}: video left out of training", fatal=False)
    if n_frames is None:
        return Problem(str(folder), f"{why}, and the test list gives no frame count: no submission file ({COUNT_HINT})")
    what = "submission" if subset == TEST_SET else "challenge (results/abaw/validation)"
    scored = "" if subset == TEST_SET else "not scored by evaluate; "
    return Problem(
        str(folder),
        f"{why}: {scored}its {what} file gives all {n_frames} frames the mean prediction of the {subset} videos",
        fatal=False,
    )


def _note_gaps(problems: list[Problem], path: Path, labels: np.ndarray, crops: dict[int, Path]) -> None:
    """The quirks of one annotated video, one note each: annotated frames without a crop, crops without an
    annotation (beyond the file or -5)."""
    numbers = np.arange(1, len(labels) + 1)
    annotated = ~np.isnan(labels[:, 0])
    no_crop = [n for n in numbers[annotated] if n not in crops]
    if no_crop:
        problems.append(
            Problem(
                str(path),
                f"{len(no_crop)} annotated frames have no face crop ({ranges(no_crop)}): not scored by evaluate, "
                "filled by interpolation in the ABAW files",
                fatal=False,
            )
        )
    unlabeled = [n for n in crops if n > len(labels) or not annotated[n - 1]]
    beyond = [n for n in unlabeled if n > len(labels)]
    if beyond:
        problems.append(
            Problem(
                str(path),
                f"{len(beyond)} face crops lie beyond the file's {len(labels)} frames ({ranges(beyond)}): not used",
                fatal=False,
            )
        )
    marked = [n for n in unlabeled if n <= len(labels)]
    if marked:
        what = f"{len(marked)} frames marked -5 (no annotation) ({ranges(marked)})"
        problems.append(Problem(str(path), f"{what}: kept unlabeled", fatal=False))
