"""The figures are drawn without pyplot: importing clipva leaves the program's matplotlib backend alone, and
plotting leaves no figure behind."""

import subprocess
import sys

import numpy as np
import pandas as pd
from PIL import Image

from clipva.plots import all_plots, video_curves


def test_importing_clipva_keeps_the_programs_backend():
    code = (
        "import matplotlib; matplotlib.use('svg'); import clipva.plots, clipva.experiments, clipva.tune; "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"


def test_every_figure_is_written_and_none_is_left_open(tmp_path):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    rows = []
    for clip in ("001", "002"):
        labels = rng.integers(-10, 11, size=(12, 2)).astype(float)
        rows.append(
            pd.DataFrame(
                {
                    "clip_id": clip,
                    "frame": np.arange(12),
                    "split": "test",
                    "valence": labels[:, 0],
                    "arousal": labels[:, 1],
                    "valence_pred": labels[:, 0] + rng.normal(size=12),
                    "arousal_pred": labels[:, 1] + rng.normal(size=12),
                }
            )
        )
    predictions = pd.concat(rows, ignore_index=True)
    history = [
        {
            "epoch": k,
            "train_loss": 1 / (k + 1),
            "val_mean_ccc": k / 10,
            "val_ccc_valence": k / 10,
            "val_ccc_arousal": k / 10,
            "loss": 1.0,
            "vision_language": 0.5,
            "temporal": 0.5,
        }
        for k in range(3)
    ]
    paths = {name: str(tmp_path / f"{name}.png") for name in ("curves", "scatter", "timeseries", "circumplex")}
    before = plt.get_fignums()
    all_plots(history, history, predictions, paths, n_timeseries=2)
    video = pd.DataFrame(
        {
            "time": np.arange(10) / 10,
            "valence": np.linspace(-5, 5, 10),
            "arousal": 0.0,
            "face_found": [True] * 8 + [False] * 2,
        }
    )
    video_curves(video, str(tmp_path / "video.png"), title="clip.mp4")
    for path in [*paths.values(), str(tmp_path / "video.png")]:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 200, path
    assert plt.get_fignums() == before
