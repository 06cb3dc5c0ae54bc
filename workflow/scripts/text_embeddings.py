import numpy as np

from clipva.atomic import atomic_path
from clipva.encoder import encode_texts, load_clip_from
from clipva.jobs import log, run_job
from clipva.prompts import emotion_prompts


def main(smk):
    encoder = load_clip_from(smk.params.clip)
    prompts = emotion_prompts(int(smk.wildcards.bins))
    with atomic_path(smk.output[0]) as tmp:
        np.savez(tmp, embeddings=encode_texts(encoder, prompts).cpu().numpy(), prompts=np.array(prompts))
    log.info("text embeddings of %d emotion descriptions", len(prompts))


run_job(snakemake, main)  # noqa: F821
