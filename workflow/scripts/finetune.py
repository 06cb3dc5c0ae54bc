import json

from clipva.checkpoints import ResumeState, fingerprint, load_head, save_head
from clipva.encoder import resolve_device
from clipva.jobs import run_job
from clipva.sequences import load_splits
from clipva.training import finetune


def main(smk):
    cfg = smk.params.finetune
    data = load_splits(smk.input.features, smk.input.clips, ("train", "val"))
    head, ckpt = load_head(smk.input.head)
    resume = ResumeState(smk.params.state, fingerprint(cfg, list(smk.input)))
    head, history, best = finetune(data["train"], data["val"], head, ckpt["window"], cfg, resume, resolve_device())
    save_head(smk.output.head, head, ckpt["window"], best=best)
    with open(smk.output.history, "w") as f:
        json.dump({"best": best, "epochs": history}, f, indent=1)
    resume.clear()


run_job(snakemake, main)  # noqa: F821
