from clipva.experiments import cv_summary_files
from clipva.jobs import run_job


def main(smk):
    out = {"summary": smk.output.summary, "plot": smk.output.plot}
    cv_summary_files(smk.params.runs, smk.params.folds, smk.input.metrics, smk.input.predictions, out)


run_job(snakemake, main)  # noqa: F821
