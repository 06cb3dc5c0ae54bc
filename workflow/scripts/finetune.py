import json
from pathlib import Path

from clipva.atomic import write_text
from clipva.backbones import lora_backbone
from clipva.checkpoints import ResumeState, fingerprint, load_head, save_head
from clipva.encoder import resolve_device
from clipva.jobs import run_job
from clipva.lora import export_merged, save_adapters
from clipva.sequences import load_splits
from clipva.training import finetune


def main(smk):
    cfg, settings = smk.params.finetune, smk.params.backbone
    data = load_splits(smk.input.features, smk.input.clips, ("train", "val"))
    head, ckpt = load_head(smk.input.head)
    lora = settings["backbone"] == "lora"
    sections = [settings[k] for k in ("clip", "lora", "face_crop")] if lora else None
    backbone = lora_backbone(*sections, smk.input.frames, smk.input.adapter) if lora else None
    resume = ResumeState(smk.params.state, fingerprint([cfg, settings], list(smk.input)))
    head, history, best = finetune(
        data["train"], data["val"], head, ckpt["window"], cfg, resume, resolve_device(), backbone
    )
    save_head(smk.output.head, head, ckpt["window"], best=best)
    save_adapters(backbone.visual if backbone else None, smk.output.adapter)
    if lora and settings["lora"]["merge"]:
        clip = settings["clip"]
        export_merged(
            clip["model"], clip["pretrained"], smk.output.adapter, Path(smk.output.adapter) / "merged_open_clip.pt"
        )
    write_text(smk.output.history, json.dumps({"best": best, "epochs": history}, indent=1))
    resume.clear()


run_job(snakemake, main)  # noqa: F821
