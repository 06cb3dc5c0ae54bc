"""The loopback cluster's own housekeeping (no cluster is started here)."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import slurm_loopback
from slurm_loopback import _slurm_conf, remove_stale_conf


def test_a_conf_left_by_a_killed_test_cluster_is_removed_unless_a_cluster_runs(tmp_path, monkeypatch):
    conf, gres = tmp_path / "slurm.conf", tmp_path / "gres.conf"
    monkeypatch.setattr(slurm_loopback, "CONF", conf)
    controller = {"running": True}
    monkeypatch.setattr(slurm_loopback, "controller_running", lambda: controller["running"])
    assert not remove_stale_conf()  # no conf at all
    conf.write_text(_slurm_conf("vm", "RealMemory=1000", tmp_path))
    gres.write_text("NodeName=vm Name=gpu File=/dev/null\n")
    assert not remove_stale_conf() and conf.exists() and gres.exists()  # its cluster may be the one running
    controller["running"] = False
    assert remove_stale_conf() and not conf.exists() and not gres.exists()
    conf.write_text("ClusterName=theirs\nSlurmctldHost=head\n")
    assert not remove_stale_conf() and conf.exists()  # a cluster that is not ours is left alone


def test_a_running_controller_is_seen(tmp_path):
    fake = tmp_path / "slurmctld"  # a process whose name is slurmctld (a copy of sleep)
    shutil.copy(shutil.which("sleep"), fake)
    proc = subprocess.Popen([str(fake), "30"])
    try:
        deadline = time.monotonic() + 10
        while not slurm_loopback.controller_running():
            assert time.monotonic() < deadline, "a running slurmctld was not seen"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()


def test_the_cluster_daemons_end_when_the_process_that_started_them_is_killed(tmp_path):
    """A test run killed mid-way must not leave slurmctld holding its ports for the next run's cluster."""
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from slurm_loopback import daemon; "
            "print(daemon(['sleep', '60']).pid, flush=True); time.sleep(60)",
        ],
        cwd=Path(slurm_loopback.__file__).parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    pid = int(starter.stdout.readline())
    assert _alive(pid)
    starter.kill()  # SIGKILL: no teardown runs
    starter.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, ended but not yet reaped by init, counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
