"""The synthetic demo data set: AFEW-VA layout, value ranges, quirks, determinism, learnable geometry."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipva.afew import N_LANDMARKS, write_afew_clip
from clipva.demo import make_demo

N_CLIPS, N_ACTORS, SIZES = 12, 6, ((160, 128), (192, 144))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return root, make_demo(root, n_clips=N_CLIPS, n_actors=N_ACTORS, frame_sizes=SIZES, seed=0)


def _clips(root: Path) -> list[tuple[Path, dict, list[int]]]:
    """(folder, annotation document, sorted frame indices of the PNGs) per clip."""
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        doc = json.loads((folder / f"{folder.name}.json").read_text())
        out.append((folder, doc, sorted(int(p.stem) for p in folder.glob("*.png"))))
    return out


def _labelled_frames(root: Path):
    """(folder, frame key, annotation, image) for every frame with both a PNG and a label."""
    for folder, doc, _ in _clips(root):
        for key, ann in doc["frames"].items():
            if (folder / f"{key}.png").exists():
                yield folder, key, ann, Image.open(folder / f"{key}.png")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout(demo):
    root, summary = demo
    clips = _clips(root)
    assert [f.name for f, _, _ in clips] == [f"{k:03d}" for k in range(1, N_CLIPS + 1)]
    assert summary["n_clips"] == N_CLIPS and summary["n_frames"] == sum(len(pngs) for *_, pngs in clips)
    for folder, doc, pngs in clips:
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted([f"{folder.name}.json"] + [f"{i:05d}.png" for i in pngs])
        assert pngs == list(range(len(pngs)))  # contiguous from 00000
        assert set(doc) == {"actor", "frames", "video_id"} and doc["video_id"] == folder.name
        assert re.fullmatch(r"actor_\d{2}", doc["actor"]) and 1 <= int(doc["actor"][6:]) <= N_ACTORS
        assert all(re.fullmatch(r"\d{5}", k) for k in doc["frames"])
        assert all(set(ann) == {"valence", "arousal", "landmarks"} for ann in doc["frames"].values())
        text = (folder / f"{folder.name}.json").read_text()
        assert text == json.dumps(doc, indent=None, sort_keys=True)
    assert {doc["actor"] for _, doc, _ in clips} == {f"actor_{a:02d}" for a in range(1, N_ACTORS + 1)}


def test_values_in_range_and_landmarks_inside_frame(demo):
    root, summary = demo
    n = 0
    for _, _, ann, img in _labelled_frames(root):
        for key in ("valence", "arousal"):
            assert type(ann[key]) is int and -10 <= ann[key] <= 10
        lm = ann["landmarks"]
        assert len(lm) == N_LANDMARKS and all(len(p) == 2 and all(type(c) is float for c in p) for p in lm)
        lm, (w, h) = np.array(lm), img.size
        assert (lm >= 0).all() and (lm[:, 0] <= w - 1).all() and (lm[:, 1] <= h - 1).all()
        assert 0.2 < np.ptp(lm[:, 1]) / h < 0.7  # brows to chin: a face of ~35-70% of the frame height
        n += 1
    assert n == summary["n_labelled_frames"] > 300


def _trajectories(root: Path) -> list[np.ndarray]:
    return [
        np.array([[a["valence"], a["arousal"]] for _, a in sorted(doc["frames"].items())])
        for _, doc, _ in _clips(root)
        if doc["frames"]
    ]


def _within_share(per_clip: list[np.ndarray]) -> np.ndarray:
    """Share of the label variance that lies within clips, per dimension."""
    return (
        np.mean([c.var(0) * len(c) for c in per_clip], 0)
        / np.concatenate(per_clip).var(0)
        / np.mean([len(c) for c in per_clip])
    )


def test_labels_cover_the_range_and_move_within_clips(demo):
    root, _ = demo
    per_clip = _trajectories(root)
    va = np.concatenate(per_clip)
    assert (va.std(0) > 3).all() and (va.min(0) <= -6).all() and (va.max(0) >= 6).all()
    assert (_within_share(per_clip) > 0.2).all()  # a temporal model has something to track within a clip
    steps = np.abs(np.concatenate([np.diff(c, axis=0) for c in per_clip]))
    assert steps.max() <= 3 and steps.mean() < 1.0


def test_dynamics_are_configurable(tmp_path):
    def labels(**dynamics):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        make_demo(
            root,
            n_clips=16,
            n_actors=2,
            min_frames=30,
            max_frames=40,
            frame_sizes=((48, 40),),
            unlabeled_clips=0,
            dynamics=dynamics,
        )
        return _trajectories(root)

    still = labels(movement=0, jumps=0)
    assert all((c == c[0]).all() for c in still) and np.concatenate(still).std() > 2
    calm, lively = labels(movement=1), labels(movement=6)
    assert (_within_share(lively) > _within_share(calm) + 0.2).all()
    jumpy = labels(movement=3, period=1000, jumps=10)
    steps = np.abs(np.concatenate([np.diff(c, axis=0) for c in jumpy]))
    assert steps.max() >= 4 and (steps == 0).mean() > 0.5  # steps, not drift
    with pytest.raises(ValueError, match="period > 0"):
        make_demo(tmp_path / "bad", n_clips=1, dynamics={"period": 0})


def test_clip_lengths_sizes_and_actor_identity(demo):
    root, _ = demo
    lengths, sizes, ratio = set(), set(), {}
    for folder, doc, pngs in _clips(root):
        lengths.add(len(pngs))
        clip_sizes = {Image.open(folder / f"{i:05d}.png").size for i in pngs}
        assert len(clip_sizes) == 1
        sizes |= clip_sizes
        for ann in doc["frames"].values():  # eye spacing / jaw width: fixed by the actor's face
            lm = np.array(ann["landmarks"])
            ratio.setdefault(doc["actor"], []).append(np.linalg.norm(lm[42] - lm[39]) / np.linalg.norm(lm[16] - lm[0]))
    assert len(lengths) > 3 and min(lengths) >= 19 and max(lengths) <= 50
    assert sizes == set(SIZES)
    within = max(np.std(r) for r in ratio.values())
    between = np.std([np.mean(r) for r in ratio.values()])
    assert within < 0.01 < between


def test_quirks_present_exactly_as_reported(demo):
    root, summary = demo
    found = []
    for folder, doc, pngs in _clips(root):
        keys = {int(k) for k in doc["frames"]}
        if not keys:
            assert pngs, "an unlabeled clip still has its frames"
            found.append(("unlabeled", folder.name, None))
            continue
        found += [("no annotation", folder.name, f"{i:05d}") for i in sorted(set(pngs) - keys)]
        found += [("no png", folder.name, f"{i:05d}") for i in sorted(keys - set(pngs))]
    reported = []
    for q in summary["quirks"]:
        if m := re.match(r"clip (\d{3}): frame (\d{5})\.png has no annotation entry", q):
            reported.append(("no annotation", *m.groups()))
        elif m := re.match(r"clip (\d{3}): annotation entry (\d{5}) has no frame file", q):
            reported.append(("no png", *m.groups()))
        elif m := re.match(r"clip (\d{3}): unlabeled", q):
            reported.append(("unlabeled", m.group(1), None))
    assert len(reported) == len(summary["quirks"]) == 3
    assert sorted(found) == sorted(reported)
    assert ("unlabeled", f"{N_CLIPS:03d}", None) in found  # the last clips are the unlabeled ones
    no_png = next(q for q in found if q[0] == "no png")
    assert int(no_png[2]) == len(_clips(root)[int(no_png[1]) - 1][2])  # it is the clip's last frame


@pytest.mark.parametrize("unlabeled", [0, 2])
def test_unlabeled_clips_argument(tmp_path, unlabeled):
    make_demo(tmp_path, n_clips=5, n_actors=2, min_frames=4, max_frames=6, unlabeled_clips=unlabeled)
    empty = [folder.name for folder, doc, _ in _clips(tmp_path) if not doc["frames"]]
    assert empty == [f"{k:03d}" for k in range(6 - unlabeled, 6)]


def test_deterministic(tmp_path):
    kwargs = dict(n_clips=4, n_actors=2, min_frames=5, max_frames=8)
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        make_demo(tmp_path / name, seed=seed, **kwargs)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b and len(a) > 20
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)


def test_geometry_follows_labels(demo):
    root, _ = demo
    rows, mouth, cheek = [], [], []
    for _, _, ann, img in _labelled_frames(root):
        lm = np.array(ann["landmarks"])
        iod = np.linalg.norm(lm[45] - lm[36])  # outer eye corners: face scale
        opening = np.linalg.norm(lm[66] - lm[62]) / iod
        corners_up = ((lm[62, 1] + lm[66, 1]) / 2 - (lm[48, 1] + lm[54, 1]) / 2) / iod
        eyes = (np.linalg.norm(lm[41] - lm[37]) + np.linalg.norm(lm[46] - lm[44])) / iod
        rows.append((ann["valence"], ann["arousal"], opening, corners_up, eyes))
        if np.linalg.norm(lm[66] - lm[62]) >= 4:  # pixels agree with landmarks: open mouth drawn dark
            gray = img.convert("L")
            mouth.append(gray.getpixel(tuple((lm[62] + lm[66]) / 2)))
            cheek.append(gray.getpixel(tuple((lm[1] + lm[31]) / 2)))
    v, a, opening, corners_up, eyes = np.array(rows).T
    assert np.corrcoef(opening, a)[0, 1] > 0.5
    assert np.corrcoef(eyes, a)[0, 1] > 0.5
    assert np.corrcoef(corners_up, v)[0, 1] > 0.5
    design = np.stack([np.ones_like(v), v, a], 1)  # each cue follows its own dimension, not the other one
    for cue, own, other in ((opening, 2, 1), (eyes, 2, 1), (corners_up, 1, 2)):
        coef = np.linalg.lstsq(design, cue, rcond=None)[0]
        assert abs(coef[other]) < 0.1 * abs(coef[own])
    assert len(mouth) > 50 and np.mean(np.array(mouth) < np.array(cheek) - 15) > 0.95


def test_frame_mean_intensity_does_not_carry_labels(demo):
    root, _ = demo
    rows = [
        (ann["valence"], ann["arousal"], np.asarray(img.convert("L"), float).mean(), np.asarray(img).mean())
        for _, _, ann, img in _labelled_frames(root)
    ]
    v, a, luma, rgb = np.array(rows).T
    for intensity in (luma, rgb):
        assert abs(np.corrcoef(intensity, v)[0, 1]) < 0.2 and abs(np.corrcoef(intensity, a)[0, 1]) < 0.2
    assert luma.std() > 5  # brightness does vary


def test_write_afew_clip(tmp_path):
    frames = {0: Image.new("RGB", (8, 6), (10, 20, 30)), 2: Image.new("RGB", (8, 6))}
    ann = {1: {"valence": 3, "arousal": -4, "landmarks": [[1.0, 2.0]] * N_LANDMARKS}}
    folder = write_afew_clip(tmp_path, 7, frames, ann, actor="actor_01", video_id="x7")
    assert folder == tmp_path / "007"
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00002.png", "007.json"]
    doc = json.loads((folder / "007.json").read_text())
    assert doc == {"actor": "actor_01", "frames": {"00001": ann[1]}, "video_id": "x7"}
    assert Image.open(folder / "00000.png").getpixel((0, 0)) == (10, 20, 30)
    write_afew_clip(tmp_path, 8, [frames[0]], {}, actor="actor_02")
    assert json.loads((tmp_path / "008" / "008.json").read_text())["video_id"] == "008"
