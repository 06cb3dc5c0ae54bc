TEXT = "results/features/text_embeddings.npz"
PRETRAINED = f"{RUN_DIR}/pretrain/head.pt"
FINETUNED = f"{RUN_DIR}/finetune/best.pt"


rule text_embeddings:
    output:
        TEXT,
    log:
        "logs/text_embeddings.log",
    conda:
        "../../envs/clipva.yaml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        clip=config["clip"],
        bins=config["pretrain"]["bins"],
        code=code_version("encoder", "training"),
    script:
        "../scripts/text_embeddings.py"


rule pretrain:
    input:
        **lora_inputs(None),
        features=FEATURES,
        clips=CLIPS,
        text=TEXT,
    output:
        **adapter("pretrain"),
        head=PRETRAINED,
        history=f"{RUN_DIR}/pretrain/history.json",
    log:
        f"logs/{RUN}/pretrain.log",
    benchmark:
        f"benchmarks/out/{RUN}/pretrain.tsv"
    conda:
        "../../envs/clipva.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        head=config["head"],
        pretrain=config["pretrain"],
        backbone=backbone_params(),
        state=f"{RUN_DIR}/.state/pretrain.pt",
        code=code_version(
            "training",
            "head",
            "losses",
            "sequences",
            "checkpoints",
            "lora",
            "backbones",
            "frames",
            "crop",
            "encoder",
        ),
    script:
        "../scripts/pretrain.py"


rule finetune:
    input:
        **lora_inputs("pretrain"),
        features=FEATURES,
        clips=CLIPS,
        head=PRETRAINED,
    output:
        **adapter("finetune"),
        head=FINETUNED,
        history=f"{RUN_DIR}/finetune/history.json",
    log:
        f"logs/{RUN}/finetune.log",
    benchmark:
        f"benchmarks/out/{RUN}/finetune.tsv"
    conda:
        "../../envs/clipva.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        finetune=config["finetune"],
        backbone=backbone_params(),
        state=f"{RUN_DIR}/.state/finetune.pt",
        code=code_version(
            "training",
            "head",
            "losses",
            "sequences",
            "checkpoints",
            "metrics",
            "lora",
            "backbones",
            "frames",
            "crop",
            "encoder",
        ),
    script:
        "../scripts/finetune.py"
