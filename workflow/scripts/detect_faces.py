from clipva.afew import read_frames
from clipva.atomic import write_csv
from clipva.faces import FaceDetector, detector_boxes
from clipva.jobs import job_threads, log, run_job


def main(smk):
    p = smk.params
    frames = read_frames(smk.input[0])
    detector = FaceDetector(min_score=p.min_score, threads=job_threads(smk.threads))
    boxed, found = detector_boxes(frames, detector, p.smooth_window, p.on_bad_input == "skip", progress=True)
    write_csv(smk.output.frames, boxed)
    write_csv(smk.output.faces, found)
    none = found.loc[found["faces_found"] == 0, "clip_id"].tolist()
    log.info(
        "faces: found in %d of %d frames; %d clips without any face (cropped whole)%s",
        found["faces_found"].sum(),
        found["frames"].sum(),
        len(none),
        f": {', '.join(none[:20])}" if none else "",
    )


run_job(snakemake, main)  # noqa: F821
