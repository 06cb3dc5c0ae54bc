import copy
import functools
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# Jobs run the clipva next to this Snakefile (also in a conda env or on a cluster node that lacks the
# editable install), and code_version() hashes exactly that code.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
)

from clipva import provenance
from clipva.errors import ConfigError
from clipva.jobs import cluster_endings, node_cpus, unschedulable
from clipva.settings import check_config

try:  # what the schema cannot check (it lets NaN through)
    check_config(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

# torch's OpenMP threads spin while waiting; on a busy or shared machine that stalls every parallel region
# (benchmarks/README.md: a 60-clip build 109 s -> 65 s with PASSIVE). Jobs inherit it; a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def say_cluster_endings(logs):
    """After a failed run: for each job the cluster ended (time limit, memory, preemption), which rule, what
    ran out and how to change it, from Snakemake's log."""
    for path in [logs] if isinstance(logs, (str, Path)) else logs or []:
        if path and Path(path).is_file():
            for line in cluster_endings(Path(path).read_text(errors="replace")):
                print(line, file=sys.stderr)


def check_cluster_requests():
    """Before submitting to SLURM: stop, naming the rule, if a job asks for more CPUs than any node has."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    # partition (None: the default) -> rule -> the most threads one of its jobs asks for
    threads = {}
    for job in workflow.dag.needrun_jobs():
        rules = threads.setdefault(job.resources.get("slurm_partition"), {})
        rules[job.rule.name] = max(rules.get(job.rule.name, 0), job.threads)
    for partition, asked in threads.items():
        cpus = node_cpus(partition)
        problems = unschedulable(asked, cpus, partition) if cpus is not None else []
        if problems:
            raise WorkflowError("\n".join(problems))


RUN = config["run"]
RUN_DIR = f"results/runs/{RUN}"
DEMO_ROOT = "results/demo/afew-va"
FORMAT = config["dataset"]["format"]
AFFWILD2_DEMO = "results/demo/affwild2"  # the synthetic data set in Aff-Wild2's layout (root "demo")
VIDEO_TABLE = "results/index/videos.csv"  # Aff-Wild2: every video's set and frame count
VIDEOS_ROOT = "results/videos/afew-va"  # annotated videos (dataset.format: videos) in AFEW-VA layout
FRAMES = "results/index/frames.csv"
# face_crop.method detector: the frames with the boxes a detector finds, as `clipva predict` crops
DETECTED_FRAMES = "results/index/frames_detected.csv"
CROP_FRAMES = DETECTED_FRAMES if config["face_crop"]["method"] == "detector" else FRAMES
CLIPS = "results/index/clips.csv"
REPORT = "results/index/validation_report.txt"
N_SHARDS = config["features"]["shards"]
SHARD = f"results/features/shards/{{shard}}-of-{N_SHARDS}.h5"
FEATURES = "results/features/features.h5"
EXTRACTION_REPORT = "results/features/extraction_report.txt"  # frames extraction could not decode (skip)
# A run's results live in results/{exp}/: exp is runs/<run> (trained on the configured split) or
# cv/<run>/fold<k> (trained on fold k of the subject-independent cross-validation).
EXP = "results/{exp}"


wildcard_constraints:
    exp=r"runs/[A-Za-z0-9_.-]+|cv/[A-Za-z0-9_.-]+/fold[0-9]+",
    fold=r"[0-9]+",
    bins=r"[0-9]+",


def dataset_root():
    """The data set the index reads: the generated demo, or the configured folder."""
    root = config["dataset"]["root"]
    if root == "demo":
        return AFFWILD2_DEMO if FORMAT == "affwild2" else DEMO_ROOT
    return VIDEOS_ROOT if FORMAT == "videos" else user_root()


def test_list():
    """Aff-Wild2's test list: the configured file, the demo's own, or None."""
    given = config["split"]["test_list"]
    if given is not None:
        return str(Path(given).expanduser().resolve())
    if config["dataset"]["root"] == "demo" and FORMAT == "affwild2":
        return f"{AFFWILD2_DEMO}/test_set.txt"
    return None


def model_card_dataset():
    """What an exported model was trained on, in words (the folder's name, not its path on this machine)."""
    data = config["dataset"]
    layout = {"videos": "annotated videos", "affwild2": "Aff-Wild2 layout"}.get(
        data["format"], "AFEW-VA layout"
    )
    if data["root"] == "demo":
        return f"the clipva demo (synthetic faces in {layout})"
    return f"{Path(data['root']).name} ({layout})"


def model_card_split():
    split = config["split"]
    if split["method"] == "random":
        return f"random by clip, fractions {split['fractions']}, seed {split['seed']}"
    if split["method"] == "ids":
        return f"by clip id {split['ids']}"
    if split["method"] == "official":
        return f"official: Train_Set ({split['official_val']} of its videos validate), Validation_Set as test"
    return f"by actor, fold {split['fold']} of {split['folds']}"


def user_root():
    """The configured data folder (AFEW-VA layout, or annotated videos), resolved."""
    return str(Path(config["dataset"]["root"]).expanduser().resolve())


@functools.cache
def code_version(script):
    """params.code of the jobs that run `script` (the path as their script directive gives it): a hash of the
    script and of every clipva module it imports, directly or through other modules (found by
    clipva.provenance, no list to keep up). Editing one of them makes those jobs and their dependants stale.
    """
    path = Path(workflow.basedir, "workflow", "rules", script).resolve()
    return provenance.code_version(path, src=Path(SRC))


def merged(base, overrides):
    """`base` with the nested dict `overrides` merged in (a copy)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@functools.cache
def run_settings(run):
    """The configuration of one run: config.yaml's sections with the run's variant (config runs) merged in.
    Computed once per run (params of every job read it); callers must not modify it."""
    return merged(config, config["runs"].get(run, {}))


RUNS = list(dict.fromkeys([RUN, *config["runs"]]))
COMPARE = config["compare"] or RUNS
CV_RUNS = config["cv"]["runs"] or [RUN]
FOLDS = config["split"]["folds"]
for name in dict.fromkeys([*COMPARE, *CV_RUNS]):
    if name not in RUNS:
        raise WorkflowError(
            f"config: run {name!r} is neither `run` nor one of the variants under `runs` ({', '.join(RUNS)})"
        )
for name in config["runs"]:  # a variant must give a valid configuration once merged
    try:
        validate(
            copy.deepcopy(run_settings(name)),
            f"{workflow.basedir}/workflow/schemas/config.schema.yaml",
        )
    except WorkflowError as err:
        raise WorkflowError(f"config runs.{name}: {err}") from None


TUNE_JOURNAL = "results/tune/study.journal"  # Optuna's study: shared by the tune jobs, kept across runs
TUNE_SETTINGS = {k: run_settings(RUN)[k] for k in ("head", "finetune")}


def exp_run(wildcards):
    """The run of an experiment folder (runs/<run> or cv/<run>/fold<k>)."""
    return wildcards.exp.split("/")[1]


def exp_clips(wildcards):
    """The split an experiment trains and tests on: the configured one, or a cross-validation fold's."""
    if wildcards.exp.startswith("runs/"):
        return CLIPS
    return f"results/cv/folds/{wildcards.exp.split('/')[2]}.csv"


def start_head(wildcards):
    """The head fine-tuning starts from: the experiment's pretrained head, or with finetune.start_from the
    fine-tuned head of that run on the same split or fold."""
    start = run_settings(exp_run(wildcards))["finetune"]["start_from"]
    if start is None:
        return PRETRAINED.format(exp=wildcards.exp)
    kind, run = wildcards.exp.split("/")[:2]  # runs/<run> or cv/<run>/fold<k>
    return FINETUNED.format(
        exp=wildcards.exp.replace(f"{kind}/{run}", f"{kind}/{start}", 1)
    )


def exp_section(name):
    """A config section of the experiment's run, as a params function."""
    return lambda wildcards: run_settings(exp_run(wildcards))[name]


def is_lora(run):
    return run_settings(run)["training"]["backbone"] == "lora"


def check_start_from(run):
    """A run started from another's fine-tuned head: that run must exist and be a frozen one (a LoRA run's
    head fits its adapted features), the chain must end, the head settings must be equal (the head, its
    window included, is the other run's), and the run must not pretrain (fine-tuning would not begin from
    what its pretraining trained, and a LoRA run's pretrained adapters would change the start's features).
    """
    seen = [run]
    while (start := run_settings(seen[-1])["finetune"]["start_from"]) is not None:
        where = f"config runs.{seen[-1]}" if seen[-1] in config["runs"] else "config"
        if start not in RUNS:
            raise WorkflowError(
                f"{where}: finetune.start_from {start!r} is neither `run` nor one of the variants under "
                f"`runs` ({', '.join(RUNS)})"
            )
        if is_lora(start):
            raise WorkflowError(
                f"{where}: finetune.start_from {start!r} is a LoRA run, whose head fits the features of its "
                "adapters; start from a run with training.backbone: frozen"
            )
        if run_settings(seen[-1])["pretrain"]["epochs"] > 0:
            raise WorkflowError(
                f"{where}: finetune.start_from {start!r} starts fine-tuning from {start!r}'s head, so this run's "
                "pretraining would be unused (and a LoRA run's pretrained adapters would change the start); "
                "set pretrain.epochs: 0 here"
            )
        if start in seen:
            raise WorkflowError(
                f"{where}: finetune.start_from makes a loop: {' -> '.join([*seen, start])}"
            )
        ours, theirs = run_settings(seen[-1])["head"], run_settings(start)["head"]
        differ = sorted(k for k in {*ours, *theirs} if ours.get(k) != theirs.get(k))
        if differ:
            raise WorkflowError(
                f"{where}: finetune.start_from {start!r}: the head is {start!r}'s, but head settings differ "
                f"({', '.join(f'head.{k}' for k in differ)}); set them as in {start!r}"
            )
        seen.append(start)


def check_centre(run):
    """Centred features (head.centre: actor) are the store's frozen features minus each actor's mean; a LoRA
    run computes its features through its adapters at every step, and no such mean exists for them.
    """
    if is_lora(run) and run_settings(run)["head"]["centre"] != "none":
        where = f"config runs.{run}" if run in config["runs"] else "config"
        raise WorkflowError(
            f"{where}: head.centre: {run_settings(run)['head']['centre']} centres the cached frozen features, "
            "but this run trains LoRA adapters (training.backbone: lora); set head.centre: none, or use it "
            "with training.backbone: frozen"
        )


for name in RUNS:
    check_start_from(name)
    check_centre(name)


# the runs whose folds get a selection score (cv.select): it fine-tunes fresh heads on cached features, so
# neither a LoRA run nor a run started from another's head (finetune.start_from) can be scored so
CV_SELECT = (
    [
        r
        for r in CV_RUNS
        if not is_lora(r) and run_settings(r)["finetune"]["start_from"] is None
    ]
    if config["cv"]["select"]
    else []
)


def backbone_params(wildcards):
    """What the training rules depend on beyond their own section: with LoRA, the image tower and its crops."""
    run = exp_run(wildcards)
    if not is_lora(run):
        return {"backbone": "frozen"}
    settings = run_settings(run)
    return {
        "backbone": "lora",
        **{k: settings[k] for k in ("lora", "clip", "face_crop")},
    }


def gpu_job_threads(wildcards=None):
    """Threads of a job that feeds a GPU (extraction, LoRA training and evaluation, prediction), whose
    decoding workers follow its threads (features.workers, lora.num_workers: auto). Locally: every core
    Snakemake may use (GPU jobs run one at a time, profiles/default). On a cluster: 4, which the profile
    raises per rule (set-threads) to what a node has per GPU."""
    # a cluster job parses the workflow again on its node, in remote mode with the local executor
    local = workflow.local_exec and not workflow.remote_exec
    cores = workflow._cores if local else None
    return max(1, int(cores)) if cores else 4


def lora_threads(wildcards):
    """A LoRA run's training and evaluation feed the image tower; a frozen run's head needs 2 threads."""
    return gpu_job_threads() if is_lora(exp_run(wildcards)) else 2


def head_mem_mb(floor):
    """mem_mb of a job that holds every frame's features in memory (the whitening and the ridge fits stream
    over them above a size): about 1.3x the feature store at Aff-Wild2's scale plus the interpreter
    (benchmarks/README.md#aff-wild2-at-its-scale); 2x with a margin, and at least `floor`.
    """
    return lambda wildcards, input: max(floor, 1000 + 2 * int(input.size_mb))


def lora_gpu(wildcards):
    """A GPU for LoRA runs (the image tower trains); the frozen path's small head runs on CPUs."""
    return int(is_lora(exp_run(wildcards)))


def lora_inputs(stage):
    """Frames (and the previous stage's adapters) that a LoRA stage reads; nothing for a frozen run."""

    def inputs(wildcards):
        if not is_lora(exp_run(wildcards)):
            return {}
        found = {"frames": CROP_FRAMES}
        if stage:
            found["adapter"] = f"results/{wildcards.exp}/{stage}/adapter"
        return found

    return inputs


def text_embeddings(wildcards):
    """The CLIP text embeddings of the emotion prompts for the run's number of bins."""
    return f"results/features/text/{exp_section('pretrain')(wildcards)['bins']}bins.npz"


def plots_of(exp):
    return [f"results/{exp}/eval/plots/{name}.png" for name in PLOT_NAMES]


def video_files():
    """{name: path} of the configured videos (the file name without its suffix names the outputs)."""
    if not config["predict"]["videos"]:
        return {}
    from clipva.errors import ClipvaError
    from clipva.video import list_videos

    try:
        videos = list_videos(Path(config["predict"]["videos"]).expanduser().resolve())
    except ClipvaError as err:
        raise WorkflowError(f"config predict.videos: {err}") from None
    names = {}
    for video in videos:
        if video.stem in names:
            raise WorkflowError(
                f"config predict.videos: {video} and {names[video.stem]} would both write "
                f"results/predict/{video.stem}.csv"
            )
        names[video.stem] = str(video)
    return names


VIDEOS = video_files()


ABAW = "results/abaw"  # Aff-Wild2: the ABAW challenge's files (workflow/rules/abaw.smk)


def abaw_predictions(wildcards):
    """The run's predictions, which cover Validation_Set and the test list only with the official split."""
    if config["split"]["method"] != "official":
        raise WorkflowError(
            "abaw_submission needs split.method: official (Train_Set trains, Validation_Set is scored, the "
            f"test list is predicted); the config has {config['split']['method']!r}"
        )
    return f"{RUN_DIR}/eval/predictions.csv"
