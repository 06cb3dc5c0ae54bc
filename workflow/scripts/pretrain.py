import json

import numpy as np

from clipva.atomic import write_text
from clipva.backbones import lora_backbone
from clipva.checkpoints import ResumeState, fingerprint, save_head
from clipva.encoder import resolve_device
from clipva.jobs import run_job
from clipva.lora import save_adapters
from clipva.sequences import load_splits
from clipva.training import head_config, pretrain


def main(smk):
    head_cfg, cfg, settings = smk.params.head, smk.params.pretrain, smk.params.backbone
    train = load_splits(smk.input.features, smk.input.clips, ("train",))["train"]
    text = np.load(smk.input.text)["embeddings"]
    config, window = head_config(head_cfg, train[0].features.shape[1])
    lora = settings["backbone"] == "lora"
    sections = [settings[k] for k in ("clip", "lora", "face_crop")] if lora else None
    backbone = lora_backbone(*sections, smk.input.frames) if lora else None
    resume = ResumeState(smk.params.state, fingerprint([head_cfg, cfg, settings], list(smk.input)))
    head, history = pretrain(train, config, window, cfg, text, resume, resolve_device(), backbone)
    save_head(smk.output.head, head, window)
    save_adapters(backbone.visual if backbone else None, smk.output.adapter)
    write_text(smk.output.history, json.dumps(history, indent=1))
    resume.clear()


run_job(snakemake, main)  # noqa: F821
