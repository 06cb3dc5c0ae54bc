# Experiments as the field reports them: subject-independent k-fold cross-validation (every fold its own
# branch of the DAG, sharing the extracted features), and a comparison of the runs declared in the config.


rule cv_split:
    input:
        FRAMES,
    output:
        "results/cv/folds/fold{fold}.csv",
    log:
        "logs/cv/split-fold{fold}.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        split=lambda wildcards: {
            **config["split"],
            "method": "actor_kfold",
            "fold": int(wildcards.fold),
        },
        code=code_version("../scripts/split.py"),
    script:
        "../scripts/split.py"


rule selection_score:
    input:
        features=FEATURES,
        clips=exp_clips,
        text=text_embeddings,
    output:
        f"{EXP}/select.json",
    log:
        "logs/{exp}/select.log",
    benchmark:
        "benchmarks/out/{exp}/select.tsv"
    conda:
        "../../envs/clipva.yaml"
    threads: 2
    resources:
        mem_mb=head_mem_mb(8000),
        runtime=120 * config["tune"]["folds"],
    params:
        settings=lambda wildcards: {
            k: run_settings(exp_run(wildcards))[k]
            for k in ("head", "finetune", "pretrain")
        },
        folds=config["tune"]["folds"],
        code=code_version("../scripts/selection_score.py"),
    script:
        "../scripts/selection_score.py"


rule cv_summary:
    input:
        metrics=expand(
            "results/cv/{run}/fold{fold}/eval/metrics.json",
            run=CV_RUNS,
            fold=range(FOLDS),
        ),
        predictions=expand(
            "results/cv/{run}/fold{fold}/eval/predictions.csv",
            run=CV_RUNS,
            fold=range(FOLDS),
        ),
        histories=expand(
            "results/cv/{run}/fold{fold}/finetune/history.json",
            run=CV_RUNS,
            fold=range(FOLDS),
        ),
        selection=expand(
            "results/cv/{run}/fold{fold}/select.json",
            run=CV_SELECT,
            fold=range(FOLDS),
        ),
    output:
        summary=report(
            "results/cv/summary.csv",
            caption="../report/cv.rst",
            category="Cross-validation",
        ),
        plot=report(
            "results/cv/summary.png",
            caption="../report/cv.rst",
            category="Cross-validation",
        ),
    log:
        "logs/cv/summary.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        runs=CV_RUNS,
        selected=CV_SELECT,
        folds=FOLDS,
        code=code_version("../scripts/cv_summary.py"),
    script:
        "../scripts/cv_summary.py"


rule compare_runs:
    input:
        metrics=expand("results/runs/{run}/eval/metrics.json", run=COMPARE),
    output:
        table=report(
            "results/compare/runs.csv",
            caption="../report/compare.rst",
            category="Comparison of runs",
        ),
        plot=report(
            "results/compare/runs.png",
            caption="../report/compare.rst",
            category="Comparison of runs",
        ),
    log:
        "logs/compare.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        runs=COMPARE,
        code=code_version("../scripts/compare_runs.py"),
    script:
        "../scripts/compare_runs.py"


rule resolved_config:
    output:
        report(
            "results/config.yaml",
            caption="../report/config.rst",
            category="Configuration",
        ),
    log:
        "logs/config.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        config=config,
        runs={run: run_settings(run) for run in RUNS},
        code=code_version("../scripts/resolved_config.py"),
    script:
        "../scripts/resolved_config.py"


rule cv:
    input:
        "results/cv/summary.csv",


rule compare:
    input:
        "results/compare/runs.csv",


rule tune_worker:
    input:
        features=FEATURES,
        clips=CLIPS,
    output:
        "results/tune/workers/{worker}.json",
    log:
        "logs/tune/worker-{worker}.log",
    conda:
        "../../envs/clipva.yaml"
    threads: 2
    params:
        tune=config["tune"],
        settings=TUNE_SETTINGS,
        journal=TUNE_JOURNAL,
        code=code_version("../scripts/tune.py"),
    script:
        "../scripts/tune.py"


rule tune_summary:
    input:
        expand(
            "results/tune/workers/{worker}.json",
            worker=range(config["tune"]["workers"]),
        ),
    output:
        best=report(
            "results/tune/best.yaml",
            caption="../report/tune.rst",
            category="Tuning",
        ),
        trials=report(
            "results/tune/trials.csv",
            caption="../report/tune.rst",
            category="Tuning",
        ),
        history=report(
            "results/tune/history.png",
            caption="../report/tune.rst",
            category="Tuning",
        ),
        importance=report(
            "results/tune/importance.png",
            caption="../report/tune.rst",
            category="Tuning",
        ),
    log:
        "logs/tune/summary.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        folds=config["tune"]["folds"],
        journal=TUNE_JOURNAL,
        code=code_version("../scripts/tune_summary.py"),
    script:
        "../scripts/tune_summary.py"


rule tune:
    input:
        "results/tune/best.yaml",
