"""Figures of a run (PNG): training curves, predicted vs. annotated, time series, the valence-arousal plane."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from clipva.atomic import atomic_path
from clipva.metrics import DIMENSIONS

# Figures are built with matplotlib's object API, not pyplot: no backend is chosen for (or imposed on) the
# program that imports clipva, and no figure is kept in pyplot's registry after it is saved.


def save_figure(fig: Figure, path: str) -> None:
    """Write a figure as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)


def training_curves(pretrain: list[dict], finetune: list[dict], path: str) -> None:
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    if pretrain:
        epochs = [r["epoch"] + 1 for r in pretrain]
        for key in ("loss", "vision_language", "temporal"):
            if any(r[key] for r in pretrain):
                axes[0].plot(epochs, [r[key] for r in pretrain], label=key)
        axes[0].legend()
    else:
        axes[0].text(0.5, 0.5, "pretraining skipped (0 epochs)", ha="center", va="center")
    axes[0].set(title="contrastive pretraining", xlabel="epoch", ylabel="loss")
    epochs = [r["epoch"] + 1 for r in finetune]
    axes[1].plot(epochs, [r["train_loss"] for r in finetune], label="train loss")
    for key in ("val_ccc_valence", "val_ccc_arousal", "val_mean_ccc"):
        axes[1].plot(epochs, [r[key] for r in finetune], label=key.replace("val_", "val "))
    axes[1].set(title="fine-tuning", xlabel="epoch")
    axes[1].legend()
    fig.tight_layout()
    save_figure(fig, path)


def _test(predictions: pd.DataFrame) -> pd.DataFrame:
    return predictions[(predictions["split"] == "test") & predictions["valence"].notna()]


def scatter(predictions: pd.DataFrame, path: str) -> None:
    test = _test(predictions)
    fig = Figure(figsize=(9, 4.2))
    axes = fig.subplots(1, 2)
    for ax, dim in zip(axes, DIMENSIONS, strict=True):
        ax.scatter(test[dim], test[f"{dim}_pred"], s=6, alpha=0.4)
        ax.plot([-10, 10], [-10, 10], "k--", lw=1)
        ax.set(
            xlim=(-10.5, 10.5),
            ylim=(-10.5, 10.5),
            xlabel=f"annotated {dim}",
            ylabel=f"predicted {dim}",
            title=f"{dim} (test frames)",
        )
        ax.set_aspect("equal")
    fig.tight_layout()
    save_figure(fig, path)


def timeseries(predictions: pd.DataFrame, path: str, n_clips: int) -> None:
    test = _test(predictions)
    clip_ids = sorted(test["clip_id"].unique())[:n_clips]
    fig = Figure(figsize=(9, 2.2 * max(1, len(clip_ids))))
    axes = fig.subplots(len(clip_ids), 1, squeeze=False)
    for ax, clip_id in zip(axes[:, 0], clip_ids, strict=True):
        c = predictions[predictions["clip_id"] == clip_id]
        for dim, colour in zip(DIMENSIONS, ("tab:blue", "tab:red"), strict=True):
            ax.plot(c["frame"], c[dim], color=colour, label=f"{dim} annotated")
            ax.plot(c["frame"], c[f"{dim}_pred"], color=colour, ls="--", label=f"{dim} predicted")
        ax.set(ylim=(-10.5, 10.5), ylabel=f"clip {clip_id}")
    axes[0, 0].legend(ncol=4, fontsize=8, loc="upper left")
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    save_figure(fig, path)


def circumplex(predictions: pd.DataFrame, path: str) -> None:
    test = _test(predictions)
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(test["valence"], test["arousal"], s=6, alpha=0.35, label="annotated")
    ax.scatter(test["valence_pred"], test["arousal_pred"], s=6, alpha=0.35, label="predicted")
    ax.add_patch(Circle((0, 0), 10, fill=False, color="grey", lw=0.8))
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set(
        xlim=(-10.5, 10.5),
        ylim=(-10.5, 10.5),
        xlabel="valence",
        ylabel="arousal",
        title="valence-arousal plane (test frames)",
    )
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def all_plots(
    pretrain: list[dict], finetune: list[dict], predictions: pd.DataFrame, paths: dict, n_timeseries: int
) -> None:
    training_curves(pretrain, finetune, paths["curves"])
    scatter(predictions, paths["scatter"])
    timeseries(predictions, paths["timeseries"], n_timeseries)
    circumplex(predictions, paths["circumplex"])


def video_curves(table: pd.DataFrame, path: str, title: str = "") -> None:
    """Valence and arousal of a video over time (frames without a face shaded), and its valence-arousal path."""
    fig = Figure(figsize=(10, 3.8))
    grid = fig.add_gridspec(2, 2, width_ratios=(2.2, 1))
    t = table["time"].to_numpy()
    no_face = ~table["face_found"].to_numpy(dtype=bool)
    for row, dim in enumerate(DIMENSIONS):
        ax = fig.add_subplot(grid[row, 0])
        ax.plot(t, table[dim], lw=1.2, color=f"C{row}")
        ax.fill_between(
            t, -10, 10, where=no_face, color="grey", alpha=0.2, step="mid", label="no face" if row == 0 else None
        )
        ax.set(ylim=(-10, 10), ylabel=dim)
        if row == 0:
            ax.set_title(title)
            if no_face.any():
                ax.legend(loc="upper right", fontsize=8)
        else:
            ax.set_xlabel("time (s)")
    ax = fig.add_subplot(grid[:, 1])
    points = ax.scatter(table["valence"], table["arousal"], c=t, s=6, cmap="viridis")
    ax.plot(table["valence"], table["arousal"], lw=0.5, color="grey")
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set(xlim=(-10, 10), ylim=(-10, 10), xlabel="valence", ylabel="arousal", title="valence-arousal path")
    ax.set_aspect("equal")
    fig.colorbar(points, ax=ax, label="time (s)")
    fig.tight_layout()
    save_figure(fig, path)
