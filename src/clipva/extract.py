"""CLIP feature extraction: decode and crop in DataLoader workers, encode in batches, stream to HDF5."""

from __future__ import annotations

import ctypes
import json
import logging
import time

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clipva import __version__
from clipva.afew import BOX_COLUMNS, read_frames
from clipva.crop import crop_face, crop_margin, load_rgb
from clipva.encoder import LoadedClip, encode_images, load_clip_from
from clipva.errors import BadInputError
from clipva.store import ClipFeatures, atomic_h5, write_features

log = logging.getLogger(__name__)
TRIM_EVERY = 32  # clips written between two returns of freed heap memory to the OS
try:
    _LIBC = ctypes.CDLL(None)
except (OSError, TypeError):  # platforms without a C library handle (Windows: no CDLL(None))
    _LIBC = None


def _malloc_trim() -> None:
    """Return the heap's free pages to the OS (glibc's malloc_trim; a no-op where there is none).

    Each clip written to HDF5 leaves small long-lived allocations between the encoder's large temporary
    buffers, so freed memory piles up in holes of the heap: without this, the resident size grows by ~0.35 MB
    per clip although that memory is free (clipva-tiny, 300 clips: 837 -> 983 MiB; heap in use +10 MiB,
    free +116 MiB; peak RSS 600 vs 60 clips 1.23x, with the trim 1.04x: benchmarks/extraction_memory.py)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


class FrameCrops(Dataset):
    """Frames of the index table -> (preprocessed face crop, row number, problem). Decoding happens in workers.

    A frame that cannot be decoded raises BadInputError naming it; with ``skip_bad`` it gives a blank image
    and the problem instead, and extract_features leaves that frame out of the store."""

    def __init__(self, frames: pd.DataFrame, preprocess, face_crop: dict, skip_bad: bool = False):
        self.paths = frames["path"].tolist()
        self.margin = crop_margin(face_crop)
        self.boxes = None if self.margin is None else frames[BOX_COLUMNS].to_numpy(dtype=np.float64)
        self.preprocess = preprocess
        self.skip_bad = skip_bad
        self._blank: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        try:
            image = load_rgb(self.paths[i])
        except BadInputError as err:
            if not self.skip_bad:
                raise
            if self._blank is None:
                self._blank = self.preprocess(Image.new("RGB", (8, 8)))
            return self._blank, i, str(err).removeprefix(f"{self.paths[i]}: ")
        if self.boxes is not None:
            image = crop_face(image, tuple(self.boxes[i]), self.margin)
        return self.preprocess(image), i, ""


def decode_workers(setting: int | str, threads: int, device: torch.device) -> int:
    """DataLoader workers for extraction: `setting`, or for ``auto`` what the job's `threads` allow.

    On a GPU the encoder leaves the CPU free and decoding is the bottleneck: every thread but the main one
    decodes. On CPU the encoder takes most of the time per frame: a quarter of the threads decode, at least
    2, which keeps the encoder fed without taking its cores (benchmarks/README.md has the profiles and
    throughput figures).
    """
    if setting != "auto":
        return int(setting)
    if device.type == "cuda":
        return max(1, threads - 1)
    return max(2, threads // 4)


def shard_clips(clip_ids: list[str], shards: int, shard: int) -> list[str]:
    """The clips of one shard: round-robin over the sorted clip ids, so shards are balanced and disjoint."""
    return sorted(clip_ids)[shard::shards]


SHARD_READ_ROWS = 1 << 17  # rows of frames.csv a shard job holds at once beyond its own


def shard_frames(frames_csv: str, shards: int, shard: int, rows: int = SHARD_READ_ROWS) -> pd.DataFrame:
    """The rows of the frames table of shard `shard` of `shards` (shard_clips of all its clip ids), as
    read_frames would give them, index included, read in pieces of `rows` rows: a shard job of a data set
    of millions of frames holds its own frames, not every shard's."""
    if shards == 1:
        return read_frames(frames_csv)
    ids: set[str] = set()
    for piece in read_frames(frames_csv, usecols=["clip_id"], chunksize=rows):
        ids.update(piece["clip_id"].dropna())
    mine = set(shard_clips(list(ids), shards, shard))
    pieces = [piece[piece["clip_id"].isin(mine)] for piece in read_frames(frames_csv, chunksize=rows)]
    return pd.concat(pieces) if pieces else read_frames(frames_csv)  # no rows: no pieces


def extract_features(
    frames: pd.DataFrame,
    out_path: str,
    encoder: LoadedClip,
    face_crop: dict,
    pretrained: str | None,
    batch_size: int = 64,
    num_workers: int = 2,
    progress: bool = True,
    on_bad_input: str = "error",
) -> dict:
    """Encode every frame of `frames` (the index table, sorted by clip and frame) into a store at out_path.

    Memory stays flat: only the clip being assembled is held. Returns a small summary (frames, seconds).
    A frame that cannot be decoded stops the extraction, naming the file; with ``on_bad_input='skip'`` it is
    left out of the store (a clip left without frames is left out whole) and listed in the store's
    ``skipped`` attribute (read it as FeatureStore.skipped).
    """
    frames = frames.sort_values(["clip_id", "frame"], kind="stable").reset_index(drop=True)
    dataset = FrameCrops(frames, encoder.preprocess, face_crop, skip_bad=on_bad_input == "skip")
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=encoder.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    clip_ids = frames["clip_id"].to_numpy()
    ends = np.flatnonzero(np.r_[clip_ids[1:] != clip_ids[:-1], True])  # last row of each clip
    start = time.perf_counter()
    with atomic_h5(out_path) as f:
        f.attrs.update(
            model=encoder.model_name,
            pretrained=str(pretrained),
            precision=encoder.precision,
            face_crop=json.dumps(face_crop, sort_keys=True),
            clipva_version=__version__,
            embed_dim=int(encoder.embed_dim),
        )
        f.create_group("clips")
        pending: list[np.ndarray] = []  # embeddings of rows first.. not yet written
        bad: dict[int, str] = {}  # row -> why it could not be decoded (skip mode)
        skipped: list[dict] = []
        next_end, first = 0, 0
        bar = tqdm(total=len(frames), unit="frame", disable=not progress, mininterval=5, smoothing=0.1)
        for images, rows, problems in loader:
            pending.append(encode_images(encoder, images).cpu().numpy())
            bad.update((int(r), p) for r, p in zip(rows, problems, strict=True) if p)
            bar.update(len(rows))
            while next_end < len(ends) and ends[next_end] <= int(rows[-1]):
                block = np.concatenate(pending)
                n = int(ends[next_end]) + 1 - first
                keep = np.array([first + j not in bad for j in range(n)])
                part = frames.iloc[first : first + n]
                for j in np.flatnonzero(~keep):
                    row = part.iloc[j]
                    skipped.append(
                        dict(
                            clip_id=row["clip_id"],
                            frame=int(row["frame"]),
                            path=row["path"],
                            problem=bad.pop(first + int(j)),
                        )
                    )
                    log.warning("skipped %s: %s", row["path"], skipped[-1]["problem"])
                if keep.any():
                    kept = part[keep]
                    write_features(
                        f,
                        ClipFeatures(
                            kept["clip_id"].iloc[0],
                            block[:n][keep],
                            kept["frame"].to_numpy(),
                            kept["valence"].to_numpy(),
                            kept["arousal"].to_numpy(),
                        ),
                        actor=str(part["actor"].iloc[0]),
                    )
                else:
                    log.warning("skipped clip %s: none of its frames could be decoded", part["clip_id"].iloc[0])
                pending = [block[n:]] if n < len(block) else []
                first, next_end = first + n, next_end + 1
                if next_end % TRIM_EVERY == 0:
                    _malloc_trim()
        bar.close()
        f.attrs["skipped"] = json.dumps(skipped)
    seconds = time.perf_counter() - start
    summary = {
        "frames": len(frames),
        "clips": len(ends),
        "seconds": seconds,
        "frames_per_s": len(frames) / seconds,
        "skipped": len(skipped),
        "workers": num_workers,
    }
    log.info(
        "extracted %(frames)d frames of %(clips)d clips in %(seconds).1f s (%(frames_per_s).1f frames/s, "
        "%(workers)d decoding workers)",
        summary,
    )
    return summary


def extract_shard(
    frames_csv: str,
    shards: int,
    shard: int,
    clip_settings: dict,
    face_crop: dict,
    out: str,
    workers,
    threads: int,
    **options,
) -> dict:
    """`extract_features` of shard `shard` of `shards` of the index `frames_csv`, with CLIP of the config's
    ``clip`` section; `workers` is the ``features.workers`` setting for a job of `threads` threads."""
    chosen = shard_frames(frames_csv, shards, shard)
    encoder = load_clip_from(clip_settings)
    num_workers = decode_workers(workers, threads, encoder.device)
    return extract_features(
        chosen, out, encoder, face_crop, clip_settings["pretrained"], num_workers=num_workers, **options
    )
