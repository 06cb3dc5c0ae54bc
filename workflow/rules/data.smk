rule demo:
    output:
        directory(DEMO_ROOT),
    params:
        demo=config["demo"],
        code=code_version("demo"),
    log:
        "logs/demo.log",
    script:
        "../scripts/demo.py"


rule index:
    input:
        dataset_root(),
    output:
        frames=FRAMES,
        report=REPORT,
    params:
        on_bad_input=config["dataset"]["on_bad_input"],
        code=code_version("afew"),
    log:
        "logs/index.log",
    script:
        "../scripts/index.py"


rule split:
    input:
        FRAMES,
    output:
        CLIPS,
    params:
        split=config["split"],
        code=code_version("splits"),
    log:
        "logs/split.log",
    script:
        "../scripts/split.py"
