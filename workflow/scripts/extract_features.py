from clipva.afew import read_frames
from clipva.encoder import load_clip_from
from clipva.extract import decode_workers, extract_features, shard_clips
from clipva.jobs import job_threads, run_job


def main(smk):
    frames = read_frames(smk.input[0])
    clips = shard_clips(frames["clip_id"].unique().tolist(), smk.params.shards, int(smk.wildcards.shard))
    clip = load_clip_from(smk.params.clip)
    # read from the config, not params: the number of workers does not change the features, so no rerun
    workers = decode_workers(smk.config["features"]["workers"], job_threads(smk.threads), clip.device)
    extract_features(
        frames[frames["clip_id"].isin(clips)],
        smk.output[0],
        clip,
        smk.params.face_crop,
        smk.params.clip["pretrained"],
        num_workers=workers,
        on_bad_input=smk.params.on_bad_input,
    )


run_job(snakemake, main)  # noqa: F821
