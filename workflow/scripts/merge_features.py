from clipva.jobs import run_job
from clipva.store import merge_stores


def main(smk):
    merge_stores(list(smk.input), smk.output[0])


run_job(snakemake, main)  # noqa: F821
