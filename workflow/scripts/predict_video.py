from clipva.atomic import write_csv
from clipva.jobs import log, run_job
from clipva.plots import video_curves
from clipva.predict import load_model, predict_video


def main(smk):
    cfg = smk.params.predict
    model = load_model(smk.input.model)
    table = predict_video(
        smk.input.video,
        model,
        fps=cfg["fps"],
        no_face=cfg["no_face"],
        smooth_window=cfg["smooth_window"],
        min_score=cfg["min_score"],
    )
    write_csv(smk.output.csv, table, float_format="%.4f")
    video_curves(table, smk.output.plot, title=smk.wildcards.video)
    log.info("%s: %d frames, face in %d", smk.input.video, len(table), int(table["face_found"].sum()))


run_job(snakemake, main)  # noqa: F821
