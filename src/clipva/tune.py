"""Search of the head and fine-tuning settings with Optuna (TPE sampler, pruning of hopeless trials).

A trial samples the settings named in the search space, fine-tunes a fresh head on cached features in
each of `folds` folds of the training and validation clips (the test split is never read) and is scored by
the mean of the folds' best validation mean CCC; after each fold it reports the running mean, so the pruner
stops trials that are already among the worst quarter. The first trial is the run's own settings, the point
every other trial is compared with. The study lives in an Optuna journal file, so a killed
search resumes where it stopped and several jobs (on one machine or on cluster nodes sharing the folder) add
trials to the same study; the study's name is a hash of the search, so a changed space starts afresh.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from clipva.atomic import atomic_path, process_alive, write_csv, write_text
from clipva.errors import ClipvaError
from clipva.sequences import load_splits
from clipva.splits import read_clips
from clipva.store import ClipFeatures
from clipva.training import finetune, head_config, new_head, pretrain

log = logging.getLogger(__name__)
SECTIONS = ("head", "finetune")
# every trial fine-tunes a fresh head, so a trained head to start from would be ignored; the features every
# trial reads are loaded once, so their centring is the run's (compare runs with and without it by `cv`)
FIXED = ("finetune.start_from", "head.centre")
FINISHED = ("COMPLETE", "PRUNED")
START = "start"  # user attribute of the trial of the run's own settings


def _optuna():
    import optuna  # imported by the tuning jobs only

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def check_space(space: dict, settings: dict) -> None:
    """Every key of `space` ("section.key") names a setting of the head or fine-tuning sections."""
    if not space:
        raise ClipvaError("tune.space is empty: name at least one head.* or finetune.* setting to search")
    for name, dist in space.items():
        section, _, key = name.partition(".")
        if section not in SECTIONS or key not in settings.get(section, {}) or name in FIXED:
            known = ", ".join(f"{s}.{k}" for s in SECTIONS for k in settings.get(s, {}) if f"{s}.{k}" not in FIXED)
            raise ClipvaError(f"tune.space: {name!r} is not a setting that tuning can change (one of {known})")
        if "choices" not in dist and not dist["low"] < dist["high"]:
            raise ClipvaError(f"tune.space.{name}: low ({dist['low']}) must be below high ({dist['high']})")
        if dist.get("log") and "choices" not in dist and dist["low"] <= 0:
            raise ClipvaError(f"tune.space.{name}: a log scale needs low > 0, got {dist['low']}")


def suggest(trial, space: dict) -> dict:
    """The trial's settings as {section: {key: value}}: choices, integers (both bounds integers) or floats."""
    out: dict = {}
    for name, dist in space.items():
        section, _, key = name.partition(".")
        if "choices" in dist:
            value = trial.suggest_categorical(name, list(dist["choices"]))
        elif isinstance(dist["low"], int) and isinstance(dist["high"], int):
            value = trial.suggest_int(name, dist["low"], dist["high"], log=bool(dist.get("log")))
        else:
            value = trial.suggest_float(name, float(dist["low"]), float(dist["high"]), log=bool(dist.get("log")))
        out.setdefault(section, {})[key] = value
    return out


def start_params(space: dict, settings: dict) -> dict:
    """The trial parameters of the settings a search starts from: each searched setting's own value, where the
    space holds it (one outside its range or choices is left to the sampler)."""
    out = {}
    for name, dist in space.items():
        section, _, key = name.partition(".")
        value = settings[section][key]
        inside = value in dist["choices"] if "choices" in dist else dist["low"] <= value <= dist["high"]
        if inside:
            out[name] = value
    return out


def tuning_folds(clips: pd.DataFrame, folds: int) -> list[pd.Series]:
    """Fold masks over the training and validation clips: by actor where there are at least `folds` actors
    (no actor in two folds), else by clip. Deterministic."""
    pool = clips[clips["split"].isin(["train", "val"]) & (clips["n_labeled"] > 0)]
    actors = sorted(pool["actor"].unique())
    if len(actors) >= folds:
        fold_of = {a: i % folds for i, a in enumerate(actors)}
        assign = pool["actor"].map(fold_of)
    else:
        assign = pd.Series(np.arange(len(pool)) % folds, index=pool.index)
    if len(pool) < folds:
        raise ClipvaError(
            f"tune.folds: {folds} folds need at least {folds} labeled training and validation "
            f"clips, the split has {len(pool)}"
        )
    return [pool["clip_id"][assign == k] for k in range(folds)]


def fold_scores(
    masks: list[pd.Series],
    features: dict[str, ClipFeatures],
    head: dict,
    finetune_cfg: dict,
    pretrain_cfg: dict | None = None,
    text_emb: np.ndarray | None = None,
):
    """Each fold's best validation mean CCC, fold by fold (a generator, so that a search can prune between
    folds): a head with the `head` settings fine-tuned (`finetune_cfg`) on the other folds' clips. The head
    starts fresh, whitened by those clips, or, with `pretrain_cfg` of more than 0 epochs, pretrained on those
    clips alone (with the prompts' `text_emb`), as the run's own pretraining job would on its training split."""
    pool = [c for c in pd.concat(masks) if c in features]
    arch, window = head_config(head, features[pool[0]].features.shape[1])
    for val_ids in masks:
        val_set = set(val_ids)
        train = [features[c] for c in pool if c not in val_set]
        val = [features[c] for c in val_ids if c in features]
        if pretrain_cfg and pretrain_cfg["epochs"] > 0:
            model = pretrain(train, arch, window, copy.deepcopy(pretrain_cfg), text_emb)[0]
        else:
            torch.manual_seed(finetune_cfg["seed"])
            model = new_head(arch, train)
        _, _, best = finetune(train, val, model, window, copy.deepcopy(finetune_cfg))
        yield float(best["val_mean_ccc"])


def selection_files(features: str, clips: str, text: str, settings: dict, folds: int, out: str) -> None:
    """A run's selection score on files (`cv.select`): tune's objective for the run's own settings, i.e. the
    mean over `folds` folds by actor of the training and validation clips of `clips` of the fine-tuned
    head's best validation mean CCC; the test split is never read. A run with pretraining (``pretrain.epochs``
    above 0) pretrains in each fold on that fold's training clips (prompts' embeddings `text`), so that no
    label of a fold's validation clips reaches its head. Written to `out` as JSON with each fold's score."""
    data = load_splits(features, clips, ("train", "val"), settings["head"].get("centre", "none"))
    loaded = {c.clip_id: c for c in data["train"] + data["val"]}
    masks = tuning_folds(read_clips(clips), folds)
    pretraining = settings["pretrain"]["epochs"] > 0
    text_emb = np.load(text)["embeddings"] if pretraining else None
    scores = list(fold_scores(masks, loaded, settings["head"], settings["finetune"], settings["pretrain"], text_emb))
    log.info("selection score %.4f (folds %s)", np.mean(scores), ", ".join(f"{s:.4f}" for s in scores))
    record = {"mean_ccc": float(np.mean(scores)), "folds": scores, "pretrained": pretraining}
    write_text(out, json.dumps(record, indent=1))


def search_key(tune: dict, settings: dict, features: str | Path, clips: str | Path) -> dict:
    """What identifies a search: its space and folds, the settings it starts from, and the data (the store's
    size and time, the split's bytes), so that another search or other data opens another study."""
    stat = os.stat(features)
    return {
        "space": tune["space"],
        "folds": tune["folds"],
        "settings": settings,
        "features": [stat.st_size, stat.st_mtime_ns],
        "clips": hashlib.sha256(Path(clips).read_bytes()).hexdigest(),
    }


def study_name(key: dict) -> str:
    return "clipva-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def open_study(journal: str | Path, name: str):
    """The study `name` in the journal file, created on first use (search() gives it its sampler, seeded by
    the trials it already holds)."""
    optuna = _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(journal).parent.mkdir(parents=True, exist_ok=True)
    # Optuna's lock is a symbolic link to the journal path as given. A process killed while writing leaves
    # it behind; the next one takes it over after a grace period, but only if the link resolves: relative to
    # the link's own folder, a relative path does not, and the next search then waits for ever at full CPU.
    storage = JournalStorage(JournalFileBackend(str(Path(journal).resolve())))
    return optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        pruner=_hopeless_pruner(optuna),
    )


def _hopeless_pruner(optuna, percentile: float = 25.0, startup: int = 5, first_step: int = 1):
    """Prunes a trial whose running mean over the folds so far is below the `percentile` of the running means
    that the complete trials had after as many folds, from the second fold on (`first_step`) and once
    `startup` trials are complete. One fold says little: on the demo the first fold ranks the settings
    against the other folds. Optuna's percentile and median pruners compare the best value a trial
    reported at any step, which for a running mean over folds is mostly the first fold's."""

    class HopelessPruner(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            step = trial.last_step
            if step is None or step < first_step:
                return False
            complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            others = [t.intermediate_values[step] for t in complete if step in t.intermediate_values]
            if len(complete) < startup or not others:
                return False
            return trial.intermediate_values[step] < np.percentile(others, percentile)

    return HopelessPruner()


def fail_abandoned_trials(study) -> int:
    """Trials left running by a process of this machine that no longer exists (a killed search) are marked
    failed, so that neither the sampler nor the summary counts them. Returns how many."""
    optuna = _optuna()
    host, n = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") == host and "pid" in attrs and not process_alive(attrs["pid"]):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            n += 1
    return n


def search(
    clips: pd.DataFrame,
    features: dict[str, ClipFeatures],
    settings: dict,
    space: dict,
    trials: int,
    folds: int,
    journal: str | Path,
    key: dict,
    seed: int = 0,
) -> int:
    """Add trials to the study of `key` (search_key) until it holds `trials` finished ones (complete or pruned).
    `settings` holds the head (with window and stride) and finetune sections; `features` maps clip id -> its
    cached features; `seed` seeds this job's sampler (give each concurrent job its own).
    Returns the number of trials this call ran."""
    optuna = _optuna()
    check_space(space, settings)
    masks = tuning_folds(clips, folds)
    study = open_study(journal, study_name(key))
    if n := fail_abandoned_trials(study):
        log.info("tune: %d trials of a killed search marked failed", n)
    # a resumed search must not replay the random start of the first one
    study.sampler = optuna.samplers.TPESampler(seed=seed * 100_003 + len(study.trials), n_startup_trials=5)
    mine: list[int] = []  # the numbers of the trials this job runs

    owner = {"host": socket.gethostname(), "pid": os.getpid()}
    if not study.trials:
        # The first trial is the run's own settings, so the search says whether it beats them (and the best
        # trial is never worse than the start on these folds). A job that opens the study after another
        # queued it does not queue it again (two opening it in the same instant may both run it).
        study.enqueue_trial(start_params(space, settings), user_attrs={**owner, START: True}, skip_if_exists=True)

    def objective(trial) -> float:
        mine.append(trial.number)
        for name, value in owner.items():  # the trial may be one another job queued
            trial.set_user_attr(name, value)
        chosen = suggest(trial, space)
        head = {**settings["head"], **chosen.get("head", {})}
        ft_cfg = {**settings["finetune"], **chosen.get("finetune", {})}
        scores = []
        for k, score in enumerate(fold_scores(masks, features, head, ft_cfg)):
            scores.append(score)
            trial.report(float(np.mean(scores)), k)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(scores))

    states = tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED)
    done = len(study.get_trials(deepcopy=False, states=states))
    ran, failed = 0, 0
    # A trial whose score is not a number ends FAIL (Optuna's rule) and counts against this job's budget, so
    # that a search whose settings all fail ends instead of adding trials for ever.
    while done + failed < trials:
        # The trial is queued with its owner in the one journal entry that creates it: a search killed before
        # the objective could record the owner would otherwise leave a trial that no later one can tell is
        # abandoned. A queued trial that a killed search left behind is run first, so none is left waiting.
        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            study.enqueue_trial({}, user_attrs=owner)
        study.optimize(objective, n_trials=1, catch=())
        ran += 1
        everyone = study.get_trials(deepcopy=False)
        failed = sum(t.state == optuna.trial.TrialState.FAIL for t in everyone if t.number in mine)
        done = sum(t.state in states for t in everyone)  # other jobs add trials too
    if failed:
        log.warning("tune: %d trials run here had no score (failed); see the warnings above", failed)
    log.info("tune: %d trials run here; the study holds %d finished trials", ran, done)
    return ran


def summarise(journal: str | Path, name: str) -> tuple[dict, pd.DataFrame, object]:
    """(best settings of study `name` as config overrides {section: {key: value}}, its trials table, the study)."""
    study = open_study(journal, name)
    table = study.trials_dataframe(attrs=("number", "state", "value", "params", "duration"))
    if not any(t.state.name == "COMPLETE" for t in study.trials):
        raise ClipvaError(f"tune: no trial of {journal} completed; see the tune jobs' logs")
    best: dict = {}
    for name, value in study.best_trial.params.items():
        section, _, key = name.partition(".")
        best.setdefault(section, {})[key] = value
    return best, table, study


def plot_study(study, history_png: str | Path, importance_png: str | Path) -> None:
    """Optuna's optimisation history and parameter importances (matplotlib), each into its own file."""
    import warnings

    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        for path, plot in ((history_png, ovm.plot_optimization_history), (importance_png, _importance)):
            fig = plot(study).figure
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
            plt.close(fig)  # optuna draws through pyplot, which keeps every figure until it is closed


def _importance(study):
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as ovm

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) < 2 or not complete[0].params:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(5, 2)).add_subplot()
        ax.text(0.5, 0.5, "importances need two or more complete trials", ha="center")
        ax.set_axis_off()
        return ax
    return ovm.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator())


def worker_files(features: str, clips: str, tune: dict, settings: dict, journal: str, worker: int, out: str) -> None:
    """One search job on files: the training and validation clips of `clips` from the store `features`, trials
    added to the study in `journal` (`search`) with a sampler seeded by ``tune.seed`` and the `worker` number;
    `out` records which study it searched."""
    data = load_splits(features, clips, ("train", "val"), settings["head"].get("centre", "none"))
    loaded = {c.clip_id: c for c in data["train"] + data["val"]}
    table = read_clips(clips)
    key = search_key(tune, settings, features, clips)
    seed = tune["seed"] + worker
    ran = search(table, loaded, settings, tune["space"], tune["trials"], tune["folds"], journal, key, seed)
    write_text(out, json.dumps({"study": study_name(key), "trials_run": ran}))


def summary_files(worker_records: list[str], journal: str, folds: int, out: dict[str, str]) -> None:
    """The search's results from the workers' records: `out`'s ``best`` (a config file of the best trial's
    settings), ``trials`` (CSV), ``history`` and ``importance`` (PNG plots)."""
    studies = {json.loads(Path(path).read_text())["study"] for path in worker_records}
    if len(studies) != 1:
        raise ClipvaError(f"tune: the workers searched different studies {sorted(studies)}; run the search again")
    best, table, study = summarise(journal, studies.pop())
    start = [t for t in study.trials if t.user_attrs.get(START) and t.state.name == "COMPLETE"]
    against = f" The run's own settings (trial {start[0].number}): {start[0].value:.4f}." if start else ""
    header = (
        f"# The best of {len(table)} trials of the search (trial {study.best_trial.number}): mean validation CCC "
        f"{study.best_value:.4f} over {folds} folds of the training and validation clips.{against}\n"
        f"# Use it as a config file: --configfile {out['best']}\n"
    )
    write_text(out["best"], header + yaml.safe_dump(best, sort_keys=True))
    write_csv(out["trials"], table)
    plot_study(study, out["history"], out["importance"])
    log.info("tune: best trial %d, %.4f: %s", study.best_trial.number, study.best_value, best)
