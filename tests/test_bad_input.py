"""The corpus of broken AFEW-VA inputs: every case in both modes, odd image modes, and two workflow runs."""

import io
import re
import struct
import zlib

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import run_snakemake
from corpus import (
    CASES,
    CLIP_CASES,
    N_FRAMES,
    expected_frames,
    frame_grey,
    frame_rgb,
    make_case,
    make_corpus,
    scrambled_pixels,
    write_good_clip,
)
from PIL import Image

import clipva.crop
from clipva.afew import index_dataset, write_report
from clipva.crop import load_rgb
from clipva.encoder import load_clip
from clipva.errors import BadInputError
from clipva.extract import extract_features
from clipva.frames import FrameWindows
from clipva.sequences import load_splits
from clipva.store import FeatureStore, merge_stores, write_skip_report

IMAGE_CASES = ["grayscale_png", "rgba_png", "png_16bit", "frame_sizes_differ", "single_frame_clip"]


def _report(problems, frames, path) -> tuple[list[str], list[str]]:
    """The 'left out' and 'notes' lines of the validation report, as written (each checked against its count)."""
    write_report(problems, frames, path, "skip")
    lines = path.read_text(encoding="utf-8").splitlines()
    sections = {}
    for title in ("left out", "notes"):
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{title} ("))
        end = lines.index("", start) if "" in lines[start:] else len(lines)
        items = [line.strip() for line in lines[start + 1 : end]]
        assert lines[start].startswith(f"{title} ({len(items)})")
        sections[title] = items
    return sections["left out"], sections["notes"]


@pytest.mark.parametrize("name", list(CASES))
def test_case_in_both_modes(name, tmp_path):
    case = make_case(name, tmp_path)
    if case.kind == "bad":
        with pytest.raises(BadInputError) as err:
            index_dataset(case.root, "error")
        assert str(err.value).startswith(case.message), str(err.value)
    else:
        frames, problems = index_dataset(case.root, "error")
        assert not any(p.fatal for p in problems)
    if not case.skippable:
        with pytest.raises(BadInputError, match="does not exist"):
            index_dataset(case.root, "skip")
        return
    frames, problems = index_dataset(case.root, "skip")
    assert set(zip(frames["clip_id"], frames["frame"], strict=True)) == expected_frames(case)
    left_out, notes = _report(problems, frames, tmp_path / "report.txt")
    if case.kind == "bad":
        assert len(left_out) == 1 and left_out[0].startswith(case.message), left_out
    else:
        assert left_out == []
    if case.kind == "note":
        assert len(notes) == 1 and notes[0].startswith(case.message), notes
    if case.kind == "valid":
        assert problems == []
        assert (frames["clip_id"] == case.clip).sum() == len(case.rgb or range(N_FRAMES))


def test_every_case_in_one_data_set_is_in_one_report_once(tmp_path):
    """All clip-level cases broken in one data set: with 'skip' each left-out clip or frame is listed once,
    with its reason, and each handled quirk once among the notes; with 'error' the first one stops."""
    root = tmp_path / "afew-va"
    cases = make_corpus(root, CLIP_CASES)
    frames, problems = index_dataset(root, "skip")
    assert set(zip(frames["clip_id"], frames["frame"], strict=True)) == expected_frames(cases)
    left_out, notes = _report(problems, frames, tmp_path / "report.txt")
    bad = [case for case in cases if case.kind == "bad"]
    assert len(left_out) == len(bad)
    for case in bad:
        assert sum(line.startswith(case.message) for line in left_out) == 1, (case.name, left_out)
    for case in cases:
        if case.kind == "note":
            assert sum(line.startswith(case.message) for line in notes) == 1, (case.name, notes)
    first = min(bad, key=lambda case: int(case.clip))
    with pytest.raises(BadInputError) as err:
        index_dataset(root, "error")
    assert str(err.value).startswith(first.message)


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_odd_but_valid_images_index_and_load_the_right_pixels(name, tmp_path):
    case = make_case(name, tmp_path)
    frames, _ = index_dataset(case.root, "error")
    clip = frames[frames["clip_id"] == case.clip].sort_values("frame")
    assert len(clip) == len(case.rgb)
    for row, rgb in zip(clip.itertuples(), case.rgb, strict=True):
        image = load_rgb(row.path)
        assert image.mode == "RGB" and (row.width, row.height) == image.size == (rgb.shape[1], rgb.shape[0])
        assert np.abs(np.asarray(image, dtype=int) - rgb).max() <= 1


def test_load_rgb_reads_every_mode_as_8_bit_rgb(tmp_path):
    grey, rgb = frame_grey(2), frame_rgb(2)
    grey_rgb = np.repeat(grey[..., None], 3, -1)
    few_colours = (rgb // 64 * 64).astype(np.uint8)  # 64 colours: a palette holds them exactly
    alpha = np.full(grey.shape, 77, np.uint8)
    cases = [
        (Image.fromarray(grey), "png", grey_rgb),
        (Image.fromarray(np.dstack([grey, alpha])), "png", grey_rgb),  # LA: alpha dropped
        (Image.fromarray(few_colours).quantize(64, dither=Image.Dither.NONE), "png", few_colours),  # P
        (Image.fromarray(rgb), "png", rgb),
        (Image.fromarray(np.dstack([rgb, alpha])), "png", rgb),  # RGBA: alpha dropped
        (Image.fromarray(grey.astype(np.uint16) * 257), "png", grey_rgb),  # I;16, 8 bit saved as v * 257
        (Image.fromarray(grey.astype(np.uint16) << 8), "png", grey_rgb),  # I;16, saved as v * 256
        (Image.fromarray(grey.astype(np.int32) * 257), "tiff", grey_rgb),  # I (32 bit) holding 16-bit values
    ]
    for k, (image, ext, expected) in enumerate(cases):
        path = tmp_path / f"{k}.{ext}"
        image.save(path)
        with Image.open(path) as stored:
            assert stored.mode == image.mode
        loaded = load_rgb(path)
        assert loaded.mode == "RGB", image.mode
        assert np.abs(np.asarray(loaded, dtype=int) - expected).max() <= 1, image.mode
    with Image.open(tmp_path / "5.png") as img:  # what load_rgb replaces: PIL's convert clips 16 bit to white
        assert (np.asarray(img.convert("RGB")) == 255).mean() > 0.9


def _png(pixels: np.ndarray, colour_type: int, interlaced: bool = False) -> bytes:
    """A PNG written by hand, for what PIL cannot write: 16-bit RGB (colour type 2) and Adam7 interlacing."""
    h, w = pixels.shape[:2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    data = pixels.astype(">u2" if depth == 16 else np.uint8)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b"".join(
        b"\x00" + row.tobytes()  # filter type 0 on every row
        for x0, y0, dx, dy in (passes if interlaced else [(0, 0, 1, 1)])
        for row in data[y0::dy, x0::dx]
        if row.size
    )

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, int(interlaced))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_libspng_decodes_every_png_as_pil_does(tmp_path, monkeypatch):
    """load_rgb decodes PNG frames with libspng: the pixels must be those of the PIL path, in every mode."""
    rgb, grey = frame_rgb(3), frame_grey(3)
    alpha = (np.arange(rgb.size // 3).reshape(grey.shape) % 256).astype(np.uint8)
    rgb16 = np.random.default_rng(0).integers(0, 65536, rgb.shape).astype(np.uint16)

    def saved(image, **options):
        buf = io.BytesIO()
        image.save(buf, format="PNG", **options)
        return buf.getvalue()

    cases = {
        "1": saved(Image.fromarray(grey).convert("1")),
        "L": saved(Image.fromarray(grey)),
        "L, transparency": saved(Image.fromarray(grey), transparency=7),
        "LA": saved(Image.fromarray(np.dstack([grey, alpha]))),
        "P": saved(Image.fromarray(rgb).quantize(200)),
        "P, transparency": saved(Image.fromarray(rgb).quantize(200), transparency=3),
        "RGB": saved(Image.fromarray(rgb)),
        "RGBA": saved(Image.fromarray(np.dstack([rgb, alpha]))),
        "I;16": saved(Image.fromarray(rgb16[..., 0])),
        "RGB, 16 bit": _png(rgb16, 2),
        "RGB, interlaced": _png(rgb, 2, interlaced=True),
        "L, 16 bit, interlaced": _png(rgb16[..., 1], 0, interlaced=True),
    }
    calls, real_load = [], clipva.crop.pyspng.load

    def counted(data, format):
        calls.append(format)
        return real_load(data, format)

    monkeypatch.setattr(clipva.crop.pyspng, "load", counted)
    for k, (mode, data) in enumerate(cases.items()):
        path = tmp_path / f"{k}.png"
        path.write_bytes(data)
        calls.clear()
        fast = load_rgb(path)
        assert calls == ["RGB"], mode  # libspng decoded it
        slow = clipva.crop._load_rgb_pil(path, path)
        assert fast.mode == slow.mode == "RGB" and fast.size == slow.size == (rgb.shape[1], rgb.shape[0]), mode
        assert np.array_equal(np.asarray(fast), np.asarray(slow)), mode
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "9.png")), (rgb16 >> 8).astype(np.uint8))  # the high byte


def test_what_libspng_refuses_goes_to_pil(tmp_path, monkeypatch):
    def refuse(data, format):
        raise RuntimeError("pyspng: could not decode image: refused by the test")

    monkeypatch.setattr(clipva.crop.pyspng, "load", refuse)
    Image.fromarray(frame_rgb(1)).save(tmp_path / "ok.png")
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "ok.png")), frame_rgb(1))
    (tmp_path / "bad.png").write_bytes((tmp_path / "ok.png").read_bytes()[:100])
    with pytest.raises(BadInputError, match=r"bad\.png: cannot decode frame \(OSError"):  # PIL's error, the file's name
        load_rgb(tmp_path / "bad.png")


def test_load_rgb_names_the_file_it_cannot_decode(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(frame_rgb(0)).save(buf, format="PNG")
    for name, data in [("truncated.png", buf.getvalue()[:200]), ("garbage.png", b"\x89PNG not really" * 20)]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadInputError, match=rf"{name}: cannot decode frame \("):
            load_rgb(tmp_path / name)
    with pytest.raises(BadInputError, match=r"missing\.png: cannot decode frame \(FileNotFoundError"):
        load_rgb(tmp_path / "missing.png")


def test_odd_modes_give_the_same_features_and_windows_as_rgb(tmp_path):
    """16-bit and grey frames encode like their 8-bit RGB twin, RGBA like its RGB: extraction and LoRA loading."""
    cases = make_corpus(tmp_path / "data", ["png_16bit", "grayscale_png", "rgba_png"])
    clip_16, clip_grey, clip_rgba = (case.clip for case in cases)
    # clip 001 holds frame_rgb (the RGB of the RGBA clip); clip 009 the grey frames as RGB, for the other two
    write_good_clip(tmp_path / "data", 9, images=[Image.fromarray(rgb) for rgb in cases[0].rgb])
    frames, problems = index_dataset(tmp_path / "data", "error")
    assert problems == []
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    crop = {"method": "landmarks", "margin": 0.2}
    extract_features(frames, str(tmp_path / "f.h5"), clip, crop, None, batch_size=8, num_workers=0, progress=False)
    with h5py.File(tmp_path / "f.h5") as f:
        feats = {k: f[f"clips/{k}/features"][()] for k in f["clips"]}
    assert np.abs(feats[clip_16] - feats["009"]).max() < 1e-5
    assert np.abs(feats[clip_grey] - feats["009"]).max() < 1e-5
    assert np.abs(feats[clip_rgba] - feats["001"]).max() < 1e-5
    assert np.abs(feats["009"] - feats["001"]).max() > 1e-3  # the frames differ, so the check has teeth
    windows = FrameWindows(
        frames, [(k, np.arange(N_FRAMES)) for k in (clip_16, "009", clip_rgba, "001")], clip.preprocess, crop
    )
    assert (windows[0] - windows[1]).abs().max() < 1e-6 and (windows[2] - windows[3]).abs().max() < 1e-6


def _scramble(root, clip_id: int, frames) -> list[str]:
    paths = []
    for k in frames:
        png = root / f"{clip_id:03d}" / f"{k:05d}.png"
        png.write_bytes(scrambled_pixels(png.read_bytes()))
        paths.append(str(png.resolve()))
    return paths


def test_frames_that_pass_the_index_but_cannot_be_decoded_stop_or_are_skipped_at_extraction(tmp_path):
    """Indexing checks PNG chunks, not pixels (decoding every frame twice would double AFEW-VA's indexing
    cost), so extraction is where such a frame shows: error mode stops naming it, skip mode leaves it out
    of the store and lists it, and leaves out a clip with no decodable frame whole."""
    root = tmp_path / "data"
    for k in (1, 2, 3):
        write_good_clip(root, k, N_FRAMES)
    bad_frame = _scramble(root, 2, [1])[0]
    whole_clip = _scramble(root, 3, range(N_FRAMES))
    frames, problems = index_dataset(root, "error")
    assert problems == [] and len(frames) == 3 * N_FRAMES
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    crop = {"method": "landmarks", "margin": 0.2}

    with pytest.raises(BadInputError, match=rf"^{re.escape(bad_frame)}: cannot decode frame \("):
        extract_features(frames, str(tmp_path / "e.h5"), clip, crop, None, batch_size=8, num_workers=0, progress=False)
    assert not (tmp_path / "e.h5").exists()

    shards = [str(tmp_path / f"{k}.h5") for k in range(2)]
    for k, clips in enumerate([["001", "003"], ["002"]]):  # two shards, as the workflow writes them
        part = frames[frames["clip_id"].isin(clips)]
        summary = extract_features(
            part, shards[k], clip, crop, None, batch_size=3, num_workers=1, progress=False, on_bad_input="skip"
        )
        assert summary["skipped"] == (N_FRAMES if k == 0 else 1)
    skipped = merge_stores(shards, tmp_path / "f.h5")
    assert [s["path"] for s in skipped] == whole_clip + [bad_frame]
    with FeatureStore(tmp_path / "f.h5") as store:
        assert skipped == store.skipped
    with FeatureStore(tmp_path / "f.h5") as store:
        assert store.clip_ids == ["001", "002"]
        good, partial = store.load("001"), store.load("002")
    keep = [0, 2, 3]
    assert partial.frame_index.tolist() == keep
    assert np.abs(partial.features - good.features[keep]).max() < 1e-6  # rows not shifted by the gap
    assert np.array_equal(partial.valence, good.valence[keep])

    write_skip_report(skipped, tmp_path / "f.h5", tmp_path / "report.txt")
    report = (tmp_path / "report.txt").read_text(encoding="utf-8")
    assert f"could not be decoded ({N_FRAMES + 1}):\n" in report
    assert f"  {bad_frame} (frame 00001): cannot decode frame (" in report
    assert report.endswith("none of their frames could be decoded (1):\n  003\n")

    table = pd.DataFrame({"clip_id": ["001", "002", "003"], "actor": ["a1"] * 3, "split": ["train", "val", "test"]})
    table.to_csv(tmp_path / "clips.csv", index=False)
    data = load_splits(str(tmp_path / "f.h5"), str(tmp_path / "clips.csv"), ("train", "val", "test"))
    assert [[c.clip_id for c in data[s]] for s in ("train", "val", "test")] == [["001"], ["002"], []]
    table.assign(clip_id=["001", "002", "004"]).to_csv(tmp_path / "clips.csv", index=False)
    with pytest.raises(ValueError, match=r"clips \['004'\] .* are not in the store"):
        load_splits(str(tmp_path / "f.h5"), str(tmp_path / "clips.csv"), ("train",))


@pytest.mark.e2e
def test_workflow_stops_on_a_corrupt_png_naming_file_and_frame(tmp_path):
    case = make_case("corrupt_png", tmp_path / "data")
    proc = run_snakemake(
        tmp_path, "results/index/frames.csv", overrides={"dataset": {"root": str(case.root)}}, check=False
    )
    assert proc.returncode != 0
    log = (tmp_path / "logs/index.log").read_text(encoding="utf-8")
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and case.message in errors[0], log
    assert "Traceback" not in log
    assert not (tmp_path / "results/index/frames.csv").exists()
    dry = run_snakemake(tmp_path, "-n", "results/index/frames.csv", overrides={"dataset": {"root": str(case.root)}})
    assert re.search(r"^index\s+1$", dry.stdout, re.M), dry.stdout  # nothing a later run takes as finished


@pytest.mark.e2e
def test_workflow_skips_every_broken_clip_of_a_mixed_data_set(tmp_path):
    """The whole corpus in one data set, one run: each left-out clip or frame in exactly one report."""
    root = tmp_path / "AFEW VA données ü"
    cases = make_corpus(root, CLIP_CASES)
    undecodable = _scramble(root, 2, [2])[0]  # passes the index; left out at extraction
    run_snakemake(tmp_path, "features", overrides={"dataset": {"root": str(root), "on_bad_input": "skip"}})
    report = (tmp_path / "results/index/validation_report.txt").read_text(encoding="utf-8")
    left_out = report.split("left out (")[1].split("\n\n")[0].splitlines()[1:]
    bad = [case for case in cases if case.kind == "bad"]
    assert report.count(f"left out ({len(bad)}):") == 1 and len(left_out) == len(bad)
    for case in bad:
        assert sum(line.strip().startswith(case.message) for line in left_out) == 1, (case.name, left_out)
    extraction = (tmp_path / "results/features/extraction_report.txt").read_text(encoding="utf-8")
    assert f"could not be decoded (1):\n  {undecodable} (frame 00002): cannot decode frame (" in extraction
    assert str(undecodable) not in report and not any(case.message in extraction for case in bad)
    kept = expected_frames(cases) - {("002", 2)}
    by_name = {case.name: case.clip for case in cases}
    with h5py.File(tmp_path / "results/features/features.h5") as f:
        stored = {(k, int(i)) for k in f["clips"] for i in f[f"clips/{k}/frame_index"][()]}
        feats = {k: f[f"clips/{k}/features"][()] for k in f["clips"]}
    assert stored == kept
    assert {by_name["png_16bit"], by_name["grayscale_png"], by_name["rgba_png"]} <= set(feats)
    assert np.abs(feats[by_name["png_16bit"]] - feats[by_name["grayscale_png"]]).max() < 1e-4  # not white
    assert np.abs(feats[by_name["rgba_png"]] - feats["001"]).max() < 1e-4


@pytest.mark.e2e
def test_workflow_names_a_data_root_that_does_not_exist(tmp_path):
    missing = tmp_path / "no such folder"
    proc = run_snakemake(tmp_path, "-n", "features", overrides={"dataset": {"root": str(missing)}}, check=False)
    assert proc.returncode != 0
    assert "Missing input files for rule index" in proc.stdout + proc.stderr
    assert str(missing) in proc.stdout + proc.stderr
