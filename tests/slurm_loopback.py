"""A real one-node SLURM cluster on loopback, from Debian's packages (needs root).

Used by tests/test_slurm.py, and by hand to run the README's cluster commands as written::

    sudo .venv/bin/python tests/slurm_loopback.py     # starts the cluster; Ctrl-C (or SIGTERM) stops it

The node declares more CPUs than the machine has (`SlurmdParameters=config_overrides`), so the rules'
thread counts (extraction asks for 4) schedule as they would on a real node, and one fake GPU through gres.
See shared/reference/slurm-on-loopback.md for the traps this avoids.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
CONF = Path("/etc/slurm/slurm.conf")
CLUSTER = "clipva-test"
NODE_CPUS = 8


class Unavailable(RuntimeError):
    """This machine cannot run the cluster (no root, or SLURM cannot be installed)."""


def _sh(*cmd, timeout=120, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check, **kw)


def ensure_packages() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("SLURM is not installed and this machine cannot install it (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if _sh(*install, timeout=300, check=False, env=env).returncode != 0:
        _sh("apt-get", "update", "-q", timeout=300, env=env)
        _sh(*install, timeout=300, env=env)


def _die_with_parent() -> None:
    """In a daemon's child process before exec: SIGTERM when the process that started it dies, however it
    dies. A test run killed mid-way (SIGKILL, a timeout) would otherwise leave slurmctld holding its ports,
    and the next test cluster could not start ("Address already in use")."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG (Linux)


def daemon(cmd: list[str]) -> subprocess.Popen:
    """A daemon of the test cluster, quiet, that ends with the process that started it."""
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)


def _wait(predicate, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {seconds} s")


def _slurm_conf(node: str, memory: str, tmp: Path) -> str:
    return f"""ClusterName={CLUSTER}
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmdParameters=config_overrides
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
MinJobAge=3600
NodeName={node} CPUs={NODE_CPUS} {memory} NodeAddr=127.0.0.1 Gres=gpu:1 State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def controller_running() -> bool:
    """Whether a slurmctld runs on this machine (read from /proc: no pgrep needed)."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "slurmctld":
                return True
        except OSError:  # the process ended while we looked
            continue
    return False


def remove_stale_conf() -> bool:
    """Remove the slurm.conf and gres.conf of a test cluster that was killed before it could restore them,
    unless a cluster runs. With a slurm.conf whose controller is down, `scontrol` waits about 9 s for it, and
    snakemake's SLURM executor plugin runs `scontrol show config` when it is imported: every snakemake command
    on the machine, local ones too, would start 9 s late. True if removed."""
    try:
        ours = f"ClusterName={CLUSTER}\n" in CONF.read_text(errors="replace")
    except OSError:
        return False
    if not ours or controller_running():
        return False
    try:
        for path in (CONF, CONF.with_name("gres.conf")):
            path.unlink(missing_ok=True)
    except PermissionError:
        return False
    return True


@contextmanager
def loopback_cluster(tmp: Path):
    """Start munged, slurmctld and slurmd; yield the controller's log path; stop them by PID and restore
    /etc/slurm on the way out."""
    if os.geteuid() != 0:
        raise Unavailable("a SLURM cluster on loopback needs root (slurm.conf lives in /etc/slurm)")
    ensure_packages()
    remove_stale_conf()  # not a state to restore afterwards
    backups = {p: p.read_bytes() if p.exists() else None for p in (CONF, CONF.with_name("gres.conf"))}
    procs: list[subprocess.Popen] = []
    try:
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        _sh("install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", "/run/munge")
        procs.append(daemon(["runuser", "-u", "munge", "--", "munged", "--foreground", "--force"]))
        _wait(lambda: Path("/run/munge/munge.socket.2").exists(), 20, "munged did not start")
        fields = _sh("slurmd", "-C").stdout.split()
        node = fields[0].split("=")[1]
        memory = next(f for f in fields if f.startswith("RealMemory="))
        for d in ("state", "spool", "log"):
            (tmp / d).mkdir(parents=True, exist_ok=True)
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text(_slurm_conf(node, memory, tmp))
        CONF.with_name("gres.conf").write_text(f"NodeName={node} Name=gpu File=/dev/null\n")
        procs.append(daemon(["slurmctld", "-D", "-i"]))
        procs.append(daemon(["slurmd", "-D"]))
        _wait(
            lambda: "idle" in _sh("sinfo", "-h", "-o", "%T", check=False, timeout=10).stdout,
            60,
            "the SLURM node did not become idle",
        )
        yield tmp / "log" / "slurmctld.log"
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        for path, content in backups.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryDirectory(prefix="slurm-") as tmp, loopback_cluster(Path(tmp)) as log:
        print(f"SLURM is up (controller log: {log}); Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
