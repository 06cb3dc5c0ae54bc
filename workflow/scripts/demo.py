from clipva.demo import make_demo
from clipva.jobs import log, run_job


def main(smk):
    summary = make_demo(smk.output[0], **smk.params.demo)
    log.info("demo: %d clips, %d frames; quirks: %s", summary["n_clips"], summary["n_frames"], summary["quirks"])


run_job(snakemake, main)  # noqa: F821
