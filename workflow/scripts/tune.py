from clipva.jobs import run_job
from clipva.tune import worker_files


def main(smk):
    p, worker = smk.params, int(smk.wildcards.worker)
    worker_files(smk.input.features, smk.input.clips, p.tune, p.settings, p.journal, worker, smk.output[0])


run_job(snakemake, main)  # noqa: F821
