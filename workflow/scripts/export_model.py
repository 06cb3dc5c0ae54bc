from clipva.jobs import run_job
from clipva.predict import export_model


def main(smk):
    lora = smk.params.settings["training"]["backbone"] == "lora"
    export_model(smk.output[0], smk.input.head, smk.input.adapter if lora else None, smk.params.settings)


run_job(snakemake, main)  # noqa: F821
