"""Jobs run with at most as many torch threads as they have CPUs, whatever --cores promised them."""

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from clipva import jobs


def test_job_threads_are_capped_by_the_cpus_the_job_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert jobs.available_cpus() == 2
    assert [jobs.job_threads(n) for n in (0, 1, 2, 4, 64)] == [1, 1, 2, 2, 2]


def test_available_cpus_without_affinity(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert jobs.available_cpus() == 3
    assert jobs.job_threads(8) == 3


def test_run_job_sets_torch_threads_within_the_cpus():
    before = torch.get_num_threads()
    seen = []
    smk = SimpleNamespace(log=[], output=[], threads=4 * (os.cpu_count() or 1) + 4)
    try:
        jobs.run_job(smk, lambda s: seen.append(torch.get_num_threads()))
    finally:
        torch.set_num_threads(before)
    assert seen == [jobs.available_cpus()]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity (Linux)")
def test_a_job_pinned_to_one_cpu_gets_one_thread():
    """As under SLURM or taskset: the allocation, not the machine, bounds the threads."""
    code = textwrap.dedent("""
        import os, torch
        from types import SimpleNamespace
        from clipva.jobs import run_job
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        run_job(SimpleNamespace(log=[], output=[], threads=4), lambda s: print(torch.get_num_threads()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "1"


def test_rules_asking_for_more_cpus_than_any_node_has_are_named(monkeypatch):
    sinfo = SimpleNamespace(stdout="4\n8\n8\n", returncode=0)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or sinfo)
    assert jobs.node_cpus("gpu") == 8
    assert calls[-1][-2:] == ["-p", "gpu"]
    [line] = jobs.unschedulable({"extract_features": 16, "finetune": 8, "index": 1}, 8, "gpu")
    assert line.startswith("rule extract_features asks for 16 threads, but no node of partition gpu has more than 8")
    assert "set-threads: extract_features: 8" in line


def test_without_sinfo_nothing_is_checked(monkeypatch):
    def missing(cmd, **kw):
        raise FileNotFoundError(cmd[0])

    monkeypatch.setattr(subprocess, "run", missing)
    assert jobs.node_cpus() is None


# Snakemake's record of a job that SLURM ended (as the executor plugin reports it; from a loopback-cluster run)
ENDED = """Error in rule finetune:
    message: SLURM-job '16' failed, SLURM status is: 'TIMEOUT'. Detailed failure reason unavailable (status \
command is not 'sacct').For further error details see the cluster/cloud log and the log files of the involved rule(s).
    jobid: 7
    log: logs/runs/main/finetune.log (check log file(s) for error details)
    external_jobid: 16
Error in rule evaluate:
    message: None
    jobid: 9
Error in rule extract_features:
    message: SLURM-job '3' failed, SLURM status is: 'OUT_OF_MEMORY'. Reason: Step 0: OutOfMemory.
"""


def test_jobs_the_cluster_ended_are_named_with_what_to_raise():
    hints = jobs.cluster_endings(ENDED + ENDED)  # each said once
    assert hints == [
        "rule finetune: the cluster ended the job (TIMEOUT); it ran past its time limit: raise its `runtime` "
        "(minutes) in the profile, under set-resources: finetune:",
        "rule extract_features: the cluster ended the job (OUT_OF_MEMORY); it ran out of memory: raise its "
        "`mem_mb` in the profile, under set-resources: extract_features:",
    ]
    assert jobs.cluster_endings("Error in rule evaluate:\n    message: None\n") == []
