import errno
import subprocess
import sys

import numpy as np
import pytest

from clipva.atomic import atomic_path, remove_stale_temporaries, write_text
from clipva.checkpoints import atomic_save
from clipva.jobs import write_error_message


def test_a_failing_writer_leaves_nothing_under_the_final_name(tmp_path):
    out = tmp_path / "sub" / "metrics.json"
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("{half")
        raise RuntimeError("killed mid-write")
    assert list((tmp_path / "sub").iterdir()) == []
    write_text(out, "{}")
    assert out.read_text() == "{}" and [p.name for p in (tmp_path / "sub").iterdir()] == ["metrics.json"]


def test_the_temporary_keeps_the_suffix_that_writers_infer_the_format_from(tmp_path):
    with atomic_path(tmp_path / "emb.npz") as tmp:
        assert tmp.suffix == ".npz"
        np.savez(tmp, a=np.arange(3))  # np.savez would append .npz to any other name
    assert np.load(tmp_path / "emb.npz")["a"].tolist() == [0, 1, 2]


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".store.tmp-{dead.stdout.strip()}.h5"
    stale.write_bytes(b"half")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        alive = tmp_path / f".store.tmp-{live.pid}.h5"
        alive.write_bytes(b"being written")
        other = tmp_path / f".other.tmp-{dead.stdout.strip()}.h5"
        other.write_bytes(b"not ours")
        assert remove_stale_temporaries(tmp_path / "store.h5") == [stale]
        assert alive.exists() and other.exists() and not stale.exists()
    finally:
        live.kill()
        live.wait()


def test_checkpoints_on_a_full_disk_raise_oserror_naming_the_file(tmp_path, monkeypatch):
    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr("pathlib.Path.write_bytes", full)
    with pytest.raises(OSError) as err:
        atomic_save({"x": 1}, tmp_path / "head.pt")
    message = write_error_message(err.value, ["results/head.pt"])
    assert message.startswith(f"cannot write {tmp_path}/.head.tmp-") and "No space left on device" in message
    assert "free some space" in message and "run the same command again" in message


def test_write_error_message_names_the_outputs_when_the_library_does_not():
    err = OSError(errno.EROFS, "Can't write data")  # as h5py raises it: an errno, no file name
    assert write_error_message(err, ["results/features/features.h5"]).startswith(
        "cannot write results/features/features.h5: Read-only file system"
    )
    assert write_error_message(FileNotFoundError(errno.ENOENT, "gone", "x"), ["y"]) is None  # not a write error
