import json
from pathlib import Path

from clipva.atomic import write_csv
from clipva.experiments import compare_runs, plot_comparison
from clipva.jobs import run_job


def main(smk):
    paths = zip(smk.params.runs, smk.input.metrics, strict=True)
    metrics = {run: json.loads(Path(path).read_text()) for run, path in paths}
    table = compare_runs(metrics)
    write_csv(smk.output.table, table, float_format="%.4f")
    plot_comparison(table, smk.output.plot)


run_job(snakemake, main)  # noqa: F821
