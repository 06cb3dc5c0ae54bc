import pandas as pd

from clipva.evaluation import submission
from clipva.jobs import log, run_job


def main(smk):
    table = submission(pd.read_csv(smk.input.predictions, dtype={"clip_id": str}))
    table.to_csv(smk.output[0], index=False)
    log.info("submission: %d frames of %d clips", len(table), table["clip_id"].nunique())


run_job(snakemake, main)  # noqa: F821
