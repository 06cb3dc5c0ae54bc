"""The HDF5 feature store: one group per clip under ``/clips``.

Layout (every array has one row per frame, in frame order)::

    /clips/<clip_id>/features     float32 (n_frames, dim)  CLIP image embeddings (not normalised)
    /clips/<clip_id>/frame_index  int32   (n_frames,)      frame numbers (00012.png -> 12)
    /clips/<clip_id>/valence      float32 (n_frames,)      as annotated (-10..10), NaN where unlabeled
    /clips/<clip_id>/arousal      float32 (n_frames,)      as annotated, NaN where unlabeled
    attrs: actor
    file attrs: model, pretrained, precision, face_crop (JSON), embed_dim, clipva_version,
                skipped (JSON list of the frames left out because they could not be decoded, on_bad_input: skip)

Stores are written under a temporary name and renamed only when complete (`atomic_h5`), so a reader never
opens a half-written store.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from clipva.atomic import atomic_path, write_text


@dataclass
class ClipFeatures:
    clip_id: str
    features: np.ndarray
    frame_index: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    actor: str = ""  # from the split table (load_splits); "" where unknown

    @property
    def labels(self) -> np.ndarray:
        """(n_frames, 2) valence, arousal on the annotation scale; NaN where unlabeled."""
        return np.stack([self.valence, self.arousal], axis=1)

    @property
    def labeled(self) -> np.ndarray:
        return ~np.isnan(self.valence)


@contextlib.contextmanager
def atomic_h5(path: str | Path) -> Iterator[h5py.File]:
    """Open `path` for writing under a temporary name; rename into place only on success."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield f


def write_features(f: h5py.File, clip: ClipFeatures, actor: str = "") -> None:
    g = f.create_group(f"clips/{clip.clip_id}")
    g.create_dataset("features", data=np.asarray(clip.features, dtype=np.float32))
    g.create_dataset("frame_index", data=np.asarray(clip.frame_index, dtype=np.int32))
    g.create_dataset("valence", data=np.asarray(clip.valence, dtype=np.float32))
    g.create_dataset("arousal", data=np.asarray(clip.arousal, dtype=np.float32))
    g.attrs["actor"] = actor


class FeatureStore:
    """Read access to a feature store; use as a context manager or call close()."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = h5py.File(self.path, "r")
        self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self._f.attrs.items()}

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    @property
    def clip_ids(self) -> list[str]:
        return sorted(self._f["clips"].keys()) if "clips" in self._f else []

    @property
    def skipped(self) -> list[dict]:
        """The frames extraction left out (on_bad_input: skip): dicts of clip_id, frame, path, problem."""
        return _skipped(self.attrs)

    def load(self, clip_id: str) -> ClipFeatures:
        g = self._f[f"clips/{clip_id}"]
        return ClipFeatures(clip_id, g["features"][()], g["frame_index"][()], g["valence"][()], g["arousal"][()])

    def load_many(self, clip_ids: list[str]) -> list[ClipFeatures]:
        return [self.load(c) for c in clip_ids]


def merge_stores(shards: list[str | Path], out: str | Path) -> list[dict]:
    """Copy the clips of several shard stores into one store (atomic); attributes must agree. Returns the
    frames the shards skipped (as FeatureStore.skipped), which the merged store lists too."""
    own = {"shard", "skipped"}  # attributes of one shard, not of the extraction
    skipped: list[dict] = []
    with atomic_h5(out) as dst:
        for i, shard in enumerate(shards):
            with h5py.File(shard, "r") as src:
                if i == 0:
                    dst.attrs.update(src.attrs)
                    dst.create_group("clips")
                else:
                    ours = {k: dst.attrs[k] for k in dst.attrs if k not in own}
                    theirs = {k: src.attrs[k] for k in src.attrs if k not in own}
                    if json.dumps(ours, default=str, sort_keys=True) != json.dumps(theirs, default=str, sort_keys=True):
                        raise ValueError(f"{shard}: attributes differ from {shards[0]}; re-extract all shards")
                skipped += _skipped(src.attrs)
                for clip_id in src.get("clips", {}):
                    src.copy(src[f"clips/{clip_id}"], dst["clips"], name=clip_id)
        dst.attrs.pop("shard", None)
        dst.attrs["skipped"] = json.dumps(skipped)
    return skipped


def _skipped(attrs) -> list[dict]:
    value = attrs.get("skipped", "[]")
    return json.loads(value.decode() if isinstance(value, bytes) else value)


def write_skip_report(skipped: list[dict], store_path: str | Path, path: str | Path) -> None:
    """The extraction's report of the frames (and clips) it left out, in the words of the index's report."""
    with FeatureStore(store_path) as store:
        whole = sorted({s["clip_id"] for s in skipped} - set(store.clip_ids))
    lines = [
        "clipva extraction report",
        f"frames left out because they could not be decoded ({len(skipped)}):",
        *(f"  {s['path']} (frame {s['frame']:05d}): {s['problem']}" for s in skipped),
        "",
        f"clips left out because none of their frames could be decoded ({len(whole)}):",
        *(f"  {c}" for c in whole),
    ]
    write_text(path, "\n".join(lines) + "\n")
