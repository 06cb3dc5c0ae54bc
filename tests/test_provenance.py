"""Cache keys that cannot drift: each rule's params.code hashes the clipva modules its script imports, found
from the imports themselves (clipva.provenance), so that editing a module reruns exactly the rules that run
it, and their dependants. Unit tests on a made-up package, and end to end on a copy of the workflow."""

import re
import shutil
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, copy_built, run_snakemake
from PIL import Image

from clipva.demo import make_demo
from clipva.provenance import code_version, import_closure
from clipva.video import write_video

RULES = REPO / "workflow" / "rules"


def _package(src: Path, modules: dict[str, str]) -> None:
    for name, text in modules.items():
        path = src / Path(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def package(tmp_path):
    """A made-up clipva in tmp_path/src and a script beside it; returns (script, src)."""
    src = tmp_path / "src"
    _package(
        src,
        {
            "clipva.__init__": '__version__ = "1"\n',
            "clipva.a": "import numpy\nfrom clipva.b import thing\n",
            "clipva.b": "def thing():\n    from clipva import c\n    return c\nthing = 1\n",
            "clipva.c": "from . import d\nfrom .sub.e import name\n",
            "clipva.d": "import clipva.f as f\n",
            "clipva.f": "try:\n    import clipva.i\nexcept ImportError:\n    pass\n",
            "clipva.sub.__init__": "from .. import g\n",
            "clipva.sub.e": "from ..h import *\nname = 1\n",
            "clipva.g": "",
            "clipva.h": "",
            "clipva.i": "",
            "clipva.unused": "import clipva.a\n",
        },
    )
    script = tmp_path / "script.py"
    script.write_text("import json\nfrom clipva.a import something\nfrom clipva import __version__\n")
    return script, src


def test_the_closure_follows_every_kind_of_import(package):
    script, src = package
    expected = [
        "clipva",
        "clipva.a",
        "clipva.b",
        "clipva.c",
        "clipva.d",
        "clipva.f",
        "clipva.g",
        "clipva.h",
        "clipva.i",
        "clipva.sub",
        "clipva.sub.e",
    ]
    assert import_closure(script, src) == expected  # not clipva.unused: nothing reaches it


def test_the_hash_changes_with_the_closure_and_only_with_it(package):
    script, src = package
    before = code_version(script, src)
    assert code_version(script, src) == before
    (src / "clipva/unused.py").write_text("# edited\n")
    assert code_version(script, src) == before
    for path in (src / "clipva/sub/e.py", src / "clipva/__init__.py", script):
        original = path.read_bytes()
        path.write_bytes(original + b"# edited\n")
        assert code_version(script, src) != before, path
        path.write_bytes(original)
        assert code_version(script, src) == before


def scripts_of_rules(rules: Path = RULES) -> dict[str, str]:
    """{rule: its script path as written} of every rule that runs a script; each such rule's params.code
    must be code_version of that same path."""
    found = {}
    for smk in sorted(rules.glob("*.smk")):
        # rules defined under an `if` (the Aff-Wild2 ones) are indented
        for block in re.split(r"(?m)^(?=[ ]*rule \w+:)", smk.read_text())[1:]:
            name = re.match(r"\s*rule (\w+):", block).group(1)
            script = re.search(r'^\s+script:\n\s+"([^"]+)"', block, re.M)
            codes = re.findall(r"^\s+code=(.*),$", block, re.M)
            if script is None:
                assert not codes, name
                continue
            assert codes == [f'code_version("{script.group(1)}")'], name
            found[name] = script.group(1)
    return found


def test_every_rule_with_a_script_hashes_that_script():
    scripts = scripts_of_rules()
    assert {Path(s).name for s in scripts.values()} == {p.name for p in (REPO / "workflow/scripts").glob("*.py")}
    assert "cv_split" in scripts and "resolved_config" in scripts
    assert "hashlib" not in (RULES / "common.smk").read_text()  # no module list, no hashing of its own


def test_the_prompts_are_not_encoded_with_the_training_code():
    closure = import_closure(REPO / "workflow/scripts/text_embeddings.py")
    assert "clipva.prompts" in closure and "clipva.training" not in closure


# --- end to end: every module of the copy edited in turn, and the dry run compared with the expectation

TARGETS = ("all", "cv", "compare", "predict", "tune", "results/videos/afew-va")
AGGREGATES = {"all", "cv", "compare", "predict", "tune"}  # rules without a script: planned when an input is remade
RUNS = {"pretrain", "finetune", "evaluate"}
# clipva.tune fine-tunes heads: the closure of finetune (selection_score: cv.select, set below)
TUNE = {"tune_worker", "tune_summary", "selection_score"}
EVERY_SCRIPT = set(scripts_of_rules())
AFFWILD2 = {"demo_affwild2", "index_affwild2", "abaw_submission"}  # in the DAG of dataset.format affwild2 only
OTHER_DAGS = AFFWILD2 | {"detect_faces"}  # and of face_crop.method detector
# The rules whose scripts import a module (directly or not), checked by hand against the imports.
DIRECT = {
    "windows": RUNS
    | TUNE
    | {"submission", "cv_summary", "compare_runs", "export_model", "predict_video", "predict_summary"},
    "demo": {"demo", "demo_affwild2"},  # the generator, whose renderer the Aff-Wild2 demo uses
    "affwild2": {"demo_affwild2", "index_affwild2", "abaw_submission"},
    "abaw": {"abaw_submission"},
    # feature_sources lazily; faces (the box columns) for prediction; the model folder (its path checks)
    "afew": RUNS
    | TUNE
    | AFFWILD2
    | {
        "demo",
        "detect_faces",
        "index",
        "split",
        "cv_split",
        "extract_features",
        "convert_videos",
        "export_model",
        "predict_video",
        "predict_summary",
    },
    "video": {"convert_videos", "predict_video", "predict_summary"},  # predict imports it in a function
    "training": {"pretrain", "finetune"} | TUNE,  # not text_embeddings: the prompts are in clipva.prompts
    "prompts": {"text_embeddings", "pretrain", "finetune"} | TUNE,
    "lora": RUNS | TUNE | {"predict_video", "predict_summary"},  # frozen runs too: their scripts import it
    "store": RUNS
    | TUNE
    | {
        "extract_features",
        "merge_features",
        "submission",
        "cv_summary",
        "compare_runs",
        "predict_video",
        "predict_summary",
    },
    "atomic": EVERY_SCRIPT,
    "__init__": EVERY_SCRIPT,  # importing clipva.x runs clipva/__init__.py
    "cli": set(),
    "provenance": set(),
    "settings": set(),  # the Snakefile's own check of the config, in no job
    "model_folder": {"export_model", "predict_video", "predict_summary"},
    "evaluate_run": {"evaluate"},  # not the submission or summaries, which import clipva.evaluation
}
# ... and all that is planned then, dependants included.
PLANNED = {
    "training": RUNS
    | TUNE
    | {"plots", "submission", "cv_summary", "compare_runs", "export_model", "predict_video", "predict_summary"}
    | AGGREGATES,
    "demo": EVERY_SCRIPT - OTHER_DAGS - {"text_embeddings", "resolved_config", "convert_videos"} | AGGREGATES,
    "cli": set(),
}


def _planned(proc) -> set[str]:
    """Rules a dry run would execute (from its job-stats table)."""
    table = proc.stdout.split("Job stats:")[1].split("Reasons:")[0] if "Job stats:" in proc.stdout else ""
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+\s*$", table, re.M)} - {"total"}


def _dag(dot: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The jobs of a `snakemake --dag` graph: {job: rule} and {job: the jobs that use its output}."""
    rule_of = {m.group(1): m.group(2) for m in re.finditer(r'^\s*(\d+)\[label = "(\w+)', dot, re.M)}
    users = defaultdict(set)
    for m in re.finditer(r"^\s*(\d+) -> (\d+)", dot, re.M):
        users[m.group(1)].add(m.group(2))
    return rule_of, users


def _with_dependants(rules: set[str], rule_of: dict[str, str], users: dict[str, set[str]]) -> set[str]:
    todo = [job for job, rule in rule_of.items() if rule in rules]
    seen = set(todo)
    while todo:
        for user in users[todo.pop()] - seen:
            seen.add(user)
            todo.append(user)
    return {rule_of[job] for job in seen}


def _video(frames: list[Path], path: Path) -> int:
    write_video(path, [Image.open(p).convert("RGB") for p in frames], 10)
    return len(frames)


@pytest.mark.e2e
def test_editing_a_module_reruns_exactly_the_rules_whose_scripts_import_it(built, tmp_path):
    """Built once; then, in a copy of the workflow, each module gets a comment line and the dry run must plan
    the rules whose scripts import it and their dependants (in the job graph), nothing else. Two identical
    copies take half of the modules each, in parallel (dry runs take no lock)."""
    copies, work = [tmp_path / f"workflow-copy{k}" for k in range(2)], tmp_path / "work"
    for part in ("workflow", "src", "profiles", "envs"):
        shutil.copytree(REPO / part, copies[0] / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for part in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / part, copies[0] / part)
    shutil.copytree(copies[0], copies[1])  # the same bytes (and times), whatever is edited in REPO meanwhile
    copy_built(built, work)  # the main job done: the folds, tuning, videos and prediction are what is new
    # one video to predict on, and one annotated video: convert_videos reads the folder dataset.root names,
    # here work/demo (the index reads the generated demo, dataset.root "demo"), and is built as a target
    faces = tmp_path / "faces"
    make_demo(faces, n_clips=2, n_actors=2, min_frames=8, max_frames=10, seed=3)
    first, second = sorted(p for p in faces.iterdir() if p.is_dir())
    (work / "demo").mkdir()
    n = _video(sorted(first.glob("*.png")), work / "demo/annotated.mp4")
    pd.DataFrame({"frame": range(n), "valence": 1.0, "arousal": -2.0}).to_csv(work / "demo/annotated.csv", index=False)
    (work / "videos").mkdir()
    _video(sorted(second.glob("*.png")), work / "videos/own.mp4")
    overrides = {"split": {"folds": 3}, "predict": {"videos": str(work / "videos")}, "tune": {"trials": 2, "folds": 2}}
    overrides["cv"] = {"select": True}  # the selection scores of the folds are in the graph too

    def snakemake(copy: Path, *args: str):
        return run_snakemake(work, *args, *TARGETS, overrides=overrides, snakefile=copy / "Snakefile")

    snakemake(copies[0])
    assert all(_planned(snakemake(copy, "-n")) == set() for copy in copies)
    rule_of, users = _dag(snakemake(copies[0], "--dag", "dot").stdout)
    # every rule of an AFEW-VA run is in the graph, so is checked
    assert set(rule_of.values()) == EVERY_SCRIPT - OTHER_DAGS | AGGREGATES
    rules = copies[0] / "workflow/rules"
    scripts = {rule: rules / script for rule, script in scripts_of_rules(rules).items()}
    stems = sorted(p.stem for p in (copies[0] / "src/clipva").glob("*.py"))
    assert len(stems) >= 30 and set(stems) >= set(DIRECT)
    expected = {}
    for stem in stems:
        name = "clipva" if stem == "__init__" else f"clipva.{stem}"
        direct = {rule for rule, script in scripts.items() if name in import_closure(script, copies[0] / "src")}
        if stem in DIRECT:
            assert direct == DIRECT[stem], stem
        expected[stem] = _with_dependants(direct, rule_of, users)
        if stem in PLANNED:
            assert expected[stem] == PLANNED[stem], stem

    def planned_after_edits(copy: Path, stems: list[str]) -> dict[str, set[str]]:
        planned = {}
        for stem in stems:
            path = copy / f"src/clipva/{stem}.py"
            original = path.read_bytes()
            path.write_bytes(original + b"\n# an edit\n")
            try:
                planned[stem] = _planned(snakemake(copy, "-n"))
            finally:
                path.write_bytes(original)
        return planned

    with ThreadPoolExecutor(len(copies)) as pool:
        halves = pool.map(planned_after_edits, copies, [stems[k :: len(copies)] for k in range(len(copies))])
        planned = {stem: rules for half in halves for stem, rules in half.items()}
    assert planned.keys() == expected.keys()
    wrong = {
        stem: {"missing": expected[stem] - planned[stem], "extra": planned[stem] - expected[stem]}
        for stem in stems
        if planned[stem] != expected[stem]
    }
    assert not wrong
    assert all(_planned(snakemake(copy, "-n")) == set() for copy in copies)  # every file restored
