import json

from clipva.atomic import write_csv, write_text
from clipva.evaluate_run import evaluate_run
from clipva.jobs import log, run_job


def main(smk):
    lora = smk.params.backbone["backbone"] == "lora"  # only LoRA runs have the frames and adapters as inputs
    frames, adapter = (smk.input.frames, smk.input.adapter) if lora else (None, None)
    predictions, metrics = evaluate_run(
        smk.input.features, smk.input.clips, smk.input.head, smk.params.backbone, frames, adapter
    )
    write_csv(smk.output.predictions, predictions, float_format="%.4f")
    write_text(smk.output.metrics, json.dumps(metrics, indent=1))
    found = metrics["baselines"]
    log.info(
        "test mean CCC %.3f (ridge probe %.3f, smoothed %.3f, constant %.3f)",
        metrics["pooled"]["mean_ccc"],
        found["ridge_probe"]["test"]["mean_ccc"],
        found["smoothed_ridge_probe"]["test"]["mean_ccc"],
        found["constant"]["mean_ccc"],
    )


run_job(snakemake, main)  # noqa: F821
