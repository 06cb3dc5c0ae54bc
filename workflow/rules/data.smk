rule demo:
    output:
        directory(DEMO_ROOT),
    log:
        "logs/demo.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        demo=config["demo"],
        code=code_version("../scripts/demo.py"),
    script:
        "../scripts/demo.py"


rule convert_videos:
    input:
        user_root(),
    output:
        directory(VIDEOS_ROOT),
    log:
        "logs/convert_videos.log",
    conda:
        "../../envs/clipva.yaml"
    threads: 2
    params:
        videos=config["dataset"]["videos"],
        code=code_version("../scripts/convert_videos.py"),
    script:
        "../scripts/convert_videos.py"


rule demo_affwild2:
    output:
        directory(AFFWILD2_DEMO),
    log:
        "logs/demo_affwild2.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        demo=config["demo"],
        code=code_version("../scripts/demo_affwild2.py"),
    script:
        "../scripts/demo_affwild2.py"


# Aff-Wild2 is read in place: its index also writes the video table (sets, frame counts)
if FORMAT == "affwild2":

    rule index_affwild2:
        input:
            root=dataset_root(),
            # the demo's list comes with its folder; a user's list is an input of its own
            test_list=[] if config["dataset"]["root"] == "demo" else test_list() or [],
        output:
            frames=FRAMES,
            report=REPORT,
            videos=VIDEO_TABLE,
        log:
            "logs/index.log",
        conda:
            "../../envs/clipva.yaml"
        params:
            on_bad_input=config["dataset"]["on_bad_input"],
            test_list=test_list(),
            code=code_version("../scripts/index_affwild2.py"),
        script:
            "../scripts/index_affwild2.py"

else:

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
            code=code_version("../scripts/index.py"),
        script:
            "../scripts/index.py"


rule detect_faces:
    input:
        FRAMES,
    output:
        frames=DETECTED_FRAMES,
        faces="results/index/faces_detected.csv",
    log:
        "logs/detect_faces.log",
    conda:
        "../../envs/clipva.yaml"
    threads: 1
    params:
        min_score=config["predict"]["min_score"],
        smooth_window=config["predict"]["smooth_window"],
        on_bad_input=config["dataset"]["on_bad_input"],
        code=code_version("../scripts/detect_faces.py"),
    script:
        "../scripts/detect_faces.py"


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
        code=code_version("../scripts/split.py"),
    script:
        "../scripts/split.py"
