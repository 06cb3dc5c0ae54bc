"""The ``clipva`` command: valence/arousal curves for video files with a trained model.

    clipva predict VIDEO [VIDEO ...] --model RUN      # RUN: a run name (its exported model) or a model folder

It runs the same code as the workflow's predict target (clipva.predict) and writes, for each video, NAME.csv
(time, frame, valence, arousal, face_found) and NAME.png (the curves and the valence-arousal path), and
summary.csv (a row per video: duration, frames with a face, mean and range of valence and arousal). A video
that cannot be decoded is skipped and listed (exit status 1 once the others are done); videos already
predicted by the same model with the same settings are not predicted again.
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


def predict(args: argparse.Namespace) -> int:
    from clipva.predict import SUMMARY, predict_folder
    from clipva.video import list_videos

    videos = [v for path in args.videos for v in list_videos(path)]
    summary = predict_folder(
        videos, _model_dir(args.model), args.out, fps=args.fps, no_face=args.no_face, annotate=args.annotate
    )
    done = summary[summary["status"] == "done"]
    print(f"{len(done)} of {len(summary)} videos have their curves in {args.out} (a row each in {args.out / SUMMARY})")
    skipped = summary[summary["status"] != "done"]
    for row in skipped.itertuples():
        print(f"skipped {row.video}: {row.reason}", file=sys.stderr)
    return 1 if len(skipped) else 0


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
    p.add_argument(
        "--annotate",
        action="store_true",
        help="also write NAME.annotated.mp4: every source frame with the face box and a valence/arousal gauge",
    )
    p.add_argument("--out", type=Path, default=Path(PREDICTIONS), help=f"output folder (default {PREDICTIONS})")
    args = parser.parse_args(argv)
    args.fps = args.fps or None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return predict(args)
    except ClipvaError as err:
        print(f"clipva: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
