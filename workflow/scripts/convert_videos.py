from clipva.annotated_videos import convert_annotated_videos
from clipva.jobs import log, run_job


def main(smk):
    cfg = smk.params.videos
    table = convert_annotated_videos(
        smk.input[0], smk.output[0], fps=cfg["fps"], scale=cfg["label_scale"], fill=cfg["no_face"]
    )
    log.info("converted %d annotated videos into %s", len(table), smk.output[0])


run_job(snakemake, main)  # noqa: F821
