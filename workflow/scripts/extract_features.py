from clipva.extract import extract_shard
from clipva.jobs import job_threads, run_job


def main(smk):
    p, shard = smk.params, int(smk.wildcards.shard)
    # read from the config, not params: the number of workers does not change the features, so no rerun
    workers, threads = smk.config["features"]["workers"], job_threads(smk.threads)
    extract_shard(
        smk.input[0], p.shards, shard, p.clip, p.face_crop, smk.output[0], workers, threads, on_bad_input=p.on_bad_input
    )


run_job(snakemake, main)  # noqa: F821
