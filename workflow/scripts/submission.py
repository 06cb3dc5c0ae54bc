import pandas as pd

from clipva.atomic import atomic_path
from clipva.evaluation import submission
from clipva.jobs import log, run_job


def main(smk):
    table = submission(pd.read_csv(smk.input.predictions, dtype={"clip_id": str}))
    with atomic_path(smk.output[0]) as tmp:
        table.to_csv(tmp, index=False)
    log.info("submission: %d frames of %d clips", len(table), table["clip_id"].nunique())


run_job(snakemake, main)  # noqa: F821
