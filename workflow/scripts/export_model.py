from clipva.jobs import run_job
from clipva.model_folder import export_model


def main(smk):
    export_model(
        smk.output[0], smk.input.head, smk.input.adapter, smk.params.settings, smk.input.metrics, smk.params.training
    )


run_job(snakemake, main)  # noqa: F821
