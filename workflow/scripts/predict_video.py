from clipva.jobs import run_job
from clipva.predict import load_model, predict_video_files


def main(smk):
    o = {k: smk.params.predict[k] for k in ("fps", "no_face", "smooth_window", "min_score")}
    model = load_model(smk.input.model)
    predict_video_files(
        smk.input.video, model, smk.output.csv, smk.output.plot, smk.wildcards.video, page=smk.output.page, **o
    )


run_job(snakemake, main)  # noqa: F821
