"""The loopback cluster's own housekeeping (no cluster is started here)."""

import shutil
import subprocess
import time

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
