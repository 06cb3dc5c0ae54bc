# Valence/arousal curves for your own videos (config predict.videos) with the trained model of run `run`.


wildcard_constraints:
    run=r"[A-Za-z0-9_.-]+",
    video=r"[^/]+",


rule export_model:
    input:
        head="results/runs/{run}/finetune/best.pt",
        adapter="results/runs/{run}/finetune/adapter",
        metrics="results/runs/{run}/eval/metrics.json",
    output:
        directory("results/runs/{run}/model"),
    log:
        "logs/runs/{run}/export_model.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        settings=lambda wildcards: {
            key: run_settings(wildcards.run)[key]
            for key in ("clip", "face_crop", "training")
        },
        training={"dataset": model_card_dataset(), "split": model_card_split()},
        code=code_version("../scripts/export_model.py"),
    script:
        "../scripts/export_model.py"


rule predict_video:
    input:
        video=lambda wildcards: VIDEOS[wildcards.video],
        model=f"{RUN_DIR}/model",
    output:
        csv="results/predict/{video}.csv",
        page="results/predict/{video}.html",
        plot=report(
            "results/predict/{video}.png",
            caption="../report/predict.rst",
            category="Predictions",
        ),
    log:
        "logs/predict/{video}.log",
    conda:
        "../../envs/clipva.yaml"
    threads: gpu_job_threads
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        predict=config["predict"],
        code=code_version("../scripts/predict_video.py"),
    script:
        "../scripts/predict_video.py"


rule predict_summary:
    input:
        tables=expand("results/predict/{video}.csv", video=VIDEOS),
        videos=list(VIDEOS.values()),
    output:
        "results/predict/summary.csv",
    log:
        "logs/predict/summary.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        code=code_version("../scripts/predict_summary.py"),
    script:
        "../scripts/predict_summary.py"


rule predict:
    input:
        expand("results/predict/{video}.csv", video=VIDEOS),
        "results/predict/summary.csv",
