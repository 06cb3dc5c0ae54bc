from clipva.jobs import run_job
from clipva.predict import summarize


def main(smk):
    summarize(smk.input.videos, smk.input.tables, smk.output[0])


run_job(snakemake, main)  # noqa: F821
