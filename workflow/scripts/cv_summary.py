import json
from pathlib import Path

import pandas as pd

from clipva.atomic import write_csv
from clipva.experiments import cv_summary, plot_cv
from clipva.jobs import log, run_job


def main(smk):
    runs, folds = smk.params.runs, smk.params.folds
    keys = [(run, fold) for run in runs for fold in range(folds)]  # the order of the rule's expand()
    metrics = {key: json.loads(Path(path).read_text()) for key, path in zip(keys, smk.input.metrics, strict=True)}
    predictions = {
        key: pd.read_csv(path, dtype={"clip_id": str}) for key, path in zip(keys, smk.input.predictions, strict=True)
    }
    table = cv_summary(metrics, predictions)
    write_csv(smk.output.summary, table, float_format="%.4f")
    plot_cv(table, smk.output.plot)
    for run in runs:
        row = table[(table["run"] == run) & (table["view"] == "pooled") & (table["metric"] == "mean_ccc")].iloc[0]
        log.info("%s: test mean CCC %.3f +- %.3f over %d folds", run, row["mean"], row["std"], folds)


run_job(snakemake, main)  # noqa: F821
