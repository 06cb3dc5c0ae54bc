"""The ``clipva`` command: valence/arousal curves for video files with a trained model.

    clipva predict VIDEO [VIDEO ...] --model RUN      # RUN: a run name (its exported model) or a model folder

It runs the same code as the workflow's predict target (clipva.predict) and writes, for each video, NAME.csv
(time, frame, valence, arousal, face_found) and NAME.png (the curves and the valence-arousal path).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from clipva.errors import ClipvaError
from clipva.jobs import PREDICTIONS, RUN_MODEL, export_hint, run_model_dir


def _model_dir(model: str) -> Path:
    path = Path(model)
    if (path / "model.json").is_file():
        return path
    run = run_model_dir(model)
    if (run / "model.json").is_file():
        return run
    raise ClipvaError(f"--model {model}: neither a model folder nor a run with {run}/model.json ({export_hint(model)})")


def predict(args: argparse.Namespace) -> None:
    from clipva.predict import load_model, predict_video_files
    from clipva.video import list_videos

    videos = [v for path in args.videos for v in list_videos(path)]
    model = load_model(_model_dir(args.model))
    args.out.mkdir(parents=True, exist_ok=True)
    for video in videos:
        csv, plot = args.out / f"{video.stem}.csv", args.out / f"{video.stem}.png"
        table = predict_video_files(video, model, csv, plot, video.name, fps=args.fps, no_face=args.no_face)
        print(f"{video}: {len(table)} frames, face in {int(table['face_found'].sum())} -> {csv}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clipva", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("predict", help="valence/arousal curves of video files")
    p.add_argument("videos", nargs="+", help="video files (mp4, avi, mkv, webm) or folders of them")
    p.add_argument("--model", required=True, help=f"a run name ({RUN_MODEL.format(run='RUN')}) or a model folder")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second decoded (default 10; 0: the video's own)")
    p.add_argument(
        "--no-face",
        choices=("interpolate", "empty"),
        default="interpolate",
        help="values of frames without a face: predicted from the interpolated box, or left empty",
    )
    p.add_argument("--out", type=Path, default=Path(PREDICTIONS), help=f"output folder (default {PREDICTIONS})")
    args = parser.parse_args(argv)
    args.fps = args.fps or None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        predict(args)
    except ClipvaError as err:
        print(f"clipva: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
