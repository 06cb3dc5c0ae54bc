import json

import numpy as np
import pytest
from corpus import face_landmarks, write_good_clip

from clipva.afew import index_dataset, read_annotation, read_frames, scan_clip, write_report
from clipva.errors import BadInputError


def test_index_reads_the_demo_layout(demo_root):
    frames, problems = index_dataset(demo_root)
    assert frames["clip_id"].nunique() == 10
    assert frames["clip_id"].str.fullmatch(r"\d{3}").all()
    labeled = frames[frames["labeled"]]
    # labels equal the JSON, frame by frame
    for clip_id, group in labeled.groupby("clip_id"):
        doc = json.loads((demo_root / clip_id / f"{clip_id}.json").read_text())
        for row in group.itertuples():
            entry = doc["frames"][f"{row.frame:05d}"]
            assert (row.valence, row.arousal) == (entry["valence"], entry["arousal"])
            pts = np.array(entry["landmarks"])
            assert row.box_x0 == pytest.approx(pts[:, 0].min()) and row.box_y1 == pytest.approx(pts[:, 1].max())
    # the demo's quirks are notes, not errors: a frame without a label is kept (unlabeled, box from a neighbour)
    kinds = {p.message for p in problems}
    assert "frame without a label" in kinds and "label without a frame (PNG missing)" in kinds
    assert not any(p.fatal for p in problems)
    unlabeled = frames[~frames["labeled"]]
    assert set(unlabeled["box_source"]) <= {"nearest", "none"}
    assert (unlabeled.loc[unlabeled["box_source"] == "nearest", "box_x0"].notna()).all()


def test_frames_table_round_trip_keeps_clip_ids_as_strings(demo_root, tmp_path):
    frames, _ = index_dataset(demo_root)
    frames.to_csv(tmp_path / "frames.csv", index=False)
    back = read_frames(tmp_path / "frames.csv")
    assert back["clip_id"].tolist() == frames["clip_id"].tolist()
    assert back["labeled"].dtype == bool
    assert np.allclose(back["valence"].fillna(99), frames["valence"].fillna(99))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "malformed JSON"),
        ('{"actor": "a", "video_id": "001"}', "no 'frames' object"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_json_names_the_file(tmp_path, content, message):
    folder = write_good_clip(tmp_path)
    (folder / "001.json").write_text(content)
    with pytest.raises(BadInputError, match=message) as err:
        index_dataset(tmp_path)
    assert "001/001.json" in str(err.value)


def test_bad_labels_error_or_skip(tmp_path):
    labels = {i: {"valence": 1, "arousal": 1, "landmarks": face_landmarks()} for i in range(3)}
    labels[1]["valence"] = 14
    labels[2]["landmarks"] = [[float("nan"), 1.0]] * 68
    write_good_clip(tmp_path, labels=labels)
    write_good_clip(tmp_path, clip_id=2)
    with pytest.raises(BadInputError, match=r"001\.json \(frame 00001\): valence 14 is outside -10\.\.10"):
        index_dataset(tmp_path, "error")
    frames, problems = index_dataset(tmp_path, "skip")
    assert frames.loc[frames["clip_id"] == "001", "frame"].tolist() == [0]
    fatal = [str(p) for p in problems if p.fatal]
    assert len(fatal) == 2 and "NaN" in fatal[1]
    write_report(problems, frames, tmp_path / "report.txt", "skip")
    report = (tmp_path / "report.txt").read_text()
    assert "left out (2)" in report and "valence 14" in report


def test_landmarks_outside_the_frame_are_reported(tmp_path):
    labels = {0: {"valence": 0, "arousal": 0, "landmarks": (np.array(face_landmarks()) + [80, 0]).tolist()}}
    folder = write_good_clip(tmp_path, n=1, labels=labels)
    _, problems = scan_clip(folder)
    assert any("outside the 64x48 frame" in p.message for p in problems)


def test_missing_json_and_empty_folder(tmp_path):
    write_good_clip(tmp_path)
    (tmp_path / "001" / "001.json").unlink()
    (tmp_path / "002").mkdir()
    write_good_clip(tmp_path, clip_id=3)
    frames, problems = index_dataset(tmp_path, "skip")
    assert frames["clip_id"].unique().tolist() == ["003"]
    assert {p.message for p in problems} == {"annotation file is missing", "clip folder has no frames"}


def test_missing_root():
    with pytest.raises(BadInputError, match="does not exist"):
        index_dataset("/nonexistent/afew")


def test_read_annotation_of_real_format(tmp_path):
    path = tmp_path / "001.json"
    path.write_text(
        json.dumps(
            {
                "actor": "x",
                "frames": {"00000": {"valence": 0, "arousal": 1, "landmarks": face_landmarks()}},
                "video_id": "001",
            }
        )
    )
    assert read_annotation(path)["frames"]["00000"]["arousal"] == 1
