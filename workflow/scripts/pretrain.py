import json

import numpy as np

from clipva.atomic import write_text
from clipva.backbones import lora_backbone
from clipva.checkpoints import ResumeState, fingerprint, save_head
from clipva.encoder import resolve_device
from clipva.head import HeadConfig
from clipva.jobs import run_job
from clipva.lora import save_adapters, save_no_adapters
from clipva.sequences import load_splits
from clipva.training import pretrain


def main(smk):
    head_cfg, cfg, settings = smk.params.head, smk.params.pretrain, smk.params.backbone
    train = load_splits(smk.input.features, smk.input.clips, ("train",))["train"]
    text = np.load(smk.input.text)["embeddings"]
    window = {"window": head_cfg["window"], "stride": head_cfg["stride"]}
    arch = {k: v for k, v in head_cfg.items() if k not in window}
    config = HeadConfig(in_dim=train[0].features.shape[1], max_len=max(256, head_cfg["window"]), **arch)
    backbone = lora_backbone(settings, smk.input.frames) if settings["backbone"] == "lora" else None
    resume = ResumeState(smk.params.state, fingerprint([head_cfg, cfg, settings], list(smk.input)))
    head, history = pretrain(train, config, window, cfg, text, resume, resolve_device(), backbone)
    save_head(smk.output.head, head, window)
    if backbone is not None:
        save_adapters(backbone.visual, smk.output.adapter)
    else:
        save_no_adapters(smk.output.adapter)
    write_text(smk.output.history, json.dumps(history, indent=1))
    resume.clear()


run_job(snakemake, main)  # noqa: F821
