"""End-to-end: the real snakemake on a tiny demo with the tiny CLIP architecture."""

import base64
import itertools
import json
import re
import shlex
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE, copy_built, run_snakemake

pytestmark = pytest.mark.e2e


def _planned(proc) -> set[str]:
    """Rules a dry run would execute (from its job-stats table)."""
    table = proc.stdout.split("Job stats:")[1].split("Reasons:")[0] if "Job stats:" in proc.stdout else ""
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+\s*$", table, re.M)} - {"total"}


def _dry_run(tmp_path, configfile: str, *targets: str) -> subprocess.CompletedProcess:
    """`snakemake -n` of a shipped config file in an empty folder of its own, as its README command runs it."""
    cmd = [SNAKEMAKE, "-n", "--cores", "4", *targets, "--configfile", str(REPO / configfile), "-d", str(tmp_path)]
    proc = subprocess.run([*cmd, "-s", str(REPO / "Snakefile")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def finished(built, tmp_path_factory):
    """The main job's workdir, this module's own copy (its tests add runs to it)."""
    return copy_built(built, tmp_path_factory.mktemp("e2e"))


def test_main_job_produces_submission_metrics_and_plots(finished):
    clips = pd.read_csv(finished / "results/index/clips.csv", dtype={"clip_id": str})
    frames = pd.read_csv(finished / "results/index/frames.csv", dtype={"clip_id": str})
    sub = pd.read_csv(finished / "results/submission.csv", dtype={"clip_id": str})
    assert list(sub.columns) == ["clip_id", "frame", "valence", "arousal"]
    wanted = clips.loc[clips["split"].isin(["test", "unlabeled"]), "clip_id"]
    assert "unlabeled" in set(clips["split"])
    expected = frames[frames["clip_id"].isin(wanted)][["clip_id", "frame"]].sort_values(["clip_id", "frame"])
    assert sub[["clip_id", "frame"]].values.tolist() == expected.values.tolist()
    assert sub[["valence", "arousal"]].abs().max().max() <= 10
    metrics = json.loads((finished / "results/runs/main/eval/metrics.json").read_text())
    for view in ("pooled", "per_clip"):
        for dim in ("valence", "arousal"):
            assert set(metrics[view][dim]) >= {"rmse", "pcc", "ccc", "sagr"}
    assert {"constant", "ridge_probe", "smoothed_ridge_probe"} <= set(metrics["baselines"])
    smoothed = metrics["baselines"]["smoothed_ridge_probe"]
    assert smoothed["window"] >= 1 and smoothed["val_mean_ccc"] >= metrics["baselines"]["ridge_probe"]["val_mean_ccc"]
    for part in ("within_clip", "clip_level"):  # movement inside clips, and the clips' levels, for both
        assert -1 <= metrics[part]["mean_ccc"] <= 1 and -1 <= smoothed[part]["mean_ccc"] <= 1
    for dim in ("valence", "arousal"):  # how much predictions and labels move from frame to frame
        moved = metrics["smoothness"][dim]
        assert moved["predictions"] > 0 and moved["labels"] >= 0
        assert set(smoothed["smoothness"][dim]) == {"predictions", "labels", "ratio"}
    for name in ("curves", "scatter", "timeseries", "circumplex"):
        png = finished / f"results/runs/main/eval/plots/{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with h5py.File(finished / "results/features/features.h5") as f:
        assert sorted(f["clips"]) == sorted(frames["clip_id"].unique())
    assert (finished / "logs/runs/main/finetune.log").read_text().count("finetune epoch") >= 1
    assert not (finished / "results/runs/main/.state/finetune.pt").exists()  # cleared once finished


def test_second_run_does_nothing(finished):
    proc = run_snakemake(finished, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


CONFIG = "resolved_config"  # results/config.yaml, the configuration in the report: any edit remakes it


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"finetune": {"lr": 0.002}}, {"finetune", "evaluate", "plots", "submission", "all"}),
        ({"pretrain": {"temperature": 0.2}}, {"pretrain", "finetune", "evaluate", "plots", "submission", "all"}),
        (
            {"pretrain": {"bins": 4}},
            {"text_embeddings", "pretrain", "finetune", "evaluate", "plots", "submission", "all"},
        ),
        ({"split": {"seed": 3}}, {"split", "pretrain", "finetune", "evaluate", "plots", "submission", "all"}),
        ({"evaluate": {"n_timeseries_clips": 1}}, {"plots", "submission", "all"}),
        ({"features": {"workers": 3}}, {"all"}),  # how many decode, not what: nothing reruns
        (
            {"face_crop": {"margin": 0.3}},
            {"extract_features", "merge_features", "pretrain", "finetune", "evaluate", "plots", "submission", "all"},
        ),
        (
            {"clip": {"model": "clipva-tiny", "precision": "bf16"}},
            {
                "extract_features",
                "merge_features",
                "text_embeddings",
                "pretrain",
                "finetune",
                "evaluate",
                "plots",
                "submission",
                "all",
            },
        ),
        # a variant that is neither the submitted run nor compared: nothing of the main run reruns
        ({"runs": {"other": {"finetune": {"epochs": 2}}}}, {"all"}),
    ],
)
def test_an_edit_reruns_exactly_what_depends_on_it(finished, override, expected):
    assert _planned(run_snakemake(finished, "-n", overrides=override)) == expected | {CONFIG}


def test_training_is_reproducible(finished, tmp_path):
    before = json.loads((finished / "results/runs/main/eval/metrics.json").read_text())
    shutil.copytree(finished / "results", tmp_path / "results")
    run_snakemake(tmp_path, "--forcerun", "pretrain")
    after = json.loads((tmp_path / "results/runs/main/eval/metrics.json").read_text())
    assert after["pooled"] == before["pooled"]


def _job_span(log: Path) -> tuple[datetime, datetime]:
    stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", log.read_text(), re.M)
    return tuple(datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in (stamps[0], stamps[-1]))


def test_sharded_extraction_equals_one_store(finished, tmp_path):
    shutil.copytree(finished / "results/demo", tmp_path / "results/demo")
    # 1 thread each on 2 cores: only the default profile's gpu=1 keeps two shards off one GPU at once
    run_snakemake(tmp_path, "features", "--set-threads", "extract_features=1", overrides={"features": {"shards": 3}})
    assert len(list((tmp_path / "results/features/shards").glob("*-of-3.h5"))) == 3
    spans = sorted(_job_span(tmp_path / f"logs/features/extract-{k}-of-3.log") for k in range(3))
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans)), spans
    one, sharded = finished / "results/features/features.h5", tmp_path / "results/features/features.h5"
    with h5py.File(one) as a, h5py.File(sharded) as b:
        assert sorted(a["clips"]) == sorted(b["clips"])
        for clip_id in a["clips"]:
            assert (a[f"clips/{clip_id}/frame_index"][()] == b[f"clips/{clip_id}/frame_index"][()]).all()
            # the same random-init model in each job: identical features
            assert abs(a[f"clips/{clip_id}/features"][()] - b[f"clips/{clip_id}/features"][()]).max() < 1e-4


def test_bad_config_is_rejected_naming_the_key(tmp_path):
    proc = run_snakemake(tmp_path, "-n", overrides={"split": {"method": "by_magic"}}, check=False)
    assert proc.returncode != 0
    assert "by_magic" in proc.stderr + proc.stdout and "method" in proc.stderr + proc.stdout
    proc = run_snakemake(tmp_path, "-n", overrides={"finetune": {"epochz": 3}}, check=False)
    assert proc.returncode != 0 and "epochz" in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("runs", "named"),
    [
        ({"warm": {"finetune": {"start_from": "nosuch"}}}, ["runs.warm", "start_from 'nosuch'", "neither"]),
        (
            {run: {"finetune": {"start_from": other}, "pretrain": {"epochs": 0}} for run, other in ("ab", "ba")},
            ["loop: a -> b -> a"],
        ),
        (
            {
                "warm": {
                    "finetune": {"start_from": "main"},
                    "pretrain": {"epochs": 0},
                    "head": {"window": 8, "stride": 4},
                }
            },
            ["head.stride, head.window"],
        ),
        ({"warm": {"finetune": {"start_from": "main"}}}, ["runs.warm", "pretrain.epochs: 0"]),  # the tiny config's 2
        (
            {
                "ada": {"training": {"backbone": "lora"}},
                "warm": {"finetune": {"start_from": "ada"}, "pretrain": {"epochs": 0}},
            },
            ["runs.warm", "'ada' is a LoRA run"],
        ),
    ],
)
def test_a_start_from_that_cannot_work_is_rejected_naming_it(tmp_path, runs, named):
    proc = run_snakemake(tmp_path, "-n", overrides={"runs": runs}, check=False)
    assert proc.returncode != 0
    for words in named:
        assert words in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    "name",
    ["heldout.yaml", "demo-large.yaml", "heldout-large.yaml", "demo-seed21.yaml", "levels.yaml", "movement.yaml"],
)
def test_the_shipped_demo_settings_plan_their_own_demo(tmp_path, name):
    """The generator settings docs/results.md reports on: valid, and a run in its own folder plans the whole
    job from a demo of its own."""
    proc = _dry_run(tmp_path, f"configs/{name}")
    assert {"demo", "extract_features", "finetune", "evaluate", "submission"} <= _planned(proc)


def test_the_example_variants_plan_their_comparison_and_cross_validation(tmp_path):
    """configs/experiments.yaml, as the README runs it: every variant valid, compared and cross-validated."""
    proc = _dry_run(tmp_path, "configs/experiments.yaml", "compare", "cv")
    assert {"compare_runs", "cv_summary", "finetune"} <= _planned(proc)
    for run in yaml.safe_load((REPO / "configs/experiments.yaml").read_text())["runs"]:
        assert f"results/runs/{run}/eval/metrics.json" in proc.stdout
    assert "results/cv/centred/fold0/eval/metrics.json" in proc.stdout


def test_the_ablation_plans_every_row_with_its_selection_score(tmp_path):
    """configs/ablation.yaml, the README's ablation command: every row valid, cross-validated on every fold with
    its selection score, and its start chosen as the default chooses it (the table is of today's default)."""
    ablation = yaml.safe_load((REPO / "configs/ablation.yaml").read_text())
    assert "start_folds" not in ablation.get("finetune", {})
    assert set(ablation["cv"]["runs"]) == set(ablation["runs"]) | {"main"} and ablation["cv"]["select"]
    proc = _dry_run(tmp_path, "configs/ablation.yaml", "cv")
    folds = yaml.safe_load((REPO / "config.yaml").read_text())["split"]["folds"]
    for run in ablation["cv"]["runs"]:
        for fold in range(folds):
            assert f"results/cv/{run}/fold{fold}/eval/metrics.json" in proc.stdout
            assert f"results/cv/{run}/fold{fold}/select.json" in proc.stdout


def test_bad_input_stops_with_the_file_named_and_no_output(tmp_path):
    data = tmp_path / "data"
    from clipva.demo import make_demo

    make_demo(data, n_clips=6, n_actors=3, min_frames=5, max_frames=8)
    (data / "003" / "003.json").write_text("{broken")
    proc = run_snakemake(tmp_path, "features", overrides={"dataset": {"root": str(data)}}, check=False)
    assert proc.returncode != 0
    assert "003/003.json: malformed JSON" in (tmp_path / "logs/index.log").read_text()
    assert not (tmp_path / "results/index/frames.csv").exists()
    proc = run_snakemake(tmp_path, "features", overrides={"dataset": {"root": str(data), "on_bad_input": "skip"}})
    report = (tmp_path / "results/index/validation_report.txt").read_text()
    assert "left out (1)" in report and "003.json: malformed JSON" in report
    with h5py.File(tmp_path / "results/features/features.h5") as f:
        assert "003" not in f["clips"] and len(f["clips"]) == 5


def test_dag_inspection_and_lint(finished):
    for arg, shown in (("--rulegraph", "extract_features"), ("--dag", "digraph"), ("--summary", "submission.csv")):
        assert shown in run_snakemake(finished, arg).stdout, arg
    lint = run_snakemake(finished, "--lint", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr


LORA = {
    "run": "lora",
    "training": {"backbone": "lora"},
    "pretrain": {"epochs": 1},
    "finetune": {"epochs": 2},
    "lora": {"num_workers": 0, "merge": True},
}


def test_lora_run_lives_beside_the_frozen_run(finished):
    frozen = (finished / "results/runs/main/eval/metrics.json").read_bytes()
    planned = _planned(run_snakemake(finished, "-n", overrides=LORA))
    assert "extract_features" not in planned and {"pretrain", "finetune", "evaluate"} <= planned
    run_snakemake(finished, overrides=LORA)
    run = finished / "results/runs/lora"
    for stage in ("pretrain", "finetune"):
        assert {p.name for p in (run / stage / "adapter").iterdir()} >= {
            "adapter_config.json",
            "adapter_model.safetensors",
        }
    assert (run / "finetune/adapter/merged_open_clip.pt").exists()
    metrics = json.loads((run / "eval/metrics.json").read_text())
    assert metrics["backbone"] == "lora"
    assert (finished / "results/runs/main/eval/metrics.json").read_bytes() == frozen  # the frozen run untouched
    sub = pd.read_csv(finished / "results/submission.csv", dtype={"clip_id": str})
    pred = pd.read_csv(run / "eval/predictions.csv", dtype={"clip_id": str})
    assert len(sub) == len(pred[pred["split"].isin(["test", "unlabeled"])])


def test_a_run_started_from_another_begins_where_that_one_ended(finished):
    """finetune.start_from: the run's fine-tuning starts from the other run's best head (no ridge start, no
    pretraining of its own), so it begins at that head's validation score and can only keep or beat it."""
    warm = {"runs": {"warm": {"finetune": {"start_from": "main", "epochs": 2, "lr": 1e-4}, "pretrain": {"epochs": 0}}}}
    target = "results/runs/warm/eval/metrics.json"
    planned = _planned(run_snakemake(finished, "-n", target, overrides=warm))
    assert planned == {"finetune", "evaluate"}  # main is reused as it is
    run_snakemake(finished, target, overrides=warm)
    main = json.loads((finished / "results/runs/main/finetune/history.json").read_text())["best"]
    started = json.loads((finished / "results/runs/warm/finetune/history.json").read_text())["best"]
    assert main["epoch"] >= 0  # main's best head is not its ridge start, so the two starts differ
    assert main["start_val_mean_ccc"] != pytest.approx(main["val_mean_ccc"], abs=1e-4)
    assert started["start_val_mean_ccc"] == pytest.approx(main["val_mean_ccc"], abs=1e-6)
    # in cross-validation each fold starts from the other run's head of the same fold
    jobs = _planned_jobs(run_snakemake(finished, "-n", "results/cv/warm/fold1/finetune/best.pt", overrides=warm))
    trained = sorted(re.search(r"exp=(\S+)", block).group(1) for block in jobs["finetune"])
    assert trained == ["cv/main/fold1", "cv/warm/fold1"]
    assert [re.search(r"exp=(\S+)", block).group(1) for block in jobs["pretrain"]] == ["cv/main/fold1"]


def test_the_shipped_lora_config_starts_where_the_frozen_run_ended(finished):
    """configs/lora.yaml (fewer epochs): a LoRA run beside main, started from main's head; with new adapters
    (no pretraining, the default) the image tower gives the cached features, so its start is main's best."""
    runs = yaml.safe_load((REPO / "configs/lora.yaml").read_text())["runs"]
    runs["lora"]["finetune"]["epochs"] = 1
    runs["lora"]["lora"] |= {"num_workers": 0}
    run_snakemake(finished, "compare", overrides={"runs": runs})
    main = json.loads((finished / "results/runs/main/finetune/history.json").read_text())["best"]
    lora = json.loads((finished / "results/runs/lora/finetune/history.json").read_text())["best"]
    assert lora["start_val_mean_ccc"] == pytest.approx(main["val_mean_ccc"], abs=1e-4)
    table = pd.read_csv(finished / "results/compare/runs.csv")
    assert set(table["run"]) == {"main", "lora"}
    assert table.set_index("run").loc["lora", "backbone"] == "lora"


def test_a_code_edit_reruns_every_run_whose_scripts_import_it(finished, tmp_path):
    """Each rule's params hash its script and the clipva modules it imports (test_provenance.py edits every
    module in turn): the adapters' code is imported by the training scripts, so an edit to it reruns the
    frozen run as well as the LoRA run, and leaves the text embeddings, whose script does not import it."""
    run_snakemake(finished, overrides=LORA)  # made by the test above; a no-op then
    copy = tmp_path / "workflow-copy"
    for part in ("workflow", "src", "profiles"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for part in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / part, copy / part)

    def planned(overrides: dict | None = None) -> set[str]:
        return _planned(run_snakemake(finished, "-n", overrides=overrides, snakefile=copy / "Snakefile"))

    def edit(module: str) -> None:
        with open(copy / f"src/clipva/{module}.py", "a", encoding="utf-8") as f:
            f.write("\n# an edit\n")

    training = {"pretrain", "finetune", "evaluate"}
    frozen, lora = planned(), planned(LORA)  # the last run made the submission of the LoRA run
    assert not (frozen | lora) & training
    edit("lora")
    assert planned() >= frozen | training | {"plots", "submission"}
    assert planned(LORA) >= lora | training | {"plots"}
    assert "text_embeddings" not in planned() | planned(LORA)
    edit("prompts")
    assert planned() >= training | {"text_embeddings", "plots", "submission"}


def test_report_holds_the_metrics_and_the_plots(finished):
    run_snakemake(finished, "--report", str(finished / "report.html"))
    html = (finished / "report.html").read_text()
    # the report embeds each file as a data URL: the metrics themselves, not only their name
    embedded = re.search(r"metrics\.json;base64,([A-Za-z0-9+/=]+)", html)
    assert embedded, "metrics.json is not in the report"
    assert base64.b64decode(embedded.group(1)) == (finished / "results/runs/main/eval/metrics.json").read_bytes()
    for name in ("curves", "scatter", "timeseries", "circumplex"):
        assert f"{name}.png" in html


def readme_snakemake_commands() -> list[list[str]]:
    """Every snakemake command line of the README's code blocks, split into words."""
    text = (REPO / "README.md").read_text()
    blocks = [b.split("```")[0] for b in text.split("```bash\n")[1:]]
    lines = [line.split("  #")[0] for block in blocks for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith(".venv/bin/snakemake")]


def test_readme_commands_give_no_target_where_snakemake_reads_config_files():
    """--configfile takes every word up to the next option: a target after it is read as a config file."""
    commands = readme_snakemake_commands()
    assert len(commands) >= 6
    for words in commands:
        if "--configfile" in words:
            after = words[words.index("--configfile") + 1 :]
            files = after[: next((i for i, w in enumerate(after) if w.startswith("-")), len(after))]
            assert all(f.endswith((".yaml", ".yml", ".json")) for f in files), " ".join(words)


def _planned_jobs(proc) -> dict[str, list[str]]:
    """rule -> the dry run's printed blocks of its jobs (threads, resources, wildcards...)."""
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        found = re.match(r"(?:local)?rule (\w+):", block)
        if found:
            jobs.setdefault(found.group(1), []).append(block)
    return jobs


def test_gpu_rules_ask_for_a_gpu_and_the_cores_that_feed_it(tmp_path):
    """Extraction and a LoRA run's training and evaluation hold the GPU and every core Snakemake may use (their
    decoding workers follow the threads); a frozen run's head trains and evaluates on 2 CPUs, with no GPU."""
    proc = run_snakemake(
        tmp_path,
        "-n",
        "all",
        "results/runs/lora/eval/metrics.json",
        cores=8,
        overrides={"runs": {"lora": {"training": {"backbone": "lora"}}}},
    )
    jobs = _planned_jobs(proc)
    for rule in ("extract_features", "pretrain", "finetune", "evaluate"):
        for block in jobs[rule]:
            lora = "exp=runs/lora" in block
            wants_gpu = rule == "extract_features" or lora
            assert re.search(rf"threads: {8 if wants_gpu else 2}\b", block), block
            assert re.search(rf"\bgpu={int(wants_gpu)}\b", block), block
