import json

import pandas as pd

from clipva.jobs import run_job
from clipva.plots import all_plots


def main(smk):
    predictions = pd.read_csv(smk.input.predictions, dtype={"clip_id": str})
    pretrain = json.load(open(smk.input.pretrain))
    finetune = json.load(open(smk.input.finetune))["epochs"]
    all_plots(pretrain, finetune, predictions, dict(smk.output.items()), smk.params.evaluate["n_timeseries_clips"])


run_job(snakemake, main)  # noqa: F821
