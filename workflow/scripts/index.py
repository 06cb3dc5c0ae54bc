from clipva.afew import index_dataset, write_report
from clipva.atomic import write_csv
from clipva.jobs import log, run_job


def main(smk):
    frames, problems = index_dataset(smk.input[0], smk.params.on_bad_input)
    write_report(problems, frames, smk.output.report, smk.params.on_bad_input)
    write_csv(smk.output.frames, frames)
    log.info(
        "index: %d clips, %d frames, %d problems (see %s)",
        frames["clip_id"].nunique(),
        len(frames),
        len(problems),
        smk.output.report,
    )


run_job(snakemake, main)  # noqa: F821
