from clipva.jobs import run_job
from clipva.tune import selection_files


def main(smk):
    i, p = smk.input, smk.params
    selection_files(i.features, i.clips, i.text, p.settings, p.folds, smk.output[0])


run_job(snakemake, main)  # noqa: F821
