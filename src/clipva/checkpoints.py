"""Checkpoints of the temporal head, and resumable training state.

Everything is saved as tensors and plain values and loaded with ``weights_only=True``; files are written
under a temporary name and renamed, so a killed job never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from clipva.atomic import write_bytes
from clipva.head import HeadConfig, TemporalHead
from clipva.windows import Window


def atomic_save(obj: dict, path: str | Path) -> None:
    """torch.save, atomically. Serialised in memory first: torch's writer reports a full disk as an
    opaque RuntimeError, a plain file write as OSError(ENOSPC) naming the file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def save_head(path: str | Path, head: TemporalHead, window: Window, **extra) -> None:
    """The head's weights with its architecture and window (needed to rebuild and apply it)."""
    saved = {"head_config": asdict(head.cfg), "window": window.to_dict(), "state_dict": head.state_dict()}
    atomic_save({**saved, **extra}, path)


def load_head(path: str | Path, device: str | torch.device = "cpu") -> tuple[TemporalHead, dict]:
    """(the head, the checkpoint's content with its ``window`` as a Window)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    # heads saved before the encoder types, the smoothing and the linear output existed were tanh transformers
    cfg = {"type": "transformer", "smoothing": False, "output": "tanh", **ckpt["head_config"]}
    head = TemporalHead(HeadConfig(**cfg)).to(device)
    state = ckpt["state_dict"]
    if "log_sigma" not in state:
        state = {**state, "log_sigma": head.log_sigma.detach()}
    head.load_state_dict(state)
    return head, {**ckpt, "window": Window.from_dict(ckpt["window"])}


def fingerprint(config: dict, inputs: list[str]) -> str:
    """Identifies a training job: its settings and the exact input files (size and modification time)."""
    stamp = [(str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in inputs]
    return hashlib.sha256(json.dumps([config, stamp], sort_keys=True, default=str).encode()).hexdigest()


class ResumeState:
    """Training state saved after every completed epoch, beside (not inside) the rule's outputs.

    A state written for other settings or other inputs (another fingerprint) is ignored.
    """

    def __init__(self, path: str | Path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        return state if state.get("fingerprint") == self.fingerprint else None

    def save(self, state: dict) -> None:
        atomic_save({**state, "fingerprint": self.fingerprint}, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
