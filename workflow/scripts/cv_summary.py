from clipva.experiments import cv_summary_files
from clipva.jobs import run_job


def main(smk):
    out = {"summary": smk.output.summary, "plot": smk.output.plot}
    i, p = smk.input, smk.params
    cv_summary_files(p.runs, p.folds, i.metrics, i.predictions, out, i.histories, p.selected, i.selection)


run_job(snakemake, main)  # noqa: F821
