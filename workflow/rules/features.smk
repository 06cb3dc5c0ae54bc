rule extract_features:
    input:
        FRAMES,
    output:
        SHARD,
    params:
        clip=config["clip"],
        face_crop=config["face_crop"],
        shards=N_SHARDS,
        code=code_version("extract", "encoder", "crop", "store"),
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    log:
        "logs/features/extract-{shard}-of-" + str(N_SHARDS) + ".log",
    benchmark:
        "benchmarks/out/extract-{shard}-of-" + str(N_SHARDS) + ".tsv"
    script:
        "../scripts/extract_features.py"


rule merge_features:
    input:
        expand(SHARD, shard=range(N_SHARDS)),
    output:
        FEATURES,
    params:
        code=code_version("store"),
    log:
        "logs/features/merge.log",
    script:
        "../scripts/merge_features.py"


rule features:
    input:
        FEATURES,
