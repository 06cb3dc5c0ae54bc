from clipva.evaluate_run import evaluate_files
from clipva.jobs import run_job


def main(smk):
    i, out = smk.input, {"predictions": smk.output.predictions, "metrics": smk.output.metrics}
    evaluate_files(i.features, i.clips, i.head, smk.params.backbone, out, i.get("frames"), i.get("adapter"))


run_job(snakemake, main)  # noqa: F821
