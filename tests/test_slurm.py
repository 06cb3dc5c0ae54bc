"""The workflow on a real one-node SLURM cluster on loopback, through profiles/slurm.

Starts munged, slurmctld and slurmd from Debian's packages (installed here if missing; needs root), with a
fake GPU declared through gres, runs the tiny demo with extraction in 2 shards through the profile, checks
the controller's record of the jobs and that the result equals a local run's, and stops every daemon it
started by PID. See shared/reference/slurm-on-loopback.md for the traps this avoids.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, SNAKEMAKE, run_snakemake, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
CONF = Path("/etc/slurm/slurm.conf")


def _sh(*cmd, timeout=120, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check, **kw)


def _ensure_packages() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and this machine cannot install it (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if _sh(*install, timeout=300, check=False, env=env).returncode != 0:
        _sh("apt-get", "update", "-q", timeout=300, env=env)
        _sh(*install, timeout=300, env=env)


def _wait(predicate, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {seconds} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("a SLURM cluster on loopback needs root (slurm.conf lives in /etc/slurm)")
    _ensure_packages()
    tmp = tmp_path_factory.mktemp("slurm")
    backup = CONF.read_bytes() if CONF.exists() else None
    gres = CONF.with_name("gres.conf")
    gres_backup = gres.read_bytes() if gres.exists() else None
    procs: list[subprocess.Popen] = []
    try:
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        _sh("install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", "/run/munge")
        procs.append(subprocess.Popen(["runuser", "-u", "munge", "--", "munged", "--foreground", "--force"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        _wait(lambda: Path("/run/munge/munge.socket.2").exists(), 20, "munged did not start")
        node_line = _sh("slurmd", "-C").stdout.splitlines()[0]
        node = node_line.split()[0].split("=")[1]
        for d in ("state", "spool", "log"):
            (tmp / d).mkdir()
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text(f"""ClusterName=clipva-test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
ReturnToService=2
GresTypes=gpu
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/log/slurmctld.log
SlurmdLogFile={tmp}/log/slurmd.log
SlurmctldDebug=info
{node_line} NodeAddr=127.0.0.1 Gres=gpu:1 State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
        gres.write_text(f"NodeName={node} Name=gpu File=/dev/null\n")
        procs.append(subprocess.Popen(["slurmctld", "-D", "-i"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["slurmd", "-D"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: "idle" in _sh("sinfo", "-h", "-o", "%T", check=False, timeout=10).stdout, 60,
              "the SLURM node did not become idle")  # fmt: skip
        yield {"log": tmp / "log" / "slurmctld.log"}
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        for path, content in ((CONF, backup), (gres, gres_backup)):
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)


def test_workflow_through_the_slurm_profile_equals_a_local_run(cluster, tmp_path):
    overrides = {"features": {"shards": 2}}
    remote, local = tmp_path / "slurm", tmp_path / "local"
    remote.mkdir()
    local.mkdir()
    config = write_config(remote, overrides)
    cmd = ["timeout", "-k", "20", "900", SNAKEMAKE, "--profile", str(REPO / "profiles/slurm"),
           "-s", str(REPO / "Snakefile"), "-d", str(remote), "--jobs", "4",
           "--slurm-init-seconds-before-status-checks", "1", "--set-threads", "extract_features=2",
           "--configfile", str(config)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=960)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    # the controller's record: every job went through sbatch, the extraction as two jobs, GPU rules with a gpu
    jobs = _sh("scontrol", "show", "jobs", "-o").stdout.splitlines()
    rules = [line.split("Comment=")[1].split()[0] for line in jobs if "Comment=rule_" in line]
    assert sum(r.startswith("rule_extract_features") for r in rules) == 2
    assert any(r.startswith("rule_finetune") for r in rules)
    assert all("JobState=COMPLETED" in line for line in jobs if "Comment=rule_" in line)
    gpu_jobs = [line for line in jobs if "Comment=rule_finetune" in line]
    assert all("gpu" in line for line in gpu_jobs)
    assert "_slurm_rpc_submit_batch_job" in cluster["log"].read_text()

    run_snakemake(local, overrides=overrides)
    a = pd.read_csv(remote / "results/submission.csv", dtype={"clip_id": str})
    b = pd.read_csv(local / "results/submission.csv", dtype={"clip_id": str})
    pd.testing.assert_frame_equal(a, b)
