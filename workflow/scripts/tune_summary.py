from clipva.jobs import run_job
from clipva.tune import summary_files


def main(smk):
    out = {k: smk.output[k] for k in ("best", "trials", "history", "importance")}
    summary_files(list(smk.input), smk.params.journal, smk.params.folds, out)


run_job(snakemake, main)  # noqa: F821
