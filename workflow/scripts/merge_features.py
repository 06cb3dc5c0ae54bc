from clipva.jobs import run_job
from clipva.store import merge_stores, write_skip_report


def main(smk):
    skipped = merge_stores(list(smk.input), smk.output.features)
    write_skip_report(skipped, smk.output.features, smk.output.report)


run_job(snakemake, main)  # noqa: F821
