"""Outputs are written under a temporary name in their folder and renamed into place only when complete, so
a job that fails or is killed never leaves a half-written file under the final name (where a later run
could mistake it for a finished one). Temporaries left by a killed writer are removed by the next writer.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
from collections.abc import Iterator
from pathlib import Path


def _temporary(path: Path, pid: int | str) -> Path:
    # keeps the suffix: numpy, matplotlib and h5py tools infer the format from it
    return path.with_name(f".{path.stem}.tmp-{pid}{path.suffix}")


def process_alive(pid: int) -> bool:
    """Whether a process of this machine with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete temporaries of `path` whose writer process is gone; returns them."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(glob.escape(_temporary(path, "*").name).replace("[*]", "*")):
        pid = tmp.name[len(f".{path.stem}.tmp-") : len(tmp.name) - len(path.suffix)]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _temporary(path, os.getpid())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_csv(path: str | Path, table, **to_csv) -> None:
    """A pandas table as CSV, atomically (keyword arguments go to DataFrame.to_csv; index=False by default)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, **{"index": False, **to_csv})


# errno -> what to do about it, for the message of a job that cannot write its outputs
WRITE_ERRORS = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (disk quota exceeded)",
    errno.EFBIG: "the file system does not take files this large",
    errno.EROFS: "the results folder must be on a writable file system",
    errno.EACCES: "make the results folder writable for this user",
    errno.EPERM: "make the results folder writable for this user",
}
