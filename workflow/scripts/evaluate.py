import dataclasses
import json

import pandas as pd

from clipva.atomic import write_csv, write_text
from clipva.backbones import lora_backbone
from clipva.checkpoints import load_head
from clipva.evaluation import baselines, metrics_on_test_split
from clipva.jobs import log, run_job
from clipva.sequences import load_splits, predictions_table


def main(smk):
    splits = ("train", "val", "test", "unlabeled")
    data = load_splits(smk.input.features, smk.input.clips, splits)
    head, ckpt = load_head(smk.input.head)
    window = ckpt["window"]
    predicted = data
    if smk.params.backbone["backbone"] == "lora":  # features through the adapted image tower
        backbone = lora_backbone(smk.params.backbone, smk.input.frames, smk.input.adapter, trainable=False)
        backbone.train(False)
        predicted = {}
        for s in ("test", "unlabeled"):
            features = backbone.features_of(data[s])
            predicted[s] = [dataclasses.replace(c, features=f) for c, f in zip(data[s], features, strict=True)]
    tables = [predictions_table(head, predicted[s], s, window["window"], window["stride"])
              for s in ("test", "unlabeled") if predicted[s]]  # fmt: skip
    predictions = pd.concat(tables, ignore_index=True)
    write_csv(smk.output.predictions, predictions, float_format="%.4f")
    metrics = metrics_on_test_split(predictions)
    metrics["baselines"] = baselines(data["train"], data["val"], data["test"])  # on the store's frozen features
    metrics["best_epoch"] = ckpt.get("best", {})
    metrics["backbone"] = smk.params.backbone["backbone"]
    write_text(smk.output.metrics, json.dumps(metrics, indent=1))
    found = metrics["baselines"]
    log.info("test mean CCC %.3f (ridge probe %.3f, smoothed %.3f, constant %.3f)", metrics["pooled"]["mean_ccc"],
             found["ridge_probe"]["test"]["mean_ccc"], found["smoothed_ridge_probe"]["test"]["mean_ccc"],
             found["constant"]["mean_ccc"])  # fmt: skip


run_job(snakemake, main)  # noqa: F821
