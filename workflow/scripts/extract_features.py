from clipva.afew import read_frames
from clipva.encoder import load_clip
from clipva.extract import extract_features, shard_clips
from clipva.jobs import run_job


def main(smk):
    frames = read_frames(smk.input[0])
    clips = shard_clips(frames["clip_id"].unique().tolist(), smk.params.shards, int(smk.wildcards.shard))
    clip = load_clip(smk.params.clip["model"], smk.params.clip["pretrained"], smk.params.clip["precision"])
    extract_features(frames[frames["clip_id"].isin(clips)], smk.output[0], clip, smk.params.face_crop,
                     smk.params.clip["pretrained"], num_workers=min(2, smk.threads),
                     on_bad_input=smk.params.on_bad_input)  # fmt: skip


run_job(snakemake, main)  # noqa: F821
