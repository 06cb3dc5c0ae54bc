"""A fine-tuned run evaluated on its split: the one call of the ``evaluate`` rule.

Kept apart from `clipva.evaluation` (metrics, baselines, the submission table), which the submission and
experiment summaries import: they need not rerun when the LoRA re-encoding below changes.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import pandas as pd

from clipva.atomic import write_csv, write_text
from clipva.checkpoints import load_head
from clipva.evaluation import baselines, metrics_on_test_split
from clipva.feature_sources import backbone_of
from clipva.sequences import load_splits, predictions_table

log = logging.getLogger(__name__)


def evaluate_run(
    features: str, clips: str, head_path: str, backbone: dict, frames: str | None = None, adapter: str | None = None
) -> tuple[pd.DataFrame, dict]:
    """(predictions of the test and unlabeled clips, metrics.json's content) of a fine-tuned head.

    `backbone` is the run's backbone settings ({"backbone": "frozen"} or, for LoRA, with its lora, clip and
    face_crop sections). A LoRA run's clips are encoded again through its adapted image tower (`frames`,
    `adapter`); the baselines always fit the store's frozen features, as a competitor's would, centred as the
    head's are (`head.centre`).
    """
    head, ckpt = load_head(head_path)
    data = load_splits(features, clips, ("train", "val", "test", "unlabeled"), head.cfg.centre)
    predicted = data
    tower = backbone_of(backbone, frames, adapter, trainable=False, centre=head.cfg.centre)
    if tower is not None:
        tower.train(False)
        predicted = {}
        for split in ("test", "unlabeled"):
            encoded = tower.features_of(data[split])
            predicted[split] = [dataclasses.replace(c, features=f) for c, f in zip(data[split], encoded, strict=True)]
    tables = [predictions_table(head, predicted[s], s, ckpt["window"]) for s in ("test", "unlabeled") if predicted[s]]
    predictions = pd.concat(tables, ignore_index=True)
    metrics = metrics_on_test_split(predictions)
    metrics["baselines"] = baselines(data["train"], data["val"], data["test"])
    metrics["best_epoch"] = ckpt.get("best", {})
    metrics["backbone"] = backbone["backbone"]
    return predictions, metrics


def evaluate_files(
    features: str,
    clips: str,
    head_path: str,
    backbone: dict,
    out: dict[str, str],
    frames: str | None = None,
    adapter: str | None = None,
) -> None:
    """`evaluate_run`, written to `out`'s ``predictions`` (CSV) and ``metrics`` (JSON) paths."""
    predictions, metrics = evaluate_run(features, clips, head_path, backbone, frames, adapter)
    write_csv(out["predictions"], predictions, float_format="%.4f")
    write_text(out["metrics"], json.dumps(metrics, indent=1))
    found = metrics["baselines"]
    log.info(
        "test mean CCC %.3f (ridge probe %.3f, smoothed %.3f, constant %.3f); within clips %.3f (smoothed probe %.3f)",
        metrics["pooled"]["mean_ccc"],
        found["ridge_probe"]["test"]["mean_ccc"],
        found["smoothed_ridge_probe"]["test"]["mean_ccc"],
        found["constant"]["mean_ccc"],
        metrics["within_clip"]["mean_ccc"],
        found["smoothed_ridge_probe"]["within_clip"]["mean_ccc"],
    )
