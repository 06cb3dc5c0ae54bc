# Training of one experiment (results/{exp}: a run on the configured split, or a cross-validation fold).
PRETRAINED = f"{EXP}/pretrain/head.pt"
FINETUNED = f"{EXP}/finetune/best.pt"


rule text_embeddings:
    output:
        "results/features/text/{bins}bins.npz",
    log:
        "logs/text_embeddings/{bins}bins.log",
    conda:
        "../../envs/clipva.yaml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        clip=config["clip"],
        code=code_version("../scripts/text_embeddings.py"),
    script:
        "../scripts/text_embeddings.py"


rule pretrain:
    input:
        unpack(lora_inputs(None)),
        features=FEATURES,
        clips=exp_clips,
        text=text_embeddings,
    output:
        adapter=directory(f"{EXP}/pretrain/adapter"),
        head=PRETRAINED,
        history=f"{EXP}/pretrain/history.json",
    log:
        "logs/{exp}/pretrain.log",
    benchmark:
        "benchmarks/out/{exp}/pretrain.tsv"
    conda:
        "../../envs/clipva.yaml"
    threads: lora_threads
    resources:
        gpu=lora_gpu,
        mem_mb=head_mem_mb(8000),
        runtime=120,
    params:
        head=exp_section("head"),
        pretrain=exp_section("pretrain"),
        backbone=backbone_params,
        state=lambda wildcards: f"results/{wildcards.exp}/.state/pretrain.pt",
        code=code_version("../scripts/pretrain.py"),
    script:
        "../scripts/pretrain.py"


rule finetune:
    input:
        unpack(lora_inputs("pretrain")),
        features=FEATURES,
        clips=exp_clips,
        head=start_head,
    output:
        adapter=directory(f"{EXP}/finetune/adapter"),
        head=FINETUNED,
        history=f"{EXP}/finetune/history.json",
    log:
        "logs/{exp}/finetune.log",
    benchmark:
        "benchmarks/out/{exp}/finetune.tsv"
    conda:
        "../../envs/clipva.yaml"
    threads: lora_threads
    resources:
        gpu=lora_gpu,
        mem_mb=head_mem_mb(8000),
        runtime=120,
    params:
        finetune=exp_section("finetune"),
        backbone=backbone_params,
        state=lambda wildcards: f"results/{wildcards.exp}/.state/finetune.pt",
        code=code_version("../scripts/finetune.py"),
    script:
        "../scripts/finetune.py"
