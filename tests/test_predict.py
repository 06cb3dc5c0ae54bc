"""Valence/arousal curves for your own videos: `snakemake predict`, the `clipva predict` command, and
annotated videos as training data. End to end on videos made from the tiny demo's frames."""

import dataclasses
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import BIN, run_snakemake
from PIL import Image

import clipva.predict
from clipva.afew import read_frames
from clipva.checkpoints import load_head
from clipva.encoder import load_clip_from
from clipva.predict import Model, load_model, predict_video, predict_video_files
from clipva.splits import read_clips
from clipva.video import probe, write_video

pytestmark = pytest.mark.e2e
FPS = 10
# These tests are about the video path and compare its predictions with the store's and the labels, so they
# train what the tiny config learns in a few epochs: labels that move little within a clip, and the head the
# thresholds were measured with (linear readout, tanh output, no smoothing). The default head keeps 2 test
# clips' valence nearly constant here, which makes the correlations meaningless, and with the default kernel
# readout the tiny set's few validation frames decide whether a correction is kept, which moves them by
# chance; how the kernel readout carries over to video at the demo's scale is benchmarks/crop_boxes.py's.
STILL = {
    "demo": {"dynamics": {"level": 7.5, "movement": 2}},
    "head": {"readout": "linear", "output": "tanh", "smoothing": False, "whitening_eps": 1.0, "input_dropout": 0.0},
}


def _clip_video(workdir, clip_id, out):
    frames = sorted((workdir / "results/demo/afew-va" / clip_id).glob("*.png"))
    write_video(out, [Image.open(p).convert("RGB") for p in frames], FPS)
    return len(frames)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny demo trained, and videos of its test clips (their frames at 10 fps)."""
    workdir = tmp_path_factory.mktemp("predict")
    run_snakemake(workdir, overrides=STILL)
    clips = read_clips(workdir / "results/index/clips.csv")
    test = clips.loc[clips["split"] == "test", "clip_id"].tolist()[:3]
    videos = workdir / "my videos"
    videos.mkdir()
    counts = {clip_id: _clip_video(workdir, clip_id, videos / f"clip {clip_id}.mp4") for clip_id in test}
    run_snakemake(workdir, "predict", overrides={**STILL, "predict": {"videos": str(videos)}})
    return workdir, videos, counts


def test_predict_writes_one_table_and_plot_per_video(trained):
    workdir, videos, counts = trained
    found = []
    for clip_id, n in counts.items():
        table = pd.read_csv(workdir / f"results/predict/clip {clip_id}.csv")
        assert list(table.columns) == ["time", "frame", "valence", "arousal", "face_found"]
        assert len(table) == n == probe(videos / f"clip {clip_id}.mp4").n_frames
        assert table["time"].to_numpy() == pytest.approx(np.arange(n) / FPS)
        found += table["face_found"].tolist()
        assert table[["valence", "arousal"]].abs().max().max() <= 10
        assert (workdir / f"results/predict/clip {clip_id}.png").read_bytes()[:4] == b"\x89PNG"
        assert 'src="data:video/mp4;base64,' in (workdir / f"results/predict/clip {clip_id}.html").read_text()
    assert np.mean(found) > 0.75  # small (160x128) compressed cartoon frames: the detector misses a few
    summary = pd.read_csv(workdir / "results/predict/summary.csv").set_index("video")
    assert sorted(summary.index) == sorted(f"clip {c}.mp4" for c in counts)
    for clip_id, n in counts.items():
        row, table = summary.loc[f"clip {clip_id}.mp4"], pd.read_csv(workdir / f"results/predict/clip {clip_id}.csv")
        assert (row["frames"], row["frames_with_face"]) == (n, table["face_found"].sum())
        assert row["arousal_max"] == pytest.approx(table["arousal"].max(), abs=1e-3)


def _video_store_labels(workdir, counts):
    """Per frame of the videos' clips: the video's predictions, the store's (evaluate) and the labels."""
    evaluated = pd.read_csv(workdir / "results/runs/main/eval/predictions.csv", dtype={"clip_id": str})
    frames = read_frames(workdir / "results/index/frames.csv")
    video, store, labels = [], [], []
    for clip_id in counts:
        table = pd.read_csv(workdir / f"results/predict/clip {clip_id}.csv")
        ours = evaluated[evaluated["clip_id"] == clip_id].sort_values("frame")
        rows = frames[frames["clip_id"] == clip_id].sort_values("frame")
        assert len(ours) == len(table) == len(rows)  # the video holds the clip's frames, in order
        video.append(table[["valence", "arousal"]].to_numpy())
        store.append(ours[["valence_pred", "arousal_pred"]].to_numpy())
        labels.append(rows[["valence", "arousal"]].to_numpy())
    return np.concatenate(video), np.concatenate(store), np.concatenate(labels)


def _corr(a, b):
    return np.corrcoef(a, b)[0, 1]


def test_video_predictions_follow_the_evaluated_model_and_the_arousal_labels(trained):
    """The same model on video (detected faces, compressed frames) as on the store (landmark crops)."""
    video, store, labels = _video_store_labels(*trained[::2])
    labeled = ~np.isnan(labels).any(1)
    for k in range(2):
        assert _corr(video[:, k], store[:, k]) > 0.6
    assert _corr(video[labeled, 1], labels[labeled, 1]) > _corr(store[labeled, 1], labels[labeled, 1]) - 0.25


@pytest.mark.xfail(
    strict=True,
    reason="known gap (issue #19): on this demo's test clips the video's valence follows the labels at "
    "0.17 against 0.58 for the store's predictions of the same model; the cause is the crop box, not the "
    "video (benchmarks/crop_boxes.py): training crops around the landmark box, which moves with the "
    "expression, the detector's box does not (training with face_crop.method detector closes it: the next test)",
)
def test_video_valence_follows_the_labels_as_the_store_does(trained):
    video, store, labels = _video_store_labels(*trained[::2])
    labeled = ~np.isnan(labels).any(1)
    assert _corr(video[labeled, 0], labels[labeled, 0]) > _corr(store[labeled, 0], labels[labeled, 0]) - 0.25


def test_a_model_trained_on_detected_faces_predicts_videos_as_the_store_does(trained, tmp_path):
    """face_crop.method detector: training crops where prediction will, so the gap above closes."""
    _, videos, counts = trained
    overrides = {**STILL, "face_crop": {"method": "detector"}, "predict": {"videos": str(videos)}}
    run_snakemake(tmp_path, "all", "predict", overrides=overrides)
    boxes = read_frames(tmp_path / "results/index/frames_detected.csv")["box_source"]
    assert set(boxes) <= {"detected", "interpolated"} and (boxes == "detected").mean() > 0.9
    video, store, labels = _video_store_labels(tmp_path, counts)
    labeled = ~np.isnan(labels).any(1)
    for k in range(2):  # the same crops, up to the video's compression
        assert _corr(video[:, k], store[:, k]) > 0.9
        assert _corr(video[labeled, k], labels[labeled, k]) > _corr(store[labeled, k], labels[labeled, k]) - 0.1
    assert "face crop: detector" in (tmp_path / "results/runs/main/model/README.md").read_text()
    # a landmark-trained model is still used, with a warning and a note in its card saying why not to
    warned = "was trained on crops around annotated landmarks"
    clip_id = next(iter(counts))
    assert warned in (trained[0] / f"logs/predict/clip {clip_id}.log").read_text()
    assert warned not in (tmp_path / f"logs/predict/clip {clip_id}.log").read_text()
    assert "face_crop.method: detector" in (trained[0] / "results/runs/main/model/README.md").read_text()


def test_the_command_line_gives_what_the_rule_gives(trained, tmp_path):
    workdir, videos, counts = trained
    clip_id = next(iter(counts))
    proc = subprocess.run(
        [
            str(BIN / "clipva"),
            "predict",
            str(videos / f"clip {clip_id}.mp4"),
            "--model",
            str(workdir / "results/runs/main/model"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    ours = pd.read_csv(tmp_path / f"clip {clip_id}.csv")
    rule = pd.read_csv(workdir / f"results/predict/clip {clip_id}.csv")
    pd.testing.assert_frame_equal(ours, rule)
    bad = subprocess.run(
        [str(BIN / "clipva"), "predict", str(videos), "--model", "nonexistent"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 1 and "--model nonexistent" in bad.stderr and "Traceback" not in bad.stderr


def _predict_cli(*args, cwd=None):
    return subprocess.run([str(BIN / "clipva"), "predict", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_a_folder_of_videos_gets_a_summary_skips_what_cannot_be_decoded_and_reruns_only_what_changed(trained, tmp_path):
    workdir, videos, counts = trained
    folder, out, model = tmp_path / "batch", tmp_path / "out", tmp_path / "model"
    shutil.copytree(videos, folder)
    shutil.copytree(workdir / "results/runs/main/model", model)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)

    first = _predict_cli(folder, "--model", model, "--out", out)
    assert first.returncode == 1, first.stderr  # one video could not be predicted; the others were
    assert "skipped broken.mp4:" in first.stderr and "Traceback" not in first.stderr
    summary = pd.read_csv(out / "summary.csv").set_index("video")
    assert sorted(summary.index) == sorted([*(f"clip {c}.mp4" for c in counts), "broken.mp4"])
    assert summary.loc["broken.mp4", "status"] == "skipped" and "broken.mp4" in summary.loc["broken.mp4", "reason"]
    assert not (out / "broken.csv").exists()
    for clip_id, n in counts.items():
        row, table = summary.loc[f"clip {clip_id}.mp4"], pd.read_csv(out / f"clip {clip_id}.csv")
        assert row["status"] == "done" and row["frames"] == len(table) == n
        assert row["frames_with_face"] == table["face_found"].sum()
        assert row["duration_s"] == pytest.approx(n / FPS, abs=1 / FPS)
        for dim in ("valence", "arousal"):
            assert row[f"{dim}_mean"] == pytest.approx(table[dim].mean(), abs=1e-3)
            assert row[f"{dim}_min"] <= row[f"{dim}_mean"] <= row[f"{dim}_max"]
    made = {p.name: p.stat().st_mtime_ns for p in out.glob("clip *")}

    (folder / "broken.mp4").unlink()
    again = _predict_cli(folder, "--model", model, "--out", out)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("clip *")} == made  # all up to date: nothing redone
    assert "broken.mp4" not in set(pd.read_csv(out / "summary.csv")["video"])

    doc = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**doc, "metrics": {}}))  # another model (as far as files go)
    changed = _predict_cli(folder, "--model", model, "--out", out)
    assert changed.returncode == 0, changed.stderr
    assert all(p.stat().st_mtime_ns != made[p.name] for p in out.glob("clip *"))
    assert set(pd.read_csv(out / "summary.csv")["model"]) != set(summary["model"])


def test_the_annotated_video_has_every_source_frame_at_the_source_rate_with_the_gauge_drawn(trained, tmp_path):
    from clipva.video import decode

    workdir, videos, counts = trained
    model = load_model(workdir / "results/runs/main/model")
    video = videos / f"clip {next(iter(counts))}.mp4"
    out = tmp_path / "clip.annotated.mp4"
    table = predict_video_files(video, model, tmp_path / "c.csv", tmp_path / "c.png", "c", annotated=out, fps=4)
    source, annotated = probe(video), probe(out)
    assert annotated.n_frames == source.n_frames and annotated.fps == pytest.approx(source.fps)
    assert (annotated.width, annotated.height) == (source.width + source.width % 2, source.height + source.height % 2)
    first, drawn = next(decode(video)), next(decode(out))
    changed = np.abs(np.asarray(drawn[2], dtype=int)[: source.height, : source.width] - np.asarray(first[2], dtype=int))
    assert (changed.max(axis=2) > 60).mean() > 0.005  # the box and the gauge, not just compression noise
    assert len(table) == 1 + int(source.duration * 4 - 1e-9)


def test_decoding_beside_the_encoder_gives_the_same_predictions(trained):
    workdir, videos, counts = trained
    model = load_model(workdir / "results/runs/main/model")
    video = videos / f"clip {next(iter(counts))}.mp4"
    pd.testing.assert_frame_equal(
        predict_video(video, model, overlap=True, batch_size=4), predict_video(video, model, overlap=False)
    )


def _checkpoint(workdir) -> Model:
    """The run's fine-tuned checkpoint with the run's own settings, as a model `predict_video` takes."""
    settings = yaml.safe_load((workdir / "results/config.yaml").read_text())["config"]
    head, ckpt = load_head(workdir / "results/runs/main/finetune/best.pt")
    return Model(load_clip_from(settings["clip"]), None, head.eval(), ckpt["window"], settings["face_crop"])


def test_a_shared_model_folder_predicts_as_the_run_s_own_checkpoint(trained, tmp_path):
    """The exported folder (safetensors and JSON, copied elsewhere as a download would be) gives the same
    curves as the run's fine-tuned checkpoint with the run's settings."""
    workdir, videos, counts = trained
    shared = tmp_path / "downloaded model"
    shutil.copytree(workdir / "results/runs/main/model", shared)
    kinds = {p.suffix or p.name for p in shared.rglob("*") if p.is_file()}
    assert kinds == {".json", ".md", ".safetensors", ".snakemake_timestamp"}, kinds
    video = videos / f"clip {next(iter(counts))}.mp4"
    pd.testing.assert_frame_equal(predict_video(video, load_model(shared)), predict_video(video, _checkpoint(workdir)))
    card = (shared / "README.md").read_text()
    metrics = json.loads((workdir / "results/runs/main/eval/metrics.json").read_text())
    assert f"test_mean_ccc: {metrics['pooled']['mean_ccc']:.4f}" in card and "the clipva demo" in card


def test_a_model_on_centred_features_takes_each_video_as_its_own_actor(trained, monkeypatch):
    """With head.centre: actor a video's features lose their mean over the frames with a face: a shift of every
    frame's features (how a person looks, not how they feel) leaves its curves as they were."""
    workdir, videos, counts = trained
    model = _checkpoint(workdir)
    video = videos / f"clip {next(iter(counts))}.mp4"
    plain = predict_video(video, model)
    model.head.cfg = dataclasses.replace(model.head.cfg, centre="actor")
    centred = predict_video(video, model)
    encode = clipva.predict._encode
    shift = np.random.default_rng(0).normal(0, 0.5, model.head.cfg.in_dim).astype(np.float32)
    monkeypatch.setattr(clipva.predict, "_encode", lambda m, crops: encode(m, crops) + shift)
    pd.testing.assert_frame_equal(predict_video(video, model), centred, check_exact=False, rtol=0, atol=1e-4)
    model.head.cfg = dataclasses.replace(model.head.cfg, centre="none")  # without centring the shift shows
    moved = predict_video(video, model)[["valence", "arousal"]].to_numpy()
    assert np.abs(moved - plain[["valence", "arousal"]].to_numpy()).max() > 0.1


def test_the_default_kernel_readout_predicts_videos_from_its_folder_and_in_any_batches(trained, tmp_path):
    """The default head (kernel readout) on the video path: its exported folder predicts as its checkpoint, and
    decoding beside the encoder moves its curves by less than the 4 decimals the tables are written with: the
    kernel correction enlarges the encoder's batch-dependent rounding (5e-6 here; 2.7e-5 with the tanh head
    above, beyond pandas' default tolerance, which the linear readout's stay within)."""
    workdir, videos, counts = trained
    copy = tmp_path / "kernel"
    shutil.copytree(workdir, copy)  # the same index and features: only fine-tuning and the export run again
    run_snakemake(copy, "results/runs/main/model", overrides={"demo": STILL["demo"]})
    model = load_model(copy / "results/runs/main/model")
    assert model.head.cfg.readout == "kernel" and model.head.kernel is not None
    video = videos / f"clip {next(iter(counts))}.mp4"
    curves = predict_video(video, model)
    pd.testing.assert_frame_equal(curves, predict_video(video, _checkpoint(copy)))
    beside = predict_video(video, model, overlap=True, batch_size=4)
    pd.testing.assert_frame_equal(beside, curves, check_exact=False, rtol=0, atol=1e-4)


def test_annotated_videos_become_training_data(trained, tmp_path):
    """A folder of videos with per-frame label files, converted into AFEW-VA layout by the workflow."""
    workdir, _, _ = trained
    frames = read_frames(workdir / "results/index/frames.csv")
    source = tmp_path / "annotated"
    source.mkdir()
    clips = sorted(frames["clip_id"].unique())[:2]
    for clip_id in clips:
        rows = frames[(frames["clip_id"] == clip_id) & frames["labeled"]].sort_values("frame")
        n = _clip_video(workdir, clip_id, source / f"v{clip_id}.mp4")
        pngs = sorted(frames.loc[frames["clip_id"] == clip_id, "frame"])
        by_png = dict(zip(pngs, range(n), strict=True))  # the video's frame k is the clip's k-th PNG
        pd.DataFrame(
            {"frame": [by_png[f] for f in rows["frame"]], "valence": rows["valence"], "arousal": rows["arousal"]}
        ).to_csv(source / f"v{clip_id}.csv", index=False)
    work = tmp_path / "work"
    work.mkdir()
    run_snakemake(work, "results/index/frames.csv", overrides={"dataset": {"root": str(source), "format": "videos"}})
    converted = read_frames(work / "results/index/frames.csv")
    assert converted["clip_id"].unique().tolist() == ["001", "002"]
    for new_id, clip_id in zip(["001", "002"], clips, strict=True):
        pngs = sorted(frames.loc[frames["clip_id"] == clip_id, "frame"])
        original = frames[(frames["clip_id"] == clip_id) & frames["labeled"]]
        expected = {pngs.index(f): (v, a) for f, v, a in original[["frame", "valence", "arousal"]].itertuples(False)}
        ours = converted[(converted["clip_id"] == new_id) & converted["labeled"]]
        assert len(ours) >= 0.8 * len(expected)  # labeled frames where a face was found
        for frame, v, a in ours[["frame", "valence", "arousal"]].itertuples(False):
            assert (v, a) == expected[frame]


def test_prefetching_keeps_order_and_raises_the_producer_s_error_in_the_consumer():
    from clipva.errors import BadInputError
    from clipva.predict import _prefetched

    assert list(_prefetched(iter(range(50)), 3)) == list(range(50))

    def failing():
        yield from range(5)
        raise BadInputError("clip.mp4: cannot read video")

    got = []
    with pytest.raises(BadInputError, match="clip.mp4"):
        for item in _prefetched(failing(), 2):
            got.append(item)
    assert got == list(range(5))
    stream = _prefetched(iter(range(1000)), 2)
    assert next(stream) == 0
    stream.close()  # a consumer that stops early does not leave the producer blocked
