"""What a default fine-tuning run costs now against the head and loss of before the temporal-model change
(issue #17: "a default fine-tuning run costs no more than twice today's").

Both run `clipva.training.finetune` unchanged on the same AFEW-VA-scale synthetic features (finetune_epoch.py's
600 training and 120 validation clips): *now* with config.yaml's head and finetune settings, *before* with the
head of before (linear readout, tanh output, no smoothing, whitening 1.0, no input dropout) and the mix loss.
Each is timed for a fixed number of epochs (early stopping off, so both do the same work), alternately over
rounds; the figures are medians. A run's cost is the set-up (the ridge start: fits, and the choice of ridge
strength and smoothing on validation, and with the kernel readout its correction's; then the starting
validation) plus the epochs, extrapolated to `finetune.epochs`:

    .venv/bin/python benchmarks/finetune_cost.py
    .venv/bin/python benchmarks/finetune_cost.py --clips 120 --rounds 3
    .venv/bin/python benchmarks/finetune_cost.py --variant readout=linear   # a head setting against the default

With --variant KEY=VALUE, *before* is config.yaml's head and *now* the same with that head setting changed.
"""

from __future__ import annotations

import argparse

import yaml
from common import as_the_workflow_runs, load_average, machine, median, repo_config
from finetune_epoch import cached_epochs, synthetic_clips

BEFORE = {
    "head": {"readout": "linear", "output": "tanh", "smoothing": False, "whitening_eps": 1.0, "input_dropout": 0.0},
    "finetune": {"loss": "mix"},
}


def main() -> None:
    as_the_workflow_runs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=600, help="training clips (validation: a fifth as many)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternated")
    parser.add_argument("--variant", metavar="KEY=VALUE", help="a head setting to compare with the default head")
    args = parser.parse_args()
    config = repo_config()
    settings = {
        "now": (config["head"], config["finetune"]),
        "before": ({**config["head"], **BEFORE["head"]}, {**config["finetune"], **BEFORE["finetune"]}),
    }
    if args.variant:
        key, _, value = args.variant.partition("=")
        if key not in config["head"]:
            parser.error(f"--variant: {key!r} is not a head setting (one of {', '.join(config['head'])})")
        changed = {**config["head"], key: yaml.safe_load(value)}
        settings = {"now": (changed, config["finetune"]), "before": settings["now"]}
        print(f"now: the default head with {key} = {value}; before: the default head", flush=True)
    train = synthetic_clips(args.clips, 512, seed=1, unlabeled=1)
    val = synthetic_clips(max(2, args.clips // 5), 512, seed=2)
    print(
        f"fine-tuning cost: {len(train)} training clips ({sum(len(c.features) for c in train)} frames), "
        f"{len(val)} validation clips; {args.epochs} epochs per run, {args.rounds} rounds",
        flush=True,
    )
    print(f"machine: {machine()}; {load_average()}", flush=True)
    times: dict[str, dict[str, list[float]]] = {name: {"setup": [], "epoch": []} for name in settings}
    for _ in range(args.rounds):
        for name, (head_cfg, ft_cfg) in settings.items():
            phases, setup, _ = cached_epochs(train, val, head_cfg, ft_cfg, args.epochs, profile=False)
            times[name]["setup"].append(setup)
            times[name]["epoch"].extend(p["train"] + p["validation"] for p in phases)
    epochs = config["finetune"]["epochs"]
    cost = {}
    for name, t in times.items():
        setup, epoch = median(t["setup"]), median(t["epoch"])
        cost[name] = setup + epochs * epoch
        print(f"{name:7s}: set-up {setup:6.2f} s, epoch {epoch:6.2f} s -> a run of {epochs} epochs {cost[name]:8.2f} s")
    print(f"ratio set-up now / before : {median(times['now']['setup']) / median(times['before']['setup']):.2f}")
    print(f"ratio epoch now / before  : {median(times['now']['epoch']) / median(times['before']['epoch']):.2f}")
    print(f"ratio run now / before    : {cost['now'] / cost['before']:.2f}  (target <= 2)")
    print(load_average())


if __name__ == "__main__":
    main()
