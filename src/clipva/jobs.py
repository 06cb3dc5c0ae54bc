"""Running library code as a Snakemake job: logging to the rule's log, thread count, clean errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from clipva.errors import ClipvaError

log = logging.getLogger("clipva")


def setup_logging(log_path: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)  # fmt: skip


def run_job(smk, main: Callable[[object], None]) -> None:
    """Call main(smk) with logging set up; a ClipvaError ends the job with its message, not a traceback."""
    setup_logging(smk.log[0] if len(smk.log) else None)
    if "torch" in sys.modules:  # only jobs that compute with torch pay for importing it
        sys.modules["torch"].set_num_threads(max(1, int(smk.threads)))
    try:
        main(smk)
    except ClipvaError as err:
        log.error("%s", err)
        sys.exit(1)
