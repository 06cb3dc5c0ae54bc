import hashlib
import importlib.util
import os
import sys
from pathlib import Path

# Jobs run the clipva next to this Snakefile (also in a conda env or on a cluster node that lacks the
# editable install), and code_version() hashes exactly that code.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
)

RUN = config["run"]
RUN_DIR = f"results/runs/{RUN}"
DEMO_ROOT = "results/demo/afew-va"
FRAMES = "results/index/frames.csv"
CLIPS = "results/index/clips.csv"
REPORT = "results/index/validation_report.txt"
N_SHARDS = config["features"]["shards"]
SHARD = f"results/features/shards/{{shard}}-of-{N_SHARDS}.h5"
FEATURES = "results/features/features.h5"
LORA = config["training"]["backbone"] == "lora"


def dataset_root():
    """The data set the index reads: the generated demo, or the configured folder."""
    root = config["dataset"]["root"]
    return DEMO_ROOT if root == "demo" else str(Path(root).expanduser().resolve())


def code_version(*modules):
    """A hash of the clipva modules that compute a job's results, for its params: editing them makes the job
    stale. (How outputs are written, clipva.atomic and clipva.jobs, does not change them and is left out.)
    """
    digest = hashlib.sha256()
    for module in modules:
        digest.update(
            Path(importlib.util.find_spec(f"clipva.{module}").origin).read_bytes()
        )
    return digest.hexdigest()[:12]


def section(*names):
    """The config sections a rule depends on, as its params (so editing another section never reruns it)."""
    return {name: config[name] for name in names}


def backbone_params():
    """What the training rules depend on beyond their own section: with LoRA, the image tower and its crops."""
    if not LORA:
        return {"backbone": "frozen"}
    return {"backbone": "lora", **section("lora", "clip", "face_crop")}


def adapter(stage):
    """The LoRA adapters a stage writes (peft format), or nothing for the frozen backbone."""
    return {"adapter": directory(f"{RUN_DIR}/{stage}/adapter")} if LORA else {}


def lora_inputs(stage):
    """Frames (and the previous stage's adapters) that a LoRA stage reads."""
    if not LORA:
        return {}
    inputs = {"frames": FRAMES}
    if stage:
        inputs["adapter"] = f"{RUN_DIR}/{stage}/adapter"
    return inputs
