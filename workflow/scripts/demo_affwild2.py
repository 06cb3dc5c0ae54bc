from clipva.affwild2_demo import make_affwild2_demo
from clipva.jobs import log, run_job


def main(smk):
    demo = smk.params.demo
    summary = make_affwild2_demo(
        smk.output[0],
        n_videos=demo["n_clips"],
        n_pairs=max(1, demo["n_clips"] // 12),
        min_frames=demo["min_frames"],
        max_frames=demo["max_frames"],
        seed=demo["seed"],
        dynamics=demo["dynamics"],
    )
    log.info("Aff-Wild2 demo: %d videos; quirks: %s", len(summary["videos"]), summary["quirks"])


run_job(snakemake, main)  # noqa: F821
