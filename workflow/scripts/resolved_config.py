import yaml

from clipva.atomic import write_text
from clipva.jobs import run_job


def main(smk):
    document = {"config": dict(smk.params.config), "runs": dict(smk.params.runs)}
    write_text(smk.output[0], yaml.safe_dump(document, sort_keys=False))


run_job(snakemake, main)  # noqa: F821
