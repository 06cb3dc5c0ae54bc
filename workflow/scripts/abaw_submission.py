from clipva.abaw import write_abaw
from clipva.jobs import log, run_job


def main(smk):
    i = smk.input
    score = write_abaw(i.predictions, i.videos, i.frames, i.root, dict(smk.output.items()))
    every, face = score["all_annotated_frames"], score["frames_with_a_face"]
    log.info(
        "ABAW files written; Validation_Set mean CCC %.4f over all %d annotated frames (%.4f over the %d with a face)",
        every["mean_ccc"],
        every["frames"],
        face["mean_ccc"],
        face["frames"],
    )


run_job(snakemake, main)  # noqa: F821
