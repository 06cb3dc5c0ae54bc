PREDICTIONS = f"{RUN_DIR}/eval/predictions.csv"
PLOTS = {
    name: f"{RUN_DIR}/eval/plots/{name}.png"
    for name in ("curves", "scatter", "timeseries", "circumplex")
}


rule evaluate:
    input:
        **lora_inputs("finetune"),
        features=FEATURES,
        clips=CLIPS,
        head=FINETUNED,
    output:
        metrics=report(
            f"{RUN_DIR}/eval/metrics.json",
            caption="../report/metrics.rst",
            category="Metrics",
        ),
        predictions=PREDICTIONS,
    log:
        f"logs/{RUN}/evaluate.log",
    conda:
        "../../envs/clipva.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        backbone=backbone_params(),
        code=code_version(
            "evaluation",
            "metrics",
            "sequences",
            "checkpoints",
            "lora",
            "backbones",
            "frames",
            "crop",
            "encoder",
        ),
    script:
        "../scripts/evaluate.py"


rule plots:
    input:
        predictions=PREDICTIONS,
        pretrain=f"{RUN_DIR}/pretrain/history.json",
        finetune=f"{RUN_DIR}/finetune/history.json",
    output:
        **{
            name: report(path, caption="../report/plots.rst", category="Plots")
            for name, path in PLOTS.items()
        },
    log:
        f"logs/{RUN}/plots.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        evaluate=config["evaluate"],
        code=code_version("plots"),
    script:
        "../scripts/plots.py"


rule submission:
    input:
        predictions=PREDICTIONS,
        plots=list(PLOTS.values()),
    output:
        "results/submission.csv",
    log:
        "logs/submission.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        code=code_version("evaluation"),
    script:
        "../scripts/submission.py"
