"""Faults: killed jobs, a full disk, a read-only results folder. End to end, with the real snakemake.

A killed run is started again with the same command: extraction starts over and its store equals an
uninterrupted run's; fine-tuning resumes after its last completed epoch and ends with the same metrics.
"""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import pytest
from conftest import REPO, SNAKEMAKE, copy_built, kill_when, run_snakemake, write_config

from clipva.demo import make_demo

pytestmark = pytest.mark.e2e


def _command(workdir: Path, *args: str, overrides: dict | None = None) -> list[str]:
    config = write_config(workdir, overrides)
    return [
        SNAKEMAKE,
        *args,
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(config),
    ]


def _again(workdir: Path, what: str, overrides: dict | None = None) -> None:
    """Run the same command again; after snakemake itself was killed its lock must go first (--unlock)."""
    if what == "all":
        run_snakemake(workdir, "--unlock", overrides=overrides)
    run_snakemake(workdir, overrides=overrides)


def _store(path: Path) -> dict:
    with h5py.File(path) as f:
        return {c: (f[f"clips/{c}/features"][()], f[f"clips/{c}/frame_index"][()]) for c in f["clips"]}


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def features_ready(built, tmp_path_factory):
    """A workdir with the demo extracted and no run trained yet (shared, copied by each test)."""
    workdir = copy_built(built, tmp_path_factory.mktemp("faults"))
    shutil.rmtree(workdir / "results/runs")
    return workdir


def test_killed_extraction_reruns_to_the_same_store(features_ready, tmp_path):
    shutil.copytree(features_ready / "results/demo", tmp_path / "results/demo")
    shards = tmp_path / "results/features/shards"

    def writing() -> bool:
        return any(shards.glob(".*.tmp-*.h5"))

    kill_when(_command(tmp_path, "features"), writing, "job")
    assert not (shards / "0-of-1.h5").exists()  # never under its final name while half-written
    assert any(shards.glob(".*.tmp-*.h5"))  # the killed writer's temporary
    run_snakemake(tmp_path, "features")  # the same command again
    assert not any(shards.glob(".*.tmp-*"))  # the stale temporary is gone
    a, b = _store(features_ready / "results/features/features.h5"), _store(tmp_path / "results/features/features.h5")
    assert a.keys() == b.keys()
    for clip_id in a:
        assert (a[clip_id][0] == b[clip_id][0]).all() and (a[clip_id][1] == b[clip_id][1]).all()


# No ridge start: the best epoch is then a trained one, so the metrics depend on every epoch before it (from the
# ridge start, the tiny LoRA run kept its start and the comparison could not see a resume that went wrong).
LORA = {
    "run": "lora",
    "training": {"backbone": "lora"},
    "pretrain": {"epochs": 1},
    "finetune": {"epochs": 3, "batch_size": 4, "linear_init": False},
    "lora": {"num_workers": 0},
}
CACHED = {"finetune": {"epochs": 40, "patience": 100}}


@pytest.mark.parametrize(("overrides", "what"), [(CACHED, "all"), (LORA, "job")], ids=["cached", "lora"])
def test_killed_finetuning_resumes_to_the_same_metrics(features_ready, tmp_path, overrides, what):
    run = overrides.get("run", "main")
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    shutil.copytree(features_ready, reference)
    run_snakemake(reference, f"results/runs/{run}/pretrain/head.pt", overrides=overrides)
    shutil.copytree(reference, killed)
    run_snakemake(reference, overrides=overrides)

    state = killed / f"results/runs/{run}/.state/finetune.pt"
    kill_when(_command(killed, overrides=overrides), state.exists, what)  # right after the first epoch's save
    assert not (killed / f"results/runs/{run}/finetune/best.pt").exists()
    _again(killed, what, overrides)
    assert "finetune: resuming after epoch" in (killed / f"logs/runs/{run}/finetune.log").read_text()
    metrics = [json.loads((w / f"results/runs/{run}/eval/metrics.json").read_text()) for w in (reference, killed)]
    assert metrics[0]["pooled"] == metrics[1]["pooled"] and metrics[0]["best_epoch"] == metrics[1]["best_epoch"]
    assert metrics[0]["best_epoch"]["epoch"] >= 0  # a trained epoch, not the start, decided the result
    history = [(w / f"results/runs/{run}/finetune/history.json").read_text() for w in (reference, killed)]
    assert history[0] == history[1]  # every epoch's loss and validation scores, not only the best


def _mount_tmpfs(path: Path, *options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(["size=256k", *options]), "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small file system here to fill up ({proc.stderr.strip()})")


@pytest.fixture
def small_disk(tmp_path):
    mounts = []

    def mount(path: Path, *options: str) -> Path:
        _mount_tmpfs(path, *options)
        mounts.append(path)
        return path

    yield mount
    for path in reversed(mounts):
        subprocess.run(["umount", str(path)], check=False)


@pytest.mark.parametrize("where", ["results/index", "results/features"])
def test_full_disk_stops_with_one_clear_message_and_keeps_the_inputs(tmp_path, small_disk, where):
    data = tmp_path / "data"
    make_demo(data, n_clips=4, n_actors=2, min_frames=5, max_frames=6)
    before = _tree_digest(data)
    disk = small_disk(tmp_path / "work" / where)
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:  # fill it completely
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    proc = run_snakemake(tmp_path / "work", "features", overrides={"dataset": {"root": str(data)}}, check=False)
    assert proc.returncode != 0
    log_name = "index.log" if where == "results/index" else "features/extract-0-of-1.log"
    log = (tmp_path / "work/logs" / log_name).read_text()
    assert "cannot write" in log and "No space left on device" in log and "free some space" in log
    assert "Traceback" not in log
    assert sorted(p.name for p in disk.rglob("*")) == ["filler"]  # no partial output, no temporary
    assert _tree_digest(data) == before  # inputs untouched
    (disk / "filler").unlink()  # space again: the same command finishes
    run_snakemake(tmp_path / "work", "features", overrides={"dataset": {"root": str(data)}})


def test_read_only_results_folder_is_named(tmp_path, small_disk):
    data = tmp_path / "data"
    make_demo(data, n_clips=3, n_actors=2, min_frames=5, max_frames=6)
    small_disk(tmp_path / "work" / "results", "ro")
    proc = run_snakemake(tmp_path / "work", "features", overrides={"dataset": {"root": str(data)}}, check=False)
    assert proc.returncode != 0
    assert "results/index" in proc.stderr and "Read-only file system" in proc.stderr
