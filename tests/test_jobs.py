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
