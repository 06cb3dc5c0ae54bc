# clipva: temporal valence/arousal regression from face video with CLIP image encoders.
# Phases: data (demo, index, split) -> features (CLIP into HDF5) -> pretrain -> finetune -> evaluate.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"


rule all:
    input:
        FEATURES,
    default_target: True
