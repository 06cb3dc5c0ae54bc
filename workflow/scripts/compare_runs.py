import json

from clipva.atomic import atomic_path
from clipva.experiments import compare_runs, plot_comparison
from clipva.jobs import run_job


def main(smk):
    metrics = {run: json.loads(open(path).read()) for run, path in zip(smk.params.runs, smk.input.metrics, strict=True)}
    table = compare_runs(metrics)
    with atomic_path(smk.output.table) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    plot_comparison(table, smk.output.plot)


run_job(snakemake, main)  # noqa: F821
