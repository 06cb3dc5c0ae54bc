import json
from pathlib import Path

import yaml

from clipva.atomic import write_csv, write_text
from clipva.jobs import log, run_job
from clipva.tune import plot_study, summarise


def main(smk):
    studies = {json.loads(Path(path).read_text())["study"] for path in smk.input}
    if len(studies) != 1:
        raise RuntimeError(f"tune: the workers searched different studies {sorted(studies)}; run the search again")
    best, table, study = summarise(smk.params.journal, studies.pop())
    header = (
        f"# The best of {len(table)} trials of `snakemake tune`: mean validation CCC "
        f"{study.best_value:.4f} over {smk.params.folds} folds of the training and validation clips.\n"
        "# Use it as a config file: snakemake --configfile results/tune/best.yaml\n"
    )
    write_text(smk.output.best, header + yaml.safe_dump(best, sort_keys=True))
    write_csv(smk.output.trials, table)
    plot_study(study, smk.output.history, smk.output.importance)
    log.info("tune: best trial %d, %.4f: %s", study.best_trial.number, study.best_value, best)


run_job(snakemake, main)  # noqa: F821
