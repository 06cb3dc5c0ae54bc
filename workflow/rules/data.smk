rule demo:
    output:
        directory(DEMO_ROOT),
    log:
        "logs/demo.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        demo=config["demo"],
        code=code_version("demo"),
    script:
        "../scripts/demo.py"


rule index:
    input:
        dataset_root(),
    output:
        frames=FRAMES,
        report=REPORT,
    log:
        "logs/index.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        on_bad_input=config["dataset"]["on_bad_input"],
        code=code_version("afew"),
    script:
        "../scripts/index.py"


rule split:
    input:
        FRAMES,
    output:
        CLIPS,
    log:
        "logs/split.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        split=config["split"],
        code=code_version("splits"),
    script:
        "../scripts/split.py"
