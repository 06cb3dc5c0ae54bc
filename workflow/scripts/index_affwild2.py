from clipva.afew import write_report
from clipva.affwild2 import index_affwild2
from clipva.atomic import write_csv
from clipva.jobs import log, run_job


def main(smk):
    frames, videos, problems = index_affwild2(smk.input.root, smk.params.on_bad_input, smk.params.test_list)
    write_report(problems, frames, smk.output.report, smk.params.on_bad_input)
    write_csv(smk.output.videos, videos)
    write_csv(smk.output.frames, frames)
    log.info(
        "index: %d videos (%s), %d face crops, %d problems (see %s)",
        len(videos),
        videos["subset"].value_counts().to_dict(),
        len(frames),
        len(problems),
        smk.output.report,
    )


run_job(snakemake, main)  # noqa: F821
