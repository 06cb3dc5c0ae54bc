import hashlib
import importlib.util
from pathlib import Path

RUN = config["run"]
RUN_DIR = f"results/runs/{RUN}"
DEMO_ROOT = "results/demo/afew-va"
FRAMES = "results/index/frames.csv"
CLIPS = "results/index/clips.csv"
REPORT = "results/index/validation_report.txt"
N_SHARDS = config["features"]["shards"]
SHARD = "results/features/shards/{shard}-of-" + str(N_SHARDS) + ".h5"
FEATURES = "results/features/features.h5"


def dataset_root():
    """The data set the index reads: the generated demo, or the configured folder."""
    root = config["dataset"]["root"]
    return DEMO_ROOT if root == "demo" else str(Path(root).expanduser().resolve())


def code_version(*modules):
    """A hash of the clipva modules a rule runs: editing them reruns the rule (Snakemake sees params)."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(importlib.util.find_spec(f"clipva.{module}").origin).read_bytes())
    return digest.hexdigest()[:12]


def section(*names):
    """The config sections a rule depends on, as its params (so editing another section never reruns it)."""
    return {name: config[name] for name in names}
