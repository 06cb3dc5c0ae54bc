# clipva: temporal valence/arousal regression from face video with CLIP image encoders.
# Phases: data (demo, index, split) -> features (CLIP into HDF5) -> pretrain -> finetune -> evaluate;
# experiments: cross-validation by actor (target cv) and the runs compared (target compare).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: f"{workflow.basedir}/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/experiments.smk"
include: "workflow/rules/predict.smk"


if FORMAT == "affwild2":

    include: "workflow/rules/abaw.smk"


onstart:
    check_cluster_requests()


onerror:
    say_cluster_endings(log)


rule all:
    default_target: True
    input:
        "results/submission.csv",
        "results/config.yaml",
        # Aff-Wild2 with its official split: the challenge's files too
        (
            ["results/abaw/submission.zip"]
            if FORMAT == "affwild2" and config["split"]["method"] == "official"
            else []
        ),
