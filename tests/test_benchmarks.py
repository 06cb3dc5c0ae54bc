"""The benchmarks run and print their figures (at toy sizes; nothing here is timed or compared with a target).

A benchmark that crashes, or prints a ratio that is not a number, is noticed here rather than by the next
person who measures the hardware."""

import math
import os
import re
import subprocess
import sys
from statistics import median

import pytest
from conftest import REPO, copy_built, needs_detector, run_snakemake

BENCHMARKS = REPO / "benchmarks"
pytestmark = pytest.mark.slow  # several torch processes: minutes in all


def run(script: str, *args: str, timeout: int = 600, env: dict | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def figure(out: str, label: str) -> float:
    """The number after `label` and a colon on the first line that starts with `label`."""
    match = re.search(rf"^{re.escape(label)}\s*:\s*(-?[0-9.]+)", out, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{out}"
    value = float(match.group(1))
    assert math.isfinite(value) and value > 0, f"{label}: {value}"
    return value


def test_gemm_prints_the_bf16_ceiling():
    out = run("gemm.py", "--batch-size", "4", "--rounds", "1", "--seconds", "0.05")
    assert re.search(r"^ratio bf16 / fp32, 1 thread\(s\): [0-9.]+$", out, re.MULTILINE), out
    assert "machine:" in out


def test_benchmarks_run_under_the_workflows_openmp_policy():
    """The workflow's jobs run with OMP_WAIT_POLICY=PASSIVE unless the environment sets one; so do the
    benchmarks (extraction of 720x576 frames: end to end / encoder only 0.80 with it, 0.61 unset, medians of
    8 alternated pairs), and a policy that is set is kept."""
    args = ("--batch-size", "4", "--rounds", "1", "--seconds", "0.05")
    unset = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert "OMP_WAIT_POLICY PASSIVE)" in run("gemm.py", *args, env=unset)
    assert "OMP_WAIT_POLICY ACTIVE)" in run("gemm.py", *args, env={**unset, "OMP_WAIT_POLICY": "ACTIVE"})


def test_extraction_rounds_and_ratios(tmp_path):
    out = run(
        "extraction.py",
        "--model",
        "clipva-tiny",
        "--clips",
        "2",
        "--repeat",
        "2",
        "--batch-size",
        "16",
        "--precision",
        "bf16",
        "--data",
        str(tmp_path / "afew-va"),
    )
    rounds = [
        {key: float(value) for key, value in (item.rsplit(" ", 1) for item in line.split(", "))}
        for line in re.findall(r"^round \d+: (.*)$", out, re.MULTILINE)
    ]
    assert len(rounds) == 2, out
    for label in ("end to end", "encoder only", "naive loop"):
        figure(out, label)  # printed, finite and positive
    ceiling = figure(out, "ceiling")
    assert figure(out, "encoder fp32") > 0  # bf16 run: the fp32 encoder is timed too
    ratios = [float(v) for v in re.findall(r"^ratio\s*:\s*([0-9.]+)", out, re.MULTILINE)]
    assert len(ratios) == 2, out
    # medians of the per-round ratios (the rounds' figures are printed to one decimal): not the ratios of the
    # medians, which differ from them as much as the rounds differ, and a busy machine makes them differ
    per_round = lambda a, b: median(r[a] / r[b] for r in rounds)  # noqa: E731
    assert ratios[0] == pytest.approx(per_round("end_to_end", "encoder"), rel=0.05, abs=0.01)
    assert ratios[1] == pytest.approx(per_round("end_to_end", "naive"), rel=0.05, abs=0.01)
    assert ceiling == pytest.approx(per_round("encoder", "naive"), rel=0.05, abs=0.01)
    # bf16 against the naive loop's fp32: the stores differ, but only by rounding
    diff = float(re.search(r"max \|feature difference\| vs end to end ([0-9.e+-]+)", out).group(1))
    assert diff < 0.5
    decoding = r"^decoding\s*: PIL ([0-9.]+), clipva \(libspng\) ([0-9.]+) ms/frame  \(PIL / libspng = ([0-9.]+);"
    pil, spng, ratio = map(float, re.search(decoding, out, re.MULTILINE).groups())
    assert pil > 0 and spng > 0 and ratio == pytest.approx(pil / spng, rel=0.5)


def test_extraction_cached_data_is_reused(tmp_path):
    args = ("--model", "clipva-tiny", "--clips", "1", "--repeat", "1", "--no-naive", "--data", str(tmp_path / "d"))
    first = run("extraction.py", *args)
    assert "[data] generated 1 clips" in first
    second = run("extraction.py", *args)
    assert "[data] generated" not in second
    assert "naive loop" not in second and "ceiling" not in second
    figure(second, "end to end")


@needs_detector
def test_face_detection_finds_the_drawn_faces_where_they_are_annotated():
    out = run("face_detection.py", "--clips", "8")
    for seed in (0, 1):
        line = re.search(
            rf"^demo seed {seed}: .*found in ([0-9.]+)%, median IoU with the landmark box ([0-9.]+)", out, re.M
        )
        assert line, out
        assert float(line.group(1)) > 90 and float(line.group(2)) > 0.8, line.group(0)


@pytest.mark.e2e
@needs_detector
def test_crop_boxes_compares_the_four_ways_on_a_finished_run(built, tmp_path):
    work = copy_built(built, tmp_path / "work")
    run_snakemake(work, "results/runs/main/model")
    out = run("crop_boxes.py", "--workdir", str(work))
    for way in ("png_landmarks", "png_detector", "video_landmarks", "video_detector"):
        line = re.search(
            rf"^{way}\s*: correlation with the labels valence (\S+) arousal (\S+); .* (\S+) (\S+)$", out, re.M
        )
        assert line and all(math.isfinite(float(v)) for v in line.groups()), out
    assert re.search(r"^png_landmarks\s*:.* 1\.000 1\.000$", out, re.M), out


@pytest.mark.e2e
def test_many_splits_scores_the_head_and_the_probe_on_each_split_of_a_finished_run(built):
    out = run("many_splits.py", str(built), "--random", "1", "--folds", "0", "--set", "finetune.epochs=2")
    for split in ("configured", "random1"):
        line = re.search(rf"^{split}\s+(\S+)\s+(\S+)\s+(\S+)  \(", out, re.M)
        assert line, out
        head, probe, lead = (float(v) for v in line.groups())
        assert all(math.isfinite(v) for v in (head, probe, lead)) and abs(head - probe - lead) < 2e-3, out
    assert re.search(r"^configured and random \(2\): head ", out, re.M), out
    bad = subprocess.run(
        [sys.executable, str(BENCHMARKS / "many_splits.py"), str(built), "--set", "head.no_such=1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "head.no_such=1: not a head.* or finetune.* setting" in bad.stderr


def test_finetune_epoch_runs():
    out = run("finetune_epoch.py", "--clips", "10", "--epochs", "1", "--no-lora")
    assert figure(out, "cached epoch") > 0
    assert 0 < figure(out, "data loading") < 100


@pytest.mark.parametrize("variant", [[], ["--variant", "readout=linear"]])
def test_finetune_cost_compares_now_with_before(variant):
    out = run("finetune_cost.py", "--clips", "10", "--epochs", "1", "--rounds", "1", *variant)
    now, before = (
        float(re.search(rf"^{name}\s*:.* a run of \d+ epochs\s+([0-9.]+) s", out, re.MULTILINE).group(1))
        for name in ("now", "before")
    )
    assert figure(out, "ratio run now / before") == pytest.approx(now / before, abs=0.01)
    assert ("the default head with readout = linear" in out) == bool(variant)


def test_training_step_prints_both_paths():
    out = run("training_step.py", "--batch", "2", "--window", "4", "--steps", "2")
    cached, lora = figure(out, "cached features"), figure(out, "LoRA end to end")
    assert figure(out, "ratio") == pytest.approx(lora / cached, rel=0.05)
    steps = float(re.search(r"^LoRA end to end :.*\(([0-9.]+) steps/s", out, re.MULTILINE).group(1))
    assert steps == pytest.approx(1 / lora, rel=0.05)
    assert ("peak GPU memory" in out) == ("device cuda" in out)  # reported on CUDA only


@pytest.mark.e2e
def _gpu_check(tmp_path, **env) -> subprocess.CompletedProcess:
    """benchmarks/gpu_check.sh with this Python, its logs under tmp_path/logs."""
    return subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), str(tmp_path / "logs")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable, **env},
    )


def test_gpu_check_runs_its_cpu_fallback_and_prints_one_table(tmp_path):
    """benchmarks/gpu_check.sh is the command a session with a GPU runs first; here its CPU fallback runs the
    same steps at toy sizes, so the script itself is tested (each row ok, with its figure)."""
    proc = _gpu_check(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert table[0] == "| check | result | seconds |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table[1:]}
    assert len(rows) == 5 and not any("FAILED" in line for line in rows.values())
    assert re.search(r"test mean CCC -?[0-9.]+", rows["tiny workflow end to end"])
    assert re.search(
        r"end to end : [0-9.]+ frames/s.*ratio : [0-9.]+",
        next(v for k, v in rows.items() if k.startswith("extraction")),
    )
    assert re.search(r"[0-9.]+ steps/s", next(v for k, v in rows.items() if k.startswith("LoRA step")))
    assert sum("fine-tuning epoch" in k and "val CCC" in v for k, v in rows.items()) == 2


def test_affwild2_scale_runs_every_step_and_compares_sizes(tmp_path):
    out = run("affwild2_scale.py", "--videos", "20", "40", "--frames", "24", "--tmp", str(tmp_path))
    rows = [line for line in out.splitlines() if line.startswith(("| 20 |", "| 40 |"))]
    assert len(rows) == 2 and "| 40 | 560 |" in rows[1]  # 40 videos of 24 frames, 10 of each without a face
    assert all(" (18) |" in row for row in rows)  # the dry run's jobs do not grow with the videos
    assert "20 -> 40 videos: index" in out and "fit" in out
    assert not list(tmp_path.iterdir())  # the data sets are removed


def test_gpu_check_step_timeout_ends_each_step_and_says_so(tmp_path):
    """A GPU lease is short: with STEP_TIMEOUT a step that runs too long is ended, its row says so, the table
    is still printed, and the script's exit status says that not every check ran."""
    proc = _gpu_check(tmp_path, STEP_TIMEOUT="1")
    assert proc.returncode != 0
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 5
    assert all("FAILED (timed out after 1 s" in row for row in rows), rows
    assert "ended by STEP_TIMEOUT after 1 s" in (tmp_path / "logs" / "tiny.log").read_text()
