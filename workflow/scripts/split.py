from clipva.afew import read_frames
from clipva.atomic import write_csv
from clipva.jobs import log, run_job
from clipva.splits import assign_splits, clip_table


def main(smk):
    clips = assign_splits(clip_table(read_frames(smk.input[0])), smk.params.split)
    write_csv(smk.output[0], clips)
    log.info("split: %s", clips["split"].value_counts().to_dict())


run_job(snakemake, main)  # noqa: F821
