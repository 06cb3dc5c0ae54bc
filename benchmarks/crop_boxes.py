"""Why predictions on video differ from the store's: the crop box, or the video's compression?

For each test clip of a finished run (the README's main command, and `snakemake results/runs/main/model`),
the run's exported model predicts four ways, and each is correlated with the labels (pooled over the
labelled frames of the test clips) and with its predictions from the crops it was trained on:

- png_landmarks: the PNG frames cropped around the annotated landmark box, as in training and evaluation;
- png_detector : the PNG frames cropped around the face detector's tracked box, as `clipva predict` crops
  (and as training does with face_crop.method: detector);
- video_landmarks, video_detector: the same on the frames of an mp4 (libx264, 10 fps) made from the PNGs.

    .venv/bin/python benchmarks/crop_boxes.py            # in the repository root, after the main command
    .venv/bin/python benchmarks/crop_boxes.py --workdir DIR --run main
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from clipva.afew import read_frames
from clipva.crop import crop_face, crop_margin
from clipva.faces import BOX_COLUMNS, FaceDetector, track_main_face
from clipva.jobs import run_model_dir
from clipva.predict import _encode, load_model
from clipva.sequences import VA_SCALE, predict_clip
from clipva.splits import read_clips
from clipva.video import decode, write_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("."), help="folder holding results/ (default: .)")
    parser.add_argument("--run", default="main")
    args = parser.parse_args()
    model = load_model(args.workdir / run_model_dir(args.run))
    margin = crop_margin(model.face_crop)
    if margin is None:
        raise SystemExit("the run crops no faces (face_crop.method: none): nothing to compare")
    frames = read_frames(args.workdir / "results/index/frames.csv")
    clips = read_clips(args.workdir / "results/index/clips.csv")
    detector = FaceDetector()

    def predict(images, boxes):
        crops = [crop_face(image, tuple(box), margin) for image, box in zip(images, boxes, strict=True)]
        x = np.concatenate([_encode(model, crops[k : k + 32]) for k in range(0, len(crops), 32)])
        return predict_clip(model.head, x, model.window) * VA_SCALE

    def detected(images):
        return track_main_face([detector(image) for image in images])[BOX_COLUMNS].to_numpy(dtype=float)

    ways = ("png_landmarks", "png_detector", "video_landmarks", "video_detector")
    out, labels = {way: [] for way in ways}, []
    with tempfile.TemporaryDirectory() as tmp:
        for clip_id in clips.loc[clips["split"] == "test", "clip_id"]:
            rows = frames[frames["clip_id"] == clip_id].sort_values("frame")
            pngs = [Image.open(path).convert("RGB") for path in rows["path"]]
            video = write_video(Path(tmp) / f"{clip_id}.mp4", pngs, 10)
            decoded = [image for _, _, image in decode(video, 10)]
            landmarks = rows[BOX_COLUMNS].to_numpy(dtype=float)
            out["png_landmarks"].append(predict(pngs, landmarks))
            out["png_detector"].append(predict(pngs, detected(pngs)))
            out["video_landmarks"].append(predict(decoded, landmarks))
            out["video_detector"].append(predict(decoded, detected(decoded)))
            labels.append(rows[["valence", "arousal"]].to_numpy(dtype=float))
    labels = np.concatenate(labels)
    labelled = ~np.isnan(labels).any(axis=1)
    trained_on = "png_detector" if model.face_crop["method"] == "detector" else "png_landmarks"
    reference = np.concatenate(out[trained_on])
    print(
        f"run {args.run} (face_crop.method {model.face_crop['method']}): {len(out['png_landmarks'])} test clips, "
        f"{labelled.sum()} labelled frames"
    )
    for way in ways:
        pred = np.concatenate(out[way])
        corr = [np.corrcoef(pred[labelled, k], labels[labelled, k])[0, 1] for k in range(2)]
        same = [np.corrcoef(pred[:, k], reference[:, k])[0, 1] for k in range(2)]
        print(
            f"{way:16s}: correlation with the labels valence {corr[0]:.3f} arousal {corr[1]:.3f}; "
            f"with {trained_on}'s predictions (the training crops) {same[0]:.3f} {same[1]:.3f}"
        )


if __name__ == "__main__":
    main()
