"""The library's one window on the workflow: running library code as a Snakemake job (logging to the rule's
log, thread count, clean errors), and where the workflow puts what a user asks for by name."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from clipva.atomic import WRITE_ERRORS
from clipva.errors import ClipvaError

log = logging.getLogger("clipva")
RUN_MODEL = "results/runs/{run}/model"  # the model folder the export_model rule writes for a run
PREDICTIONS = "results/predict"  # where `snakemake predict` writes a video's curves
DIRECTORY_STAMP = ".snakemake_timestamp"  # the empty file Snakemake leaves in a directory output


def run_model_dir(run: str) -> Path:
    return Path(RUN_MODEL.format(run=run))


def export_hint(run: str = "<run>") -> str:
    """How a workflow user makes (or remakes) a run's model folder."""
    return f"`snakemake {RUN_MODEL.format(run=run)}` writes it"


# How a cluster reports a job it ended (the SLURM executor plugin's "SLURM status is: '...'"), and what the user
# changes for each: the resource that ran out and where the profile sets it.
CLUSTER_ENDINGS = {
    "TIMEOUT": "ran past its time limit: raise its `runtime` (minutes) in the profile, under set-resources: {rule}:",
    "OUT_OF_MEMORY": "ran out of memory: raise its `mem_mb` in the profile, under set-resources: {rule}:",
    "CANCELLED": "was cancelled (scancel or preemption) and its retries ran out: run the same command again",
    "PREEMPTED": "was preempted and its retries ran out: run the same command again",
    "NODE_FAIL": "lost its node and its retries ran out: run the same command again",
}
_ERROR_IN_RULE = re.compile(r"^Error in rule (\S+?):?$")
_CLUSTER_STATUS = re.compile(r"SLURM status is: '([A-Z_]+)'")


def cluster_endings(log_text: str) -> list[str]:
    """One line per failed job of Snakemake's log that the cluster ended: the rule, what ran out and how to
    change it (finished steps are kept, fine-tuning resumes after its last epoch)."""
    found, rule = [], None
    for line in log_text.splitlines():
        line = line.strip()
        if match := _ERROR_IN_RULE.match(line):
            rule = match.group(1)
        elif rule and (match := _CLUSTER_STATUS.search(line)):
            ending = CLUSTER_ENDINGS.get(match.group(1))
            if ending:
                hint = f"rule {rule}: the cluster ended the job ({match.group(1)}); it {ending.format(rule=rule)}"
                if hint not in found:
                    found.append(hint)
            rule = None
    return found


def node_cpus(partition: str | None = None) -> int | None:
    """The most CPUs any node of the SLURM cluster (or of `partition`) has, from sinfo; None without sinfo."""
    cmd = ["sinfo", "-h", "-N", "-o", "%c"] + (["-p", partition] if partition else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    counts = [int(n) for n in re.findall(r"\d+", out)]
    return max(counts) if counts else None


def unschedulable(threads: dict[str, int], cpus: int, partition: str | None = None) -> list[str]:
    """One line per rule whose jobs ask for more `threads` than the largest node's `cpus`: SLURM accepts such
    a job and keeps it pending for ever (reason PartitionConfig)."""
    where = f"partition {partition}" if partition else "the cluster"
    return [
        f"rule {rule} asks for {n} threads, but no node of {where} has more than {cpus} CPUs, so SLURM would "
        f"keep it pending for ever; lower it in the profile (set-threads: {rule}: {cpus}) or use larger nodes"
        for rule, n in sorted(threads.items())
        if n > cpus
    ]


def setup_logging(log_path: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )


def write_error_message(err: OSError, outputs: list[str]) -> str | None:
    """One line for an output that cannot be written (disk full, read-only, no permission); None for
    other OS errors."""
    if err.errno not in WRITE_ERRORS:
        return None
    where = err.filename or ", ".join(outputs) or "an output"
    return (
        f"cannot write {where}: {os.strerror(err.errno)}; {WRITE_ERRORS[err.errno]} and run the same "
        "command again (inputs are untouched; no partial output is kept)"
    )


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (a SLURM or cgroup allocation, taskset), else the
    machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity on macOS and Windows
        return os.cpu_count() or 1


def job_threads(declared: int) -> int:
    """A job's threads: what Snakemake gave it, but at most the CPUs it can run on.

    Snakemake gives a job up to --cores threads, and --cores may exceed the machine (--cores 4 on 2 cores).
    torch's fp32 matrix multiplies (MKL) with more threads than cores collapse: ViT-B-32 encoded 1.0
    frame/s with 4 threads on 2 cores against 19.7 with 2 (bf16 through oneDNN was not slowed;
    benchmarks/extraction.py --threads)."""
    return max(1, min(int(declared), available_cpus()))


def run_job(smk, main: Callable[[object], None]) -> None:
    """Call main(smk) with logging set up; a ClipvaError, or an output that cannot be written, ends the job
    with one message; any other error is logged with its traceback (into the rule's log too)."""
    setup_logging(smk.log[0] if len(smk.log) else None)
    if "torch" in sys.modules:  # only jobs that compute with torch pay for importing it
        sys.modules["torch"].set_num_threads(job_threads(smk.threads))
    try:
        main(smk)
    except ClipvaError as err:
        log.error("%s", err)
        sys.exit(1)
    except OSError as err:
        message = write_error_message(err, list(smk.output))
        if message is None:
            log.exception("unexpected error")
            raise
        log.error("%s", message)
        sys.exit(1)
    except Exception:
        log.exception("unexpected error")
        raise
