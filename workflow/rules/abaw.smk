# Aff-Wild2 (dataset.format: affwild2): the ABAW valence-arousal challenge's files from the run's predictions.
rule abaw_submission:
    input:
        predictions=abaw_predictions,
        videos=VIDEO_TABLE,
        frames=FRAMES,
        root=dataset_root(),
    output:
        submission=directory(f"{ABAW}/submission"),
        zip=f"{ABAW}/submission.zip",
        sample=f"{ABAW}/predictions.txt",
        validation=directory(f"{ABAW}/validation"),
        filled=f"{ABAW}/no_face_frames.csv",
        score=f"{ABAW}/validation_score.json",
    log:
        "logs/abaw_submission.log",
    conda:
        "../../envs/clipva.yaml"
    params:
        code=code_version("../scripts/abaw_submission.py"),
    script:
        "../scripts/abaw_submission.py"
