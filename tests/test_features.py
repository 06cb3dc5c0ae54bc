import json
import time

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipva.afew import index_dataset, read_frames
from clipva.atomic import write_csv
from clipva.crop import crop_face, square_box
from clipva.encoder import check_pretrained, cpu_has_fast_bf16, load_clip, resolve_precision
from clipva.errors import ConfigError
from clipva.extract import decode_workers, extract_features, shard_clips, shard_frames
from clipva.store import FeatureStore, merge_stores

CROP = {"method": "landmarks", "margin": 0.2}


def test_square_box_is_centred_and_enlarged():
    left, top, right, bottom = square_box(10, 20, 30, 60, margin=0.25)
    assert right - left == bottom - top == 60  # longest side 40, enlarged by 2 * 25 %
    assert (left + right) / 2 == pytest.approx(20, abs=1) and (top + bottom) / 2 == pytest.approx(40, abs=1)


def test_crop_contains_the_landmark_box_and_pads_outside_the_frame():
    img = Image.new("RGB", (100, 80), (255, 255, 255))
    crop = crop_face(img, (80, 60, 99, 79), margin=0.5)
    assert crop.size == (38, 38)  # 19 px box, enlarged by 2 * 50 %
    arr = np.asarray(crop)
    assert arr[-1, -1].sum() == 0 and arr[0, 0].sum() == 765  # beyond the frame: black
    assert crop_face(img, None, 0.2) is img


def test_local_checkpoint_loads_through_clip_pretrained(tmp_path):
    reference = load_clip("clipva-tiny", None, "fp32", "cpu")
    torch.manual_seed(3)
    for p in reference.model.parameters():
        p.data.normal_(0, 0.02)
    path = tmp_path / "tiny.pt"
    torch.save(reference.model.state_dict(), path)
    loaded = load_clip("clipva-tiny", str(path), "fp32", "cpu")
    for (name, a), b in zip(reference.model.state_dict().items(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    fresh = load_clip("clipva-tiny", None, "fp32", "cpu")
    assert not torch.equal(fresh.model.visual.conv1.weight, loaded.model.visual.conv1.weight)


def test_checkpoint_loading_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": object()}, path)
    with pytest.raises(ConfigError, match="could not load"):
        load_clip("clipva-tiny", str(path), "fp32", "cpu")


def test_bad_weight_sources_fail_fast_with_a_clear_message(monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        check_pretrained("clipva-tiny", "/no/such/weights.pt")
    with pytest.raises(ConfigError, match="neither an existing checkpoint file nor a pretrained tag"):
        check_pretrained("ViT-B-32", "not-a-tag")
    with pytest.raises(ConfigError, match="not an open_clip architecture"):
        load_clip("ViT-Nope", None)
    # a real tag without network or cache: fails within seconds, naming the tag
    monkeypatch.setenv("HF_HOME", "/nonexistent-cache")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="openai"):
        load_clip("ViT-B-32", "openai", "fp32", "cpu")
    assert time.perf_counter() - start < 20


def test_precision_resolution(monkeypatch, tmp_path, caplog):
    # auto on CUDA: bf16 only where the GPU computes it natively, not where torch would emulate it
    asked = []

    def bf16_support(including_emulation=True):  # a V100: bf16 only by emulation
        asked.append(including_emulation)
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16_support)
    assert resolve_precision("auto", torch.device("cuda")) == "fp16" and asked == [False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # A100, H100
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("fp16", torch.device("cuda")) == "fp16"
    # auto on CPU: always fp32, whose features (unlike bf16's) agree across CPU kinds; bf16 where asked for,
    # with a warning where the CPU lacks bf16 matrix instructions (bf16 is ~8x slower than fp32 without)
    for flags, fast in [
        ("fpu avx2 fma", False),
        ("avx512f amx_bf16 amx_tile", True),
        ("avx512_bf16", True),
        ("avx512_bf16x", False),
    ]:
        (tmp_path / "cpuinfo").write_text(f"processor : 0\nflags : {flags}\n")
        assert cpu_has_fast_bf16(tmp_path / "cpuinfo") is fast, flags
    assert cpu_has_fast_bf16(tmp_path / "missing") is False
    for fast in (False, True):
        monkeypatch.setattr("clipva.encoder.cpu_has_fast_bf16", lambda fast=fast: fast)
        assert resolve_precision("auto", torch.device("cpu")) == "fp32"
        caplog.clear()
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
        assert ("bf16 on a CPU without AMX or AVX512-BF16 is emulated" in caplog.text) is not fast
    # a model or config made for a GPU still runs on a CPU
    assert resolve_precision("fp16", torch.device("cpu")) == "fp32"
    assert "fp16 does not run on the CPU; using fp32" in caplog.text
    assert load_clip("clipva-tiny", None, "fp16", "cpu").precision == "fp32"


def test_decode_workers_follow_the_threads_and_the_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [decode_workers("auto", t, cpu) for t in (1, 2, 4, 8, 16)] == [2, 2, 2, 2, 4]
    assert [decode_workers("auto", t, cuda) for t in (1, 2, 4, 16)] == [1, 1, 3, 15]
    assert decode_workers(0, 16, cuda) == 0 and decode_workers(5, 2, cpu) == 5


def test_shards_are_disjoint_and_complete():
    ids = [f"{i:03d}" for i in range(1, 12)]
    parts = [shard_clips(ids, 3, k) for k in range(3)]
    assert sorted(sum(parts, [])) == ids


def test_a_shard_job_reads_its_frames_in_pieces_as_the_whole_table_gives_them(demo_root, tmp_path):
    """shard_frames streams frames.csv (a shard job of millions of frames holds its own rows only) and
    returns exactly the rows, values, types and index that filtering the whole table gives, also where one
    piece has no label and no box source while another has them."""
    frames, _ = index_dataset(demo_root)
    first = frames["clip_id"] == frames["clip_id"].iloc[0]
    frames.loc[first, ["valence", "arousal", "box_source"]] = np.nan
    frames.loc[first, "labeled"] = False
    write_csv(tmp_path / "frames.csv", frames)
    whole = read_frames(tmp_path / "frames.csv")
    for shards in (1, 2, 3):
        parts = [shard_frames(str(tmp_path / "frames.csv"), shards, k, rows=int(first.sum())) for k in range(shards)]
        for k, part in enumerate(parts):
            ids = shard_clips(whole["clip_id"].unique().tolist(), shards, k)
            pd.testing.assert_frame_equal(part, whole[whole["clip_id"].isin(ids)])
        assert sorted(i for part in parts for i in part.index) == list(whole.index)
    write_csv(tmp_path / "empty.csv", frames.iloc[:0])
    assert shard_frames(str(tmp_path / "empty.csv"), 2, 0).columns.tolist() == frames.columns.tolist()


@pytest.fixture(scope="module")
def store(demo_root, tmp_path_factory):
    frames, _ = index_dataset(demo_root)
    path = tmp_path_factory.mktemp("store") / "features.h5"
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    extract_features(frames, str(path), clip, CROP, None, batch_size=7, num_workers=0, progress=False)
    return frames, path


def test_store_holds_every_frame_once_with_labels_equal_to_the_json(store, demo_root):
    frames, path = store
    with FeatureStore(path) as fs:
        assert fs.clip_ids == sorted(frames["clip_id"].unique())
        assert fs.attrs["model"] == "clipva-tiny" and fs.attrs["precision"] == "fp32"
        assert json.loads(fs.attrs["face_crop"]) == CROP
        n_labeled = 0
        for clip_id in fs.clip_ids:
            clip = fs.load(clip_id)
            assert clip.features.shape == (len(clip.frame_index), int(fs.attrs["embed_dim"]))
            assert len(set(clip.frame_index)) == len(clip.frame_index)
            doc = json.loads((demo_root / clip_id / f"{clip_id}.json").read_text())
            for k, frame in enumerate(clip.frame_index):
                entry = doc["frames"].get(f"{frame:05d}")
                if entry is None:
                    assert np.isnan(clip.valence[k])
                else:
                    assert (clip.valence[k], clip.arousal[k]) == (entry["valence"], entry["arousal"])
                    n_labeled += 1
        # every labeled frame that has a PNG is in the store
        assert n_labeled == int(frames["labeled"].sum())


def test_bf16_extraction_matches_fp32(store, tmp_path):
    """The precision `auto` picks on CPUs with AMX (and on GPUs): bf16 weights and inputs, float32 store."""
    frames, path = store
    one = frames[frames["clip_id"].isin(frames["clip_id"].unique()[:2])]
    clip = load_clip("clipva-tiny", None, "bf16", "cpu")
    assert clip.model.visual.conv1.weight.dtype == torch.bfloat16
    extract_features(one, str(tmp_path / "bf16.h5"), clip, CROP, None, batch_size=16, num_workers=0, progress=False)
    with FeatureStore(tmp_path / "bf16.h5") as half, FeatureStore(path) as full:
        assert half.attrs["precision"] == "bf16"
        for cid in half.clip_ids:
            a, b = half.load(cid).features, full.load(cid).features
            assert a.dtype == np.float32 and a.shape == b.shape
            cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            assert cosine.min() > 0.99 and np.abs(a - b).max() > 0  # close, and really computed in bf16


def test_features_do_not_depend_on_batching(store, demo_root, tmp_path):
    frames, path = store
    one = frames[frames["clip_id"] == frames["clip_id"].iloc[0]]
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    extract_features(one, str(tmp_path / "a.h5"), clip, CROP, None, batch_size=64, num_workers=0, progress=False)
    extract_features(one, str(tmp_path / "b.h5"), clip, CROP, None, batch_size=3, num_workers=1, progress=False)
    with FeatureStore(tmp_path / "a.h5") as a, FeatureStore(tmp_path / "b.h5") as b:
        cid = a.clip_ids[0]
        np.testing.assert_allclose(a.load(cid).features, b.load(cid).features, rtol=1e-4, atol=1e-5)
        with FeatureStore(path) as full:  # a separately loaded random-init model is the same model
            np.testing.assert_allclose(a.load(cid).features, full.load(cid).features, rtol=1e-4, atol=1e-5)


def test_merge_of_shards_equals_one_store(store, tmp_path):
    frames, path = store
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    ids = sorted(frames["clip_id"].unique())
    shards = []
    for k in range(2):
        part = frames[frames["clip_id"].isin(shard_clips(ids, 2, k))]
        shards.append(tmp_path / f"{k}.h5")
        extract_features(part, str(shards[-1]), clip, CROP, None, batch_size=8, num_workers=0, progress=False)
    merge_stores(shards, tmp_path / "merged.h5")
    with FeatureStore(tmp_path / "merged.h5") as merged:
        assert merged.clip_ids == ids
        assert merged.attrs["model"] == "clipva-tiny"
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_failed_write_leaves_no_store_behind(demo_root, tmp_path):
    frames, _ = index_dataset(demo_root)
    frames = frames.copy()
    frames.loc[frames.index[5], "path"] = str(tmp_path / "missing.png")
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    with pytest.raises(Exception, match="missing.png"):
        extract_features(
            frames, str(tmp_path / "out.h5"), clip, CROP, None, batch_size=4, num_workers=0, progress=False
        )
    assert list(tmp_path.iterdir()) == []
    assert not h5py.is_hdf5(tmp_path / "out.h5") if (tmp_path / "out.h5").exists() else True
