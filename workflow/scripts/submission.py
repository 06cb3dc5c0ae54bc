import pandas as pd

from clipva.atomic import write_csv
from clipva.evaluation import submission
from clipva.jobs import log, run_job


def main(smk):
    table = submission(pd.read_csv(smk.input.predictions, dtype={"clip_id": str}))
    write_csv(smk.output[0], table)
    log.info("submission: %d frames of %d clips", len(table), table["clip_id"].nunique())


run_job(snakemake, main)  # noqa: F821
