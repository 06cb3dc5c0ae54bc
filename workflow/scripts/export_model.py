from clipva.jobs import run_job
from clipva.predict import export_model


def main(smk):
    export_model(smk.output[0], smk.input.head, smk.input.adapter, smk.params.settings)


run_job(snakemake, main)  # noqa: F821
