rule extract_features:
    input:
        CROP_FRAMES,
    output:
        SHARD,
    log:
        f"logs/features/extract-{{shard}}-of-{N_SHARDS}.log",
    benchmark:
        f"benchmarks/out/extract-{{shard}}-of-{N_SHARDS}.tsv"
    conda:
        "../../envs/clipva.yaml"
    threads: gpu_job_threads
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        clip=config["clip"],
        face_crop=config["face_crop"],
        shards=N_SHARDS,
        on_bad_input=config["dataset"]["on_bad_input"],
        code=code_version("../scripts/extract_features.py"),
    script:
        "../scripts/extract_features.py"


rule merge_features:
    input:
        expand(SHARD, shard=range(N_SHARDS)),
    output:
        features=FEATURES,
        report=EXTRACTION_REPORT,
    log:
        "logs/features/merge.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        code=code_version("../scripts/merge_features.py"),
    script:
        "../scripts/merge_features.py"


rule features:
    input:
        FEATURES,
        EXTRACTION_REPORT,
