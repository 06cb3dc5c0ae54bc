"""The README's cluster commands, run on a real one-node SLURM cluster on loopback through profiles/slurm.

Starts munged, slurmctld and slurmd from Debian's packages (installed here if missing; needs root), with a
fake GPU declared through gres (tests/slurm_loopback.py), runs the command lines of the README's "A cluster:
the SLURM profile" block on the tiny demo, checks the controller's record of the jobs and that the result
equals a local run's, and stops every daemon it started by PID.
"""

import shlex
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, SNAKEMAKE, copy_built, run_snakemake, write_config
from slurm_loopback import NODE_CPUS, Unavailable, loopback_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
CLUSTER_SECTION = "## A cluster: the SLURM profile"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        with loopback_cluster(tmp_path_factory.mktemp("slurm")) as log:
            yield {"log": log}
    except Unavailable as why:
        pytest.skip(str(why))


def readme_cluster_commands() -> list[str]:
    """The command lines of the code block of the README's cluster section."""
    section = (REPO / "README.md").read_text().split(CLUSTER_SECTION)[1]
    block = section.split("```bash\n")[1].split("```")[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def as_test(line: str, workdir: Path, config: Path) -> list[str]:
    """A README line, run on the tiny test configuration in `workdir`: the repository's Snakefile and
    profile, the test config before the README's own config file, and a short first status check."""
    words = shlex.split(line)
    words = [SNAKEMAKE if w == ".venv/bin/snakemake" else str(REPO / w) if w == "profiles/slurm" else w for w in words]
    if "--configfile" in words:
        words.insert(words.index("--configfile") + 1, str(config))
    else:
        words += ["--configfile", str(config)]
    return [
        "timeout",
        "-k",
        "20",
        "900",
        *words,
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--slurm-init-seconds-before-status-checks",
        "1",
    ]


def _jobs() -> list[str]:
    """The controller's record of the workflow's jobs: one line each."""
    out = subprocess.run(["scontrol", "show", "jobs", "-o"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "Comment=rule_" in line]


def test_readme_cluster_commands_run_through_slurm_and_equal_a_local_run(cluster, built, tmp_path):
    commands = readme_cluster_commands()
    assert commands[0] == ".venv/bin/snakemake --profile profiles/slurm results/submission.csv"
    remote = tmp_path / "slurm"
    remote.mkdir()
    config = write_config(remote)
    before = {line.split()[0] for line in _jobs()}
    seen: dict[str, str] = {}  # JobId -> record, gathered after each command (finished jobs age out)
    for line in commands:
        if not line.startswith(".venv/bin/snakemake"):
            subprocess.run(line, shell=True, cwd=remote, check=True)  # e.g. writing shards.yaml
            continue
        proc = subprocess.run(as_test(line, remote, config), cwd=remote, capture_output=True, text=True, timeout=960)
        assert proc.returncode == 0, line + "\n" + proc.stdout[-3000:] + proc.stderr[-5000:]
        seen.update((job.split()[0], job) for job in _jobs() if job.split()[0] not in before)
        if line == commands[0]:
            submission = pd.read_csv(remote / "results/submission.csv", dtype={"clip_id": str})

    # the controller's record: every job went through sbatch, GPU rules with a gpu, the shards as 8 jobs
    jobs = list(seen.values())
    rules = [line.split("Comment=")[1].split()[0] for line in jobs]
    assert all("JobState=COMPLETED" in line for line in jobs)
    assert {r.split("_wildcards")[0] for r in rules} >= {
        "rule_extract_features",
        "rule_merge_features",
        "rule_pretrain",
        "rule_finetune",
    }
    assert sum(r.startswith("rule_extract_features") for r in rules) == 1 + 8
    assert all("gpu" in line for line in jobs if "Comment=rule_extract_features" in line)
    # the frozen path's head trains and evaluates on CPUs: no GPU held for it
    frozen = ("Comment=rule_pretrain", "Comment=rule_finetune", "Comment=rule_evaluate", "group")
    assert not any("gpu" in line for line in jobs if any(word in line for word in frozen))
    assert len(list((remote / "results/features/shards").glob("*-of-8.h5"))) == 8
    assert "_slurm_rpc_submit_batch_job" in cluster["log"].read_text()

    local = pd.read_csv(built / "results/submission.csv", dtype={"clip_id": str})  # the same config, run locally
    pd.testing.assert_frame_equal(submission, local)


SUBMIT = ".venv/bin/snakemake --profile profiles/slurm results/submission.csv"
# Two extraction shards and a fine-tuning long enough (about 40 ms an epoch here) to be caught mid-work.
PREEMPTED = {"features": {"shards": 2}, "finetune": {"epochs": 300, "patience": 1000}}


def _queue() -> list[tuple[str, str, str]]:
    """(job id, state, rule comment) of every job the controller knows."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%T|%k"], capture_output=True, text=True, check=True)
    return [tuple(line.split("|", 2)) for line in out.stdout.splitlines()]


def _running(rule: str) -> list[str]:
    return [job for job, state, comment in _queue() if state == "RUNNING" and comment.startswith(f"rule_{rule}")]


def _cancel_when(proc: subprocess.Popen, rule: str, working, timeout: float = 600) -> list[str]:
    """scancel the running jobs of `rule` as soon as one of them is working (working() holds)."""
    end = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the run ended before {rule} could be cancelled"
        assert time.monotonic() < end, f"timed out waiting for {rule} to work"
        jobs = _running(rule)
        if jobs and working():
            subprocess.run(["scancel", *jobs], check=True)
            return jobs
        time.sleep(0.05)


def test_jobs_the_cluster_cancels_mid_work_are_retried_and_the_result_is_unchanged(cluster, built, tmp_path):
    # from the main job's workdir: the 2 shards and the long fine-tuning run again, the data set is not remade
    remote, local = copy_built(built, tmp_path / "slurm"), copy_built(built, tmp_path / "local")
    config = write_config(remote, PREEMPTED)
    shards = remote / "results/features/shards"
    state = remote / "results/runs/main/.state/finetune.pt"
    with open(tmp_path / "snakemake.log", "w") as out:
        proc = subprocess.Popen(as_test(SUBMIT, remote, config), cwd=remote, stdout=out, stderr=subprocess.STDOUT)
        try:
            extraction = _cancel_when(proc, "extract_features", lambda: any(shards.glob(".*.tmp-*")))
            finetuning = _cancel_when(proc, "finetune", state.exists)
            assert proc.wait(timeout=900) == 0, (tmp_path / "snakemake.log").read_text()[-5000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    states = {job: state for job, state, _ in _queue()}
    assert all(states[job] == "CANCELLED" for job in extraction + finetuning)
    # the profile's retry resubmitted both; fine-tuning went on from its last saved epoch, not from zero
    assert "finetune: resuming after epoch" in (remote / "logs/runs/main/finetune.log").read_text()
    assert not any(shards.glob(".*.tmp-*"))
    run_snakemake(local, overrides=PREEMPTED)
    for name in ("results/submission.csv", "results/runs/main/finetune/history.json"):
        assert (remote / name).read_bytes() == (local / name).read_bytes(), name


def test_a_job_past_its_time_limit_is_reported_with_its_rule_and_resource(cluster, built, tmp_path):
    copy_built(built, tmp_path)  # features made: fine-tuning is the first job submitted
    config = write_config(tmp_path, {"finetune": {"epochs": 100_000, "patience": 100_000}})
    limit = ["--set-resources", "finetune:runtime=1", "--retries", "0"]
    proc = subprocess.run(as_test(SUBMIT, tmp_path, config) + limit, capture_output=True, text=True, timeout=960)
    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    assert "rule finetune: the cluster ended the job (TIMEOUT)" in said, said[-5000:]
    assert "raise its `runtime` (minutes) in the profile, under set-resources: finetune:" in said
    assert not (tmp_path / "results/runs/main/finetune/best.pt").exists()


def test_a_job_no_node_can_hold_stops_the_run_before_anything_is_submitted(cluster, tmp_path):
    config = write_config(tmp_path)
    before = set(_queue())
    too_many = ["--set-threads", f"extract_features={NODE_CPUS * 2}"]
    start = time.monotonic()
    proc = subprocess.run(as_test(SUBMIT, tmp_path, config) + too_many, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and time.monotonic() - start < 120  # not pending for ever
    said = proc.stdout + proc.stderr
    assert f"rule extract_features asks for {NODE_CPUS * 2} threads, but no node of the cluster has more than" in said
    assert f"set-threads: extract_features: {NODE_CPUS}" in said
    assert set(_queue()) == before  # refused before submission: not even the first job went to the queue
