from clipva.afew import read_frames
from clipva.atomic import atomic_path
from clipva.jobs import log, run_job
from clipva.splits import assign_splits, clip_table


def main(smk):
    clips = assign_splits(clip_table(read_frames(smk.input[0])), smk.params.split)
    with atomic_path(smk.output[0]) as tmp:
        clips.to_csv(tmp, index=False)
    log.info("split: %s", clips["split"].value_counts().to_dict())


run_job(snakemake, main)  # noqa: F821
