PREDICTIONS = f"{EXP}/eval/predictions.csv"
PLOT_NAMES = ("curves", "scatter", "timeseries", "circumplex")


rule evaluate:
    input:
        unpack(lora_inputs("finetune")),
        features=FEATURES,
        clips=exp_clips,
        head=FINETUNED,
    output:
        metrics=report(
            f"{EXP}/eval/metrics.json",
            caption="../report/metrics.rst",
            category="Metrics",
            subcategory="{exp}",
        ),
        predictions=PREDICTIONS,
    log:
        "logs/{exp}/evaluate.log",
    conda:
        "../../envs/clipva.yaml"
    threads: lora_threads
    resources:
        gpu=lora_gpu,
        mem_mb=head_mem_mb(4000),
        runtime=30,
    params:
        backbone=backbone_params,
        code=code_version("../scripts/evaluate.py"),
    script:
        "../scripts/evaluate.py"


rule plots:
    input:
        predictions=PREDICTIONS,
        pretrain=f"{EXP}/pretrain/history.json",
        finetune=f"{EXP}/finetune/history.json",
    output:
        **{
            name: report(
                f"{EXP}/eval/plots/{name}.png",
                caption="../report/plots.rst",
                category="Plots",
                subcategory="{exp}",
            )
            for name in PLOT_NAMES
        },
    log:
        "logs/{exp}/plots.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        evaluate=config["evaluate"],
        code=code_version("../scripts/plots.py"),
    script:
        "../scripts/plots.py"


rule submission:
    input:
        predictions=f"{RUN_DIR}/eval/predictions.csv",
        plots=plots_of(f"runs/{RUN}"),
    output:
        "results/submission.csv",
    log:
        "logs/submission.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        code=code_version("../scripts/submission.py"),
    script:
        "../scripts/submission.py"
