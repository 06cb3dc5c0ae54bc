"""Videos in: decoding and its timing, the face track on demo faces, and annotated videos -> AFEW-VA."""

import json
import os
import wave
from fractions import Fraction

import av
import numpy as np
import pandas as pd
import pytest
from conftest import needs_detector
from PIL import Image

from clipva.afew import BOX_COLUMNS, index_dataset
from clipva.annotated_videos import box_outline, convert_annotated_videos, match_labels, read_labels
from clipva.crop import load_rgb
from clipva.demo import make_demo
from clipva.errors import BadInputError
from clipva.faces import Detection, FaceDetector, detector_boxes, iou, track_main_face
from clipva.video import VIDEO_SUFFIXES, decode, list_videos, probe, write_video

N, FPS = 30, 10


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """30 demo frames of one clip, their landmark boxes and labels (frame 15 has no label: a demo quirk)."""
    root = tmp_path_factory.mktemp("video-demo")
    make_demo(root, n_clips=1, n_actors=1, min_frames=N, max_frames=N, unlabeled_clips=0, seed=4)
    frames = [load_rgb(root / "001" / f"{i:05d}.png") for i in range(N)]
    labels = {int(k): v for k, v in json.loads((root / "001" / "001.json").read_text())["frames"].items()}
    boxes = {i: (*np.min(e["landmarks"], 0), *np.max(e["landmarks"], 0)) for i, e in labels.items()}
    return frames, boxes, labels


def _stamped(frames):
    """Frames with their index drawn on a black strip at the top (a white square at x = 5 * index)."""
    out = []
    for i, frame in enumerate(frames):
        a = np.array(frame)
        a[:8] = 0
        a[1:7, 5 * i : 5 * i + 5] = 255
        out.append(Image.fromarray(a))
    return out


def _stamp(image):
    """The index drawn by _stamped, read back from a (lossy) decoded frame."""
    return int(np.asarray(image.convert("L"))[1:7].astype(float).mean(0).argmax() // 5)


@pytest.fixture(scope="module")
def mp4(clip, tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", _stamped(clip[0]), FPS)


@pytest.mark.parametrize("suffix", VIDEO_SUFFIXES)
def test_write_probe_decode_native(clip, tmp_path, suffix):
    frames = _stamped(clip[0])
    path = write_video(tmp_path / f"clip{suffix}", frames, FPS)
    info = probe(path)
    assert (info.n_frames, info.fps, info.width, info.height) == (N, FPS, *frames[0].size)
    assert info.duration == pytest.approx(N / FPS, abs=0.02)
    decoded = list(decode(path))
    assert [i for _, i, _ in decoded] == list(range(N))
    assert [t for t, _, _ in decoded] == pytest.approx([i / FPS for i in range(N)], abs=1e-3)
    assert all(img.mode == "RGB" and img.size == frames[0].size for _, _, img in decoded)
    assert [_stamp(img) for _, _, img in decoded] == list(range(N))


@pytest.mark.parametrize("fps", [5, 20, 3])
def test_decode_resampled_by_timestamps(clip, mp4, fps):
    decoded = list(decode(mp4, fps))
    n = int(np.ceil(N / FPS * fps - 1e-9))  # 15, 60, 9 frames: every k / fps before the end at 3.0 s
    assert len(decoded) == n
    assert [i for _, i, _ in decoded] == list(range(n))
    assert [t for t, _, _ in decoded] == pytest.approx([k / fps for k in range(n)])
    # frame k shows the source frame on screen at k / fps: floor(k * 10 / fps)
    assert [_stamp(img) for _, _, img in decoded] == [int(np.floor(k * FPS / fps + 1e-9)) for k in range(n)]


def test_variable_frame_rate_resampled_by_timestamps(tmp_path):
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as out:  # frames at 0, 0.1, 0.3, 0.35 and 0.6 s
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, pts in enumerate([0, 100, 300, 350, 600]):
            frame = av.VideoFrame.from_ndarray(np.array(_stamped([Image.new("RGB", (64, 48))] * 5)[i]), "rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    assert [(t, _stamp(img)) for t, _, img in decode(path)] == [(0, 0), (0.1, 1), (0.3, 2), (0.35, 3), (0.6, 4)]
    resampled = [(t, i, _stamp(img)) for t, i, img in decode(path, 10)]
    assert [i for _, i, _ in resampled] == list(range(7))
    assert [t for t, _, _ in resampled] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert [s for _, _, s in resampled] == [0, 1, 1, 2, 3, 3, 4]  # what is on screen at each time


def test_odd_size_and_ntsc_rate(clip, tmp_path):
    frames = [f.crop((0, 0, 101, 75)) for f in clip[0][:6]]
    path = write_video(tmp_path / "odd.avi", frames, 30000 / 1001)
    info = probe(path)
    assert (info.n_frames, info.width, info.height) == (6, 102, 76)  # padded to even by one black column/row
    assert info.fps == pytest.approx(29.97, abs=1e-3)
    assert [t for t, _, _ in decode(path)] == pytest.approx([k * 1001 / 30000 for k in range(6)], abs=1e-3)


def test_list_videos(tmp_path, mp4):
    for name in ("b.mp4", "a.MKV", "c.webm", "notes.txt", "labels.csv"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.avi").mkdir()
    assert [p.name for p in list_videos(tmp_path)] == ["a.MKV", "b.mp4", "c.webm"]
    assert list_videos(mp4) == [mp4]
    for bad, message in [
        (tmp_path / "notes.txt", "not a video file"),
        (tmp_path / "nope", "no such video"),
        (tmp_path / "sub.avi", "folder has no video files"),
    ]:
        with pytest.raises(BadInputError) as err:
            list_videos(bad)
        assert str(err.value).startswith(str(bad)) and message in str(err.value)


def test_bad_video_files(tmp_path, mp4):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    audio = tmp_path / "audio.mkv"  # FFmpeg goes by content: a WAV file, whatever its name
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0" * 1600)
    cases = {
        junk: "cannot read video",
        truncated: "cannot read video",
        audio: "file has no video stream",
        tmp_path / "missing.mp4": "video file is missing",
    }
    for path, message in cases.items():
        for read in (probe, lambda p: list(decode(p)), lambda p: list(decode(p, 5))):
            with pytest.raises(BadInputError) as err:
                read(path)
            assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def _det(x, y, side, score=0.9):
    return Detection((x, y, x + side, y + side), score)


def test_main_face_is_the_largest_longest_track():
    rng = np.random.default_rng(0)
    detections = []
    for f in range(20):
        found = [_det(50 + rng.normal(0, 2), 40 + rng.normal(0, 2), 60)]  # the main face, jittering
        if f % 2:
            found.append(_det(150, 10, 20, 0.99))  # a small background face, every other frame
        if f == 7:
            found = [_det(0, 0, 120, 0.99)]  # one large false detection; the main face is missed here
        detections.append(found[::-1])
    raw = track_main_face(detections, window=1)
    smooth = track_main_face(detections, window=5)
    assert raw["face_found"].tolist() == [f != 7 for f in range(20)]
    assert raw.loc[raw.face_found, "box_x0"].between(40, 60).all()
    assert raw.loc[7, "box_source"] == "interpolated" and 40 < raw.loc[7, "box_x0"] < 60
    assert smooth.loc[smooth.face_found, "box_x0"].std() < 0.6 * raw.loc[raw.face_found, "box_x0"].std()
    assert (smooth["box_x1"] - smooth["box_x0"]).to_numpy() == pytest.approx(np.full(20, 60.0))
    empty = track_main_face([[] for _ in range(4)])
    assert not empty["face_found"].any() and empty[BOX_COLUMNS].isna().all().all()
    with pytest.raises(ValueError, match="fill"):
        track_main_face(detections, fill="nearest")


@needs_detector
def test_detector_on_a_photograph():
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:  # a portrait shipped in matplotlib's wheel
        photo = Image.open(f).convert("RGB")
    faces = FaceDetector()(photo)
    assert len(faces) == 1 and faces[0].score > 0.8
    x0, y0, x1, y1 = faces[0].box  # brows (~y 170) to chin (~y 335), cheek to cheek, as a landmark box
    assert 160 < x0 < 200 and 145 < y0 < 185 and 335 < x1 < 375 and 315 < y1 < 355
    big = FaceDetector()(photo.resize((photo.width * 3, photo.height * 3)))  # scaled to 640 px for detection
    assert len(big) == 1 and iou([v / 3 for v in big[0].box], faces[0].box) > 0.9


@needs_detector
def test_face_track_matches_landmark_boxes(clip):
    frames, boxes, _ = clip
    track = track_main_face([FaceDetector()(f) for f in frames])
    assert track["face_found"].all() and (track["box_source"] == "detected").all()
    overlaps = [iou(track.loc[i, BOX_COLUMNS].to_numpy(float), box) for i, box in boxes.items()]
    assert np.mean(np.array(overlaps) > 0.5) >= 0.9 and np.median(overlaps) > 0.7, overlaps


@needs_detector
def test_training_frames_get_the_boxes_prediction_finds(demo_root, tmp_path):
    """face_crop.method detector: the index's frames keep their rows, with the box clipva predict would find."""
    frames, _ = index_dataset(demo_root)
    boxed, found = detector_boxes(frames, FaceDetector())
    assert boxed.drop(columns=[*BOX_COLUMNS, "box_source"]).equals(frames.drop(columns=[*BOX_COLUMNS, "box_source"]))
    assert set(boxed["box_source"]) <= {"detected", "interpolated"} and boxed[BOX_COLUMNS].notna().all().all()
    assert found["frames"].sum() == len(frames) and found["faces_found"].sum() >= 0.95 * len(frames)
    marked = frames["box_source"] == "landmarks"  # frames with annotated landmarks
    pairs = zip(boxed.loc[marked, BOX_COLUMNS].to_numpy(), frames.loc[marked, BOX_COLUMNS].to_numpy(), strict=True)
    overlaps = [iou(a, b) for a, b in pairs]
    assert np.median(overlaps) > 0.75 and np.mean(np.array(overlaps) < 0.5) < 0.05
    # a frame that cannot be decoded: named, or with skip a frame without a face whose box is interpolated
    bad = frames.copy()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    bad.loc[3, "path"] = str(broken)
    with pytest.raises(BadInputError, match="broken.png"):
        detector_boxes(bad, FaceDetector())
    skipped, _ = detector_boxes(bad, FaceDetector(), skip_bad=True)
    assert skipped.loc[3, "box_source"] == "interpolated" and skipped.loc[3, BOX_COLUMNS].notna().all()


@needs_detector
def test_frames_without_face_are_marked_and_filled(clip):
    frames = list(clip[0])
    blank = Image.new("RGB", frames[0].size, (128, 128, 128))
    missing = [0, 1, 10, 11, 12]
    for i in missing:
        frames[i] = blank
    detector = FaceDetector()
    detections = [detector(f) for f in frames]
    filled = track_main_face(detections, fill="interpolate")
    empty = track_main_face(detections, fill="empty")
    for table in (filled, empty):
        assert table.index[~table["face_found"]].tolist() == missing
    boxes = filled[BOX_COLUMNS].to_numpy(float)
    assert (filled.loc[missing, "box_source"] == "interpolated").all() and np.isfinite(boxes).all()
    assert boxes[11] == pytest.approx((boxes[9] + boxes[13]) / 2)  # linear between the nearest found frames
    assert boxes[10] == pytest.approx((3 * boxes[9] + boxes[13]) / 4)
    assert boxes[0] == pytest.approx(boxes[2]) and boxes[1] == pytest.approx(boxes[2])  # held before the first
    assert (empty.loc[missing, "box_source"] == "none").all() and empty.loc[missing, BOX_COLUMNS].isna().all().all()
    found = empty["face_found"].to_numpy()
    assert empty.loc[found, BOX_COLUMNS].to_numpy(float) == pytest.approx(boxes[found])


@needs_detector
def test_annotated_videos_to_afew_layout(clip, tmp_path):
    frames, boxes, labels = clip
    src = tmp_path / "videos"
    src.mkdir()
    write_video(src / "b_interview.mkv", frames, FPS)
    write_video(src / "a_webcam.mp4", frames, FPS)
    # a_webcam: per-frame CSV in -10..10, converted at the native rate
    pd.DataFrame(
        [(i, e["valence"], e["arousal"]) for i, e in labels.items()], columns=["frame", "valence", "arousal"]
    ).to_csv(src / "a_webcam.csv", index=False)
    # b_interview: per-timestamp JSON in -1..1 (times a little off the frames), converted at 5 fps
    doc = {
        "actor": "p7",
        "labels": [
            {"time": i / FPS + 0.01, "valence": e["valence"] / 10, "arousal": e["arousal"] / 10}
            for i, e in labels.items()
        ],
    }
    (src / "b_interview.json").write_text(json.dumps(doc))
    dst = tmp_path / "afew"
    convert_annotated_videos(src / "a_webcam.mp4", dst / "a")
    convert_annotated_videos(src / "b_interview.mkv", dst / "b", fps=5, scale=1)

    table, problems = index_dataset(dst / "a")
    assert table["frame"].tolist() == list(range(N)) and table["clip_id"].eq("001").all()
    assert table["actor"].eq("a_webcam").all()
    labeled = table[table["labeled"]].set_index("frame")
    assert sorted(labeled.index) == sorted(labels)  # frame 15 has no label: written unlabeled, as AFEW-VA does
    assert [str(p) for p in problems if p.fatal] == []
    for i, e in labels.items():
        assert (labeled.loc[i, "valence"], labeled.loc[i, "arousal"]) == (e["valence"], e["arousal"])
    overlaps = [iou(labeled.loc[i, ["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(float), boxes[i]) for i in labels]
    assert np.median(overlaps) > 0.7

    table, _ = index_dataset(dst / "b")
    assert len(table) == N // 2 and table["actor"].eq("p7").all()
    for _, row in table[table["labeled"]].iterrows():
        e = labels[2 * row["frame"]]  # 5 fps: frame k is source frame 2k at 0.2 k s (labels 0.01 s late)
        assert (row["valence"], row["arousal"]) == pytest.approx((e["valence"], e["arousal"]))
    assert table["labeled"].sum() == sum(1 for k in range(N // 2) if 2 * k in labels)
    faces = pd.read_csv(dst / "b" / "faces.csv", dtype={"clip_id": str})
    assert faces["time"].tolist() == pytest.approx([k / 5 for k in range(N // 2)]) and faces["face_found"].all()


@needs_detector
def test_clip_ids_follow_file_names(clip, tmp_path):
    frames = clip[0][:4]
    for name in ("zeta.webm", "alpha.avi", "mid.mp4"):
        write_video(tmp_path / name, frames, FPS)
        (tmp_path / name).with_suffix(".csv").write_text("time,valence,arousal\n0.0,1,-2\n0.1,3,4\n")
    mapping = convert_annotated_videos(tmp_path, tmp_path / "out")
    assert mapping[["clip_id", "video"]].values.tolist() == [
        ["001", "alpha.avi"],
        ["002", "mid.mp4"],
        ["003", "zeta.webm"],
    ]
    assert pd.read_csv(tmp_path / "out" / "videos.csv", dtype={"clip_id": str}).equals(mapping)
    table, _ = index_dataset(tmp_path / "out")
    assert table.groupby("clip_id")["labeled"].sum().tolist() == [2, 2, 2]
    assert mapping["n_labeled_frames"].tolist() == [2, 2, 2]


@needs_detector
@pytest.mark.parametrize("fill", ["interpolate", "empty"])
def test_labeled_frames_without_a_face(clip, tmp_path, fill):
    frames = list(clip[0][:6])
    frames[2] = frames[3] = Image.new("RGB", frames[0].size, (90, 90, 90))
    write_video(tmp_path / "v.mp4", frames, FPS)
    pd.DataFrame({"frame": range(6), "valence": 1, "arousal": 2}).to_csv(tmp_path / "v.csv", index=False)
    mapping = convert_annotated_videos(tmp_path / "v.mp4", tmp_path / "out", fill=fill)
    faces = pd.read_csv(tmp_path / "out" / "faces.csv")
    assert faces["face_found"].tolist() == [True, True, False, False, True, True]
    table, _ = index_dataset(tmp_path / "out")
    # interpolated boxes keep their labels; with fill 'empty' those frames keep their PNG but lose the label
    expected = [True] * 6 if fill == "interpolate" else [True, True, False, False, True, True]
    assert table["labeled"].tolist() == expected == faces["labeled"].tolist()
    assert mapping.loc[0, "n_labels_without_face"] == (0 if fill == "interpolate" else 2)


def test_match_labels_nearest_within_tolerance():
    labels = pd.DataFrame({"time": [0.0, 0.31, 1.0], "valence": [1.0, 2.0, 3.0], "arousal": [-1.0, -2.0, -3.0]})
    times = np.arange(6) / 5  # 0, 0.2, ..., 1.0
    got = match_labels(labels, times, fps=5, video_fps=25)[:, 0]  # default tolerance: 0.1 s
    assert np.array_equal(got, [1, np.nan, 2, np.nan, np.nan, 3], equal_nan=True)
    wide = match_labels(labels, times, fps=5, video_fps=25, tolerance=0.3)[:, 0]
    assert wide.tolist() == [1, 2, 2, 2, 3, 3]
    by_frame = pd.DataFrame({"frame": [0, 5, 10], "valence": [1.0, 2.0, 3.0], "arousal": [0.0, 0.0, 0.0]})
    got = match_labels(by_frame, times, fps=5, video_fps=25)[:, 0]  # frame k at 0.2 k s is video frame 5k
    assert np.array_equal(got, [1, 2, 3, np.nan, np.nan, np.nan], equal_nan=True)


def test_box_outline_spans_the_box():
    points = np.array(box_outline((10.5, 20.25, 60.0, 90.75)))
    assert points.shape == (68, 2)
    assert (*points.min(0), *points.max(0)) == pytest.approx((10.5, 20.25, 60.0, 90.75), abs=0.01)


BAD_LABELS = {
    "empty.csv": ("", "malformed CSV"),
    "columns.csv": ("frame,valence\n0,1\n", "need valence, arousal and one of frame or time"),
    "both_keys.csv": ("frame,time,valence,arousal\n0,0,1,1\n", "one of frame or time"),
    "text.csv": ("frame,valence,arousal\n0,1,2\n1,high,2\n", "(line 3): valence is not a number ('high')"),
    "blank.csv": ("time,valence,arousal\n0.0,1,2\n0.1,,2\n", "(line 3): valence is not a number"),
    "range.csv": ("time,valence,arousal\n0.0,1,2\n0.1,1,11\n", "(line 3): arousal 11.0 is outside -10..10"),
    "twice.csv": ("frame,valence,arousal\n0,1,2\n0,1,2\n", "(line 3): frame 0 is labeled twice"),
    "fraction.csv": ("frame,valence,arousal\n0.5,1,2\n", "(line 2): frame 0.5 is not a whole number"),
    "negative.csv": ("time,valence,arousal\n-0.1,1,2\n", "(line 2): time -0.1 is negative"),
    "actors.csv": ("time,valence,arousal,actor\n0,1,2,ann\n1,1,2,bob\n", "more than one actor"),
    "broken.json": ('[{"time": 0, "valence": 1', "malformed JSON"),
    "object.json": ('{"frames": {}}', "expected a list of label objects"),
    "scaled.json": ('[{"time": 0, "valence": 0.5, "arousal": 2}]', "(label 0): arousal 2.0 is outside -1..1"),
}


@pytest.mark.parametrize("name", list(BAD_LABELS))
def test_bad_label_files(tmp_path, name):
    text, message = BAD_LABELS[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BadInputError) as err:
        read_labels(path, scale=1 if name == "scaled.json" else 10)
    assert str(err.value).startswith(str(path)) and message in str(err.value), str(err.value)


def test_missing_or_ambiguous_label_file(tmp_path, mp4):
    video = tmp_path / "talk.mp4"
    video.write_bytes(mp4.read_bytes())
    with pytest.raises(BadInputError, match="no label file") as err:
        convert_annotated_videos(tmp_path, tmp_path / "out")
    assert str(err.value).startswith(f"{video}: no label file (expected talk.csv or talk.json")
    (tmp_path / "talk.csv").write_text("time,valence,arousal\n0,1,1\n")
    (tmp_path / "talk.json").write_text("[]")
    with pytest.raises(BadInputError, match="two label files"):
        convert_annotated_videos(tmp_path, tmp_path / "out")
    (tmp_path / "talk.json").unlink()
    (tmp_path / "talk.csv").write_text("time,valence,arousal\n0,1,1\n0.1,x,1\n")
    with pytest.raises(BadInputError, match="talk.csv \\(line 3\\): valence is not a number"):
        convert_annotated_videos(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # label files are all checked before any video is decoded
