"""Property-based tests of every reader of outside data, and the path-escape cases (issue #18).

Each reader gets generated inputs (malformed, truncated, wrongly typed, huge, non-UTF-8, non-ASCII) and must
either return a valid result or raise clipva's own error naming the file; never another exception, and it
writes nothing. The profile is fixed in tests/conftest.py: ``ci`` (the default, a fixed seed) or
``HYPOTHESIS_PROFILE=long`` (many more cases, a new seed each run). How many cases each reader survived:
``pytest tests/test_fuzz.py --hypothesis-show-statistics`` (docs/testing.md has the counts).
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from clipva.afew import BOX_COLUMNS, FRAME_RE, N_LANDMARKS, Problem, index_dataset, scan_clip
from clipva.annotated_videos import convert_annotated_videos, read_labels
from clipva.checkpoints import load_head, save_head
from clipva.errors import BadInputError, ClipvaError, ConfigError
from clipva.head import HeadConfig, TemporalHead
from clipva.model_folder import (
    CROP_METHODS,
    MODEL_FILE,
    check_files,
    export_model,
    load_head_weights,
    read_model_config,
)
from clipva.predict import load_model
from clipva.settings import check_config
from clipva.windows import Window

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
W, H = 32, 24


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((H, W, 3), 40 * i % 256, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


PNGS = [_png(i) for i in range(4)]
GOOD_LANDMARKS = np.stack([np.linspace(8, 24, N_LANDMARKS), np.linspace(6, 18, N_LANDMARKS)], 1).tolist()

# --- strategies -------------------------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), max_size=30)  # any Unicode, non-ASCII included
numbers = st.one_of(
    st.integers(),
    st.integers(10**300, 10**400).map(lambda n: n * (-1) ** (n % 2)),  # beyond float range
    st.integers(-12, 12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-11, 11),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=20
)
encodings = st.sampled_from(["utf-8", "utf-16", "latin-1"])


def _nodes(doc, prefix=()) -> list[tuple]:
    """Where a document can be changed: the path of every value in it (dict keys and list indices)."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    return [prefix, *(path for key, value in items for path in _nodes(value, (*prefix, key)))]


@st.composite
def mutated(draw, valid) -> tuple[object, object | None]:
    """(document, the valid document it is, or None): a valid document with 0-3 of its values replaced by
    any JSON value, deleted, or joined by an unknown key, so that most cases are nearly right."""
    doc = copy.deepcopy(original := draw(valid))
    changes = draw(st.integers(0, 3))
    for _ in range(changes):
        path = draw(st.sampled_from(_nodes(doc)))
        if not path:
            doc = draw(json_values)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(texts)] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return doc, original if changes == 0 else None


@st.composite
def files(draw, valid) -> tuple[bytes, object | None]:
    """A file's bytes and the valid document they hold exactly (or None): a valid document, maybe changed
    (`mutated`), as JSON; sometimes truncated, in another encoding, random bytes or nested too deep."""
    kind = draw(st.sampled_from(["json"] * 4 + ["truncated", "encoded", "bytes", "nested"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)), None
    if kind == "nested":  # deeper than any parser recursion limit
        depth = draw(st.integers(500, 200_000))
        return b"[" * depth + b"]" * draw(st.integers(0, depth)), None
    doc, exact = draw(mutated(valid))
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if kind == "truncated":
        return text[: draw(st.integers(0, max(len(text) - 1, 0)))].encode(), None
    if kind == "encoded":
        return text.encode(draw(encodings), errors="replace"), None
    return text.encode(), exact


names = texts.filter(lambda name: name.strip() != "")
in_range = st.one_of(st.integers(-10, 10), st.floats(-10, 10))


@st.composite
def valid_annotations(draw) -> dict:
    frames = draw(st.lists(st.integers(0, 3), unique=True))
    labels = {
        f"{i:05d}": {"valence": draw(in_range), "arousal": draw(in_range), "landmarks": GOOD_LANDMARKS} for i in frames
    }
    return {"actor": draw(names), "video_id": "004", "frames": labels}


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_size for p in root.rglob("*")}


def _names_its_file(err: Exception, *paths: Path) -> bool:
    return any(str(err).startswith(str(p)) for p in paths)


# --- the AFEW-VA annotation JSON --------------------------------------------------------------------------


def _check_frames(frames, problems: list[Problem], folder: Path) -> None:
    """What a reader of one clip folder may return: frames it can use from inside the data root (the
    folder's parent), and problems that name a file of the folder."""
    assert all(isinstance(p, Problem) and p.path.startswith(str(folder)) for p in problems)
    labeled = frames[frames["labeled"].astype(bool)]
    assert np.isfinite(labeled[["valence", "arousal"]].to_numpy(float)).all()
    assert (labeled[["valence", "arousal"]].abs().to_numpy(float) <= 10).all()
    assert np.isfinite(labeled[BOX_COLUMNS].to_numpy(float)).all()
    assert frames["frame"].is_unique
    assert all(Path(p).is_relative_to(folder.parent.resolve()) for p in frames["path"])


@given(file=files(valid_annotations()))
def test_annotation_json_reader_returns_checked_frames_or_names_the_file(file):
    content, exact = file
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "afew-va"
        folder = root / "004"
        folder.mkdir(parents=True)
        for i, png in enumerate(PNGS):
            (folder / f"{i:05d}.png").write_bytes(png)
        (folder / "004.json").write_bytes(content)
        before = _snapshot(Path(tmp))
        frames, problems = scan_clip(folder)
        _check_frames(frames, problems, folder)
        event(f"labeled frames kept: {int(frames['labeled'].sum())}")
        if exact is not None:  # a valid file is read whole: every frame, its labels as written
            assert not any(p.fatal for p in problems) and list(frames["frame"]) == [0, 1, 2, 3]
            labeled = frames[frames["labeled"]].set_index("frame")
            assert {f"{i:05d}" for i in labeled.index} == set(exact["frames"])
            for key, entry in exact["frames"].items():
                assert labeled.loc[int(key), ["valence", "arousal"]].tolist() == [entry["valence"], entry["arousal"]]
        try:
            index_dataset(root, "error")
        except BadInputError as err:
            assert exact is None and _names_its_file(err, folder, root)
        assert _snapshot(Path(tmp)) == before


# --- a clip folder's listing -------------------------------------------------------------------------------

entry_names = st.one_of(
    st.integers(0, 12).map(lambda i: f"{i:05d}.png"),
    st.sampled_from(
        [
            "3.png",
            "003.png",
            "00001.PNG",
            "١.png",
            "0000000001.png",
            "123456789.png",
            "004.json",
            "notes.txt",
            ".hidden.png",
            "00002.png.bak",
        ]
    ),
    st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=20),
)
entry_kinds = st.sampled_from(["png", "broken", "empty", "folder", "link_in", "link_out", "dangling"])


@given(entries=st.dictionaries(entry_names, entry_kinds, max_size=8))
def test_clip_folder_listing_never_reads_outside_the_root_or_a_frame_twice(entries):
    with tempfile.TemporaryDirectory() as tmp:
        outside = Path(tmp) / "outside.png"
        outside.write_bytes(PNGS[1])
        root = Path(tmp) / "afew-va"
        folder = root / "004"
        folder.mkdir(parents=True)
        labels = {f"{i:05d}": {"valence": 1, "arousal": -1, "landmarks": GOOD_LANDMARKS} for i in range(13)}
        (root / "frame.png").write_bytes(PNGS[2])
        (folder / "004.json").write_text(json.dumps({"actor": "a", "frames": labels}))
        for name, kind in entries.items():
            path = folder / name
            if name in (".", "..") or len(name.encode()) > 200 or name == "004.json":
                continue
            if kind == "png":
                path.write_bytes(PNGS[0])
            elif kind == "broken":
                path.write_bytes(PNGS[0][:40])
            elif kind == "empty":
                path.write_bytes(b"")
            elif kind == "folder":
                path.mkdir()
            else:
                target = {"link_in": root / "frame.png", "link_out": outside, "dangling": Path(tmp) / "nothing"}[kind]
                path.symlink_to(target)
        before = _snapshot(Path(tmp))
        frames, problems = scan_clip(folder)
        _check_frames(frames, problems, folder)
        read = set(frames["path"])
        event(f"frames kept: {len(read)}")
        for path in folder.iterdir():
            if FRAME_RE.match(path.name):  # every frame file is used, or a problem names it
                assert str(path.resolve()) in read or any(p.path == str(path) for p in problems), path
        assert str(outside.resolve()) not in read
        assert _snapshot(Path(tmp)) == before


# --- the label files of annotated videos (CSV and JSON) ----------------------------------------------------

columns = st.sampled_from(["frame", "time", "valence", "arousal", "actor", "Valence", " arousal", "video", "x"])
cells = st.one_of(numbers.map(str), texts, st.sampled_from(["", "nan", "inf", "1e400", "-0", "1,5", '"3"', "1e-400"]))


@st.composite
def valid_labels(draw) -> list[dict]:
    """Label records that every scale (1 or 10) accepts: distinct frames or times, values in -1..1."""
    key = draw(st.sampled_from(["frame", "time"]))
    at = st.integers(0, 10**6) if key == "frame" else st.floats(0, 1e5)
    return [
        {key: t, "valence": draw(st.floats(-1, 1)), "arousal": draw(st.floats(-1, 1))}
        for t in draw(st.lists(at, unique=True, min_size=1, max_size=8))
    ]


@st.composite
def label_csvs(draw) -> tuple[bytes, list[dict] | None]:
    """A CSV of valid labels with 0-3 cells replaced or dropped; sometimes truncated, re-encoded or bytes."""
    rows = draw(valid_labels())
    table = [list(rows[0]), *([repr(v) for v in row.values()] for row in rows)]
    changes = draw(st.integers(0, 3))
    for _ in range(changes):
        line = draw(st.integers(0, len(table) - 1))
        cell = draw(st.integers(0, len(table[line])))
        if cell == len(table[line]) or draw(st.booleans()):
            table[line].insert(cell, draw(cells) if line else draw(columns))
        else:
            table[line][cell] = draw(cells) if line else draw(columns)
    text = "\n".join(",".join(line) for line in table)
    kind = draw(st.sampled_from(["csv"] * 4 + ["truncated", "encoded", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)), None
    if kind == "truncated":
        return text[: draw(st.integers(0, len(text) - 1))].encode(), None
    if kind == "encoded":
        return text.encode(draw(encodings), errors="replace"), None
    return text.encode(), rows if changes == 0 else None


def _wrapped(labels: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(labels, st.builds(lambda rows, actor: {"actor": actor, "labels": rows}, labels, names))


def _check_labels(path: Path, file: tuple[bytes, object | None], scale: float) -> None:
    content, exact = file
    path.write_bytes(content)
    try:
        table, actor = read_labels(path, scale)
    except BadInputError as err:
        assert exact is None and str(err).startswith(str(path)), err
        event("refused, the file named")
        return
    event("read")
    key = "frame" if "frame" in table.columns else "time"
    assert list(table.columns) == [key, "valence", "arousal"]
    assert len(table) and table[key].is_unique and (table[key] >= 0).all()
    assert np.isfinite(table.to_numpy(float)).all() and (table[["valence", "arousal"]].abs() <= 10).all().all()
    assert actor is None or isinstance(actor, str)
    if exact is not None:  # a valid file: every label, on the -10..10 scale
        rows = exact["labels"] if isinstance(exact, dict) else exact
        want = sorted((r[key], r["valence"] * 10 / scale, r["arousal"] * 10 / scale) for r in rows)
        assert np.allclose(table.to_numpy(float), np.array(want), atol=1e-4)


@given(file=label_csvs(), scale=st.sampled_from([1.0, 10.0]))
def test_csv_label_reader_returns_checked_labels_or_names_the_file(file, scale):
    with tempfile.TemporaryDirectory() as tmp:
        _check_labels(Path(tmp) / "v.csv", file, scale)


@given(file=files(_wrapped(valid_labels())), scale=st.sampled_from([1.0, 10.0]))
def test_json_label_reader_returns_checked_labels_or_names_the_file(file, scale):
    with tempfile.TemporaryDirectory() as tmp:
        _check_labels(Path(tmp) / "v.json", file, scale)


# --- the config, through the schema -------------------------------------------------------------------------

DEFAULT_CONFIG = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))


def _key_paths(node, prefix=()) -> list[tuple]:
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += _key_paths(value, (*prefix, key))
    return paths


KEY_PATHS = _key_paths(DEFAULT_CONFIG)
config_values = st.one_of(
    json_values,
    st.sampled_from(["..", ".", "../x", "/etc", "a/b", "ok", ".hidden"]),
    st.dictionaries(st.sampled_from(["..", "a", "x/y", "b"]), json_values, max_size=2),
)


def _near(default) -> st.SearchStrategy:
    """Values of the default's type near it: most pass the schema, some cross a bound."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-2, 2 * default + 3)
    if isinstance(default, float):
        return st.floats(-0.5, 2 * default + 1) | st.sampled_from([math.nan, math.inf])
    if isinstance(default, str):
        return st.sampled_from([default, default.upper(), "", "x"])
    return st.just(default).map(copy.deepcopy)  # a copy: the test edits it, DEFAULT_CONFIG stays as read


def _default_at(path: tuple):
    node = DEFAULT_CONFIG
    for key in path:
        node = node[key]
    return node


edits = st.sampled_from(KEY_PATHS).flatmap(
    lambda path: st.tuples(st.just(path), _near(_default_at(path)) | config_values)
)


@given(edits=st.lists(edits, min_size=1, max_size=3))
def test_config_is_valid_or_refused_with_the_key_named(edits):
    config = copy.deepcopy(DEFAULT_CONFIG)
    for path, value in edits:
        node = config
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    try:
        validate(config, str(SCHEMA))
        check_config(config)
    except WorkflowError as err:
        assert "On instance" in str(err) or "ValidationError" in str(err), err
        event("refused by the schema")
        return
    except ConfigError as err:
        assert str(err).startswith("config: ")
        event("refused by clipva's own checks")
        return
    event("valid")
    runs = Path("/results/runs")  # every run's results folder is a folder of its own under results/runs
    for name in [config["run"], *config["runs"]]:
        assert (runs / name).resolve().parent == runs and not name.startswith(".")
    assert all(isinstance(x, int | float | str | bool | type(None) | list | dict) for x in config.values())


def test_config_with_nan_a_stride_beyond_the_window_or_a_run_named_dot_dot_is_refused():
    for section, key, value in (("finetune", "lr", math.inf), ("split", "fractions", {"train": math.nan})):
        config = copy.deepcopy(DEFAULT_CONFIG)
        config[section][key] = value if key == "lr" else {**config[section][key], **value}
        validate(config, str(SCHEMA))  # the schema lets NaN and infinity through...
        with pytest.raises(ConfigError, match=r"config: (finetune\.lr|split\.fractions\.train): not a finite"):
            check_config(config)  # ...clipva does not
    wide = {**copy.deepcopy(DEFAULT_CONFIG), "head": {**DEFAULT_CONFIG["head"], "window": 8, "stride": 9}}
    validate(wide, str(SCHEMA))  # nor can the schema compare two settings
    with pytest.raises(ConfigError, match=r"head\.stride \(9\) is larger than head\.window \(8\)"):
        check_config(wide)
    for name in ("..", ".", ".x"):
        with pytest.raises(WorkflowError):
            validate({**copy.deepcopy(DEFAULT_CONFIG), "run": name}, str(SCHEMA))


# --- an exported model's config ------------------------------------------------------------------------------

HEAD = asdict(HeadConfig(in_dim=8, d_model=8, depth=1, heads=2, embed_dim=8))
model_docs = st.fixed_dictionaries(
    {
        "format": st.just("clipva-model"),
        "version": st.just(1),
        "clip": st.builds(
            lambda arch_weights, precision: {
                "model": arch_weights[0],
                "pretrained": arch_weights[1],
                "precision": precision,
            },
            st.sampled_from(
                [
                    ("ViT-B-32", None),
                    ("ViT-B-32", "openai"),
                    ("ViT-B-32", "clip_weights.safetensors"),
                    ("clipva-tiny", None),
                    ("clipva-tiny", "clip_weights.safetensors"),
                ]
            ),
            st.sampled_from(["auto", "fp32", "bf16"]),
        ),
        "face_crop": st.fixed_dictionaries(
            {"method": st.sampled_from(CROP_METHODS), "margin": st.floats(0, 1) | st.integers(0, 2)}
        ),
        "backbone": st.sampled_from(["frozen", "lora"]),
        "head": st.builds(
            lambda kind, smoothing, readout, centres: {
                **HEAD,
                "type": kind,
                "smoothing": smoothing,
                "readout": readout,
                "kernel_centres": centres,
            },
            st.sampled_from(["transformer", "conv", "gru", "none"]),
            st.booleans(),
            st.sampled_from(["linear", "kernel"]),
            st.integers(1, 64),
        ),
        "window": st.integers(1, 64).flatmap(lambda n: st.builds(dict, window=st.just(n), stride=st.integers(1, n))),
    },
)  # valid ones; `files` changes some values, `escaping_docs` points the weights out of the folder
escaping_docs = st.builds(
    lambda doc, weights: ((json.dumps({**doc, "clip": {**doc["clip"], "pretrained": weights}})).encode(), None),
    model_docs,
    st.sampled_from(
        [
            "../outside.safetensors",
            "/etc/passwd",
            "sub/../clip_weights.safetensors",
            "missing.safetensors",
            "link.safetensors",
        ]
    ),
)


@given(file=files(model_docs) | escaping_docs)
def test_model_config_reader_keeps_weights_inside_the_folder_or_names_the_file(file):
    content, exact = file
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "outside.safetensors").write_bytes(b"not weights")
        model = Path(tmp) / "model"
        model.mkdir()
        (model / "clip_weights.safetensors").write_bytes(b"weights")
        (model / "link.safetensors").symlink_to(Path(tmp) / "outside.safetensors")
        (model / MODEL_FILE).write_bytes(content)
        before = _snapshot(Path(tmp))
        try:
            check_files(model)  # the link leads out of the folder: the whole folder is refused
            raise AssertionError("a folder with a link out of it was accepted")
        except BadInputError as err:
            assert str(err).startswith(str(model / "link.safetensors"))
        (model / "link.safetensors").unlink()
        try:
            doc = read_model_config(model)
        except ClipvaError as err:
            assert exact is None and str(err).startswith(str(model / MODEL_FILE)), err
            event("refused, the file named")
        else:
            event(f"read, weights: {doc['clip']['pretrained'] and Path(doc['clip']['pretrained']).name}")
            weights = doc["clip"]["pretrained"]
            assert weights in (None, "openai") or Path(weights) == (model / "clip_weights.safetensors").resolve()
            assert doc["backbone"] in ("frozen", "lora") and doc["face_crop"]["method"] in CROP_METHODS
            assert math.isfinite(doc["face_crop"]["margin"]) and isinstance(doc["head"], HeadConfig)
            TemporalHead(doc["head"])
            assert isinstance(doc["window"], Window)
        del before["model/link.safetensors"]
        assert _snapshot(Path(tmp)) == before


# --- path escapes, one test each -----------------------------------------------------------------------------


def _clip(root: Path, clip: str = "001", **doc) -> Path:
    folder = root / clip
    folder.mkdir(parents=True)
    for i, png in enumerate(PNGS[:3]):
        (folder / f"{i:05d}.png").write_bytes(png)
    labels = {f"{i:05d}": {"valence": 1, "arousal": 2, "landmarks": GOOD_LANDMARKS} for i in range(3)}
    (folder / f"{clip}.json").write_text(json.dumps({"actor": "a", "frames": labels, **doc}))
    return folder


def test_video_id_that_is_a_path_is_refused_not_followed(tmp_path):
    root = tmp_path / "data"
    _clip(root, "001")
    _clip(root, "002", video_id="../../etc")
    frames, problems = index_dataset(root, "skip")
    assert set(frames["clip_id"]) == {"001"}
    assert [p.message for p in problems] == ["video_id '../../etc' disagrees with folder '002'"]
    with pytest.raises(BadInputError, match=re.escape(f"{root / '002' / '002.json'}: video_id '../../etc'")):
        index_dataset(root, "error")


def test_clip_folder_linking_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "data"
    _clip(root, "001")
    elsewhere = _clip(tmp_path / "elsewhere", "002")
    (root / "002").symlink_to(elsewhere)
    with pytest.raises(BadInputError, match=re.escape(f"{root / '002'}: clip folder links out of the data root")):
        index_dataset(root, "error")
    frames, problems = index_dataset(root, "skip")
    assert set(frames["clip_id"]) == {"001"} and len(problems) == 1
    assert not any(str(tmp_path / "elsewhere") in p for p in frames["path"])


def test_frame_or_annotation_linking_out_of_the_root_is_not_read(tmp_path):
    root = tmp_path / "data"
    folder = _clip(root, "001")
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNGS[3])
    (folder / "00001.png").unlink()
    (folder / "00001.png").symlink_to(secret)
    frames, problems = index_dataset(root, "skip")
    assert list(frames["frame"]) == [0, 2] and str(secret) not in set(frames["path"])
    assert [(p.frame, p.message[:26]) for p in problems if p.fatal] == [("00001", "links out of the data root")]
    inside_link = root / "001" / "00005.png"  # a link that stays in the root is a frame like any other
    inside_link.symlink_to(folder / "00000.png")
    assert 5 in set(index_dataset(root, "skip")[0]["frame"])
    (folder / "00001.png").unlink()
    (folder / "00001.png").write_bytes(PNGS[1])
    (folder / "001.json").rename(tmp_path / "001.json")
    (folder / "001.json").symlink_to(tmp_path / "001.json")
    with pytest.raises(BadInputError, match="001.json: links out of the data root"):
        index_dataset(root, "error")


def _exported(tmp_path: Path, pretrained: str | None = None, **head_settings) -> Path:
    """A model folder exported from a real (untrained) head checkpoint."""
    head = TemporalHead(HeadConfig(**{**HEAD, **head_settings}))
    if head.cfg.readout == "kernel":
        head.set_kernel(torch.randn(5, HEAD["in_dim"], dtype=torch.float64), 0.1)
        torch.nn.init.normal_(head.kernel.weight)
    save_head(tmp_path / "best.pt", head, Window(16, 8))
    settings = {
        "clip": {"model": "clipva-tiny", "pretrained": pretrained, "precision": "fp32"},
        "face_crop": {"method": "landmarks", "margin": 0.2},
        "training": {"backbone": "frozen"},
    }
    export_model(
        tmp_path / "model",
        tmp_path / "best.pt",
        tmp_path / "no adapter",
        settings,
        None,
        {"dataset": "test", "split": "none"},
    )
    return tmp_path / "model"


def test_model_config_pointing_at_weights_outside_its_folder_is_refused(tmp_path):
    model = _exported(tmp_path)
    (tmp_path / "stolen.safetensors").write_bytes(b"x")
    doc = json.loads((model / MODEL_FILE).read_text())
    for weights in ("../stolen.safetensors", str(tmp_path / "stolen.safetensors")):
        doc["clip"]["pretrained"] = weights
        (model / MODEL_FILE).write_text(json.dumps(doc))
        with pytest.raises(BadInputError, match="nor a checkpoint file inside the model folder"):
            read_model_config(model)


@pytest.mark.parametrize("planted", ["head.pt", "adapter/adapter_model.bin", "extra.pkl", "run.py"])
def test_a_pickle_or_code_planted_in_a_model_folder_is_refused_and_never_loaded(tmp_path, planted, monkeypatch):
    model = _exported(tmp_path)
    path = model / planted
    path.parent.mkdir(exist_ok=True)
    torch.save({"state_dict": {}}, path)  # a pickle (torch's zip format)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called on a model folder"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle.load called on a model folder"))
    with pytest.raises(BadInputError, match=re.escape(f"{path}: not part of a clipva model")):
        load_model(model)


def test_exported_model_holds_no_pickle_and_loads_the_same_head(tmp_path):
    model = _exported(tmp_path)
    files = sorted(str(p.relative_to(model)) for p in model.rglob("*"))
    assert files == ["README.md", "head.safetensors", "model.json"]
    assert not any(p.read_bytes()[:2] in (b"PK", b"\x80\x02") for p in model.iterdir())  # no zip, no pickle
    head, _ = load_head(tmp_path / "best.pt")
    doc = read_model_config(model)
    loaded = load_head_weights(model, doc["head"], torch.device("cpu"))
    x = torch.randn(2, 16, 8)
    torch.testing.assert_close(loaded(x), head.eval()(x), rtol=0, atol=0)
    assert doc["window"] == Window(16, 8)
    assert json.loads((model / MODEL_FILE).read_text())["window"] == {"window": 16, "stride": 8}
    doc = json.loads((model / MODEL_FILE).read_text())
    (model / MODEL_FILE).write_text(json.dumps({**doc, "window": {"window": 8, "stride": 9}}))
    with pytest.raises(BadInputError, match=r"model\.json: window .*1 <= stride <= window"):
        read_model_config(model)  # the frames between two windows would get no prediction
    card = (model / "README.md").read_text()
    assert "Intended use" in card and "clipva-tiny" in card and "random initialisation" in card


def test_annotated_video_linking_out_of_the_data_root_is_refused(tmp_path):
    root, elsewhere = tmp_path / "videos", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (elsewhere / "clip.mp4").write_bytes(b"")
    (elsewhere / "clip.csv").write_text("frame,valence,arousal\n0,1,1\n")
    (root / "clip.mp4").symlink_to(elsewhere / "clip.mp4")
    (root / "clip.csv").write_text("frame,valence,arousal,video\n0,1,1,/etc/passwd\n")
    with pytest.raises(BadInputError, match=re.escape(f"{root / 'clip.mp4'}: links out of the data root")):
        convert_annotated_videos(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    os.remove(root / "clip.mp4")


def test_label_file_columns_that_are_not_labels_are_ignored_and_said(tmp_path, caplog):
    path = tmp_path / "clip.csv"
    path.write_text("frame,valence,arousal,video\n0,1,1,/etc/passwd\n")
    table, _ = read_labels(path)
    assert list(table.columns) == ["frame", "valence", "arousal"]
    assert f"{path}: ignored columns: 'video'" in caplog.text


def test_exported_model_carries_its_local_checkpoint_inside_the_folder_as_safetensors(tmp_path):
    from clipva.encoder import load_clip

    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    checkpoint = tmp_path / "weights" / "my.pt"
    checkpoint.parent.mkdir()
    torch.save({"state_dict": {f"module.{k}": v for k, v in clip.model.state_dict().items()}}, checkpoint)
    model = _exported(tmp_path, str(checkpoint))
    assert json.loads((model / MODEL_FILE).read_text())["clip"]["pretrained"] == "clip_weights.safetensors"
    shutil.move(model, tmp_path / "moved")  # the folder travels whole
    doc = read_model_config(tmp_path / "moved")
    assert doc["clip"]["pretrained"] == str((tmp_path / "moved" / "clip_weights.safetensors").resolve())
    again = load_clip("clipva-tiny", doc["clip"]["pretrained"], "fp32", "cpu")
    for (name, want), got in zip(clip.model.state_dict().items(), again.model.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)


def test_a_kernel_readout_head_exports_and_loads_the_same_and_too_many_centres_are_refused(tmp_path):
    model = _exported(tmp_path, readout="kernel", kernel_centres=12)
    head, _ = load_head(tmp_path / "best.pt")
    doc = read_model_config(model)
    loaded = load_head_weights(model, doc["head"], torch.device("cpu"))
    x = torch.randn(2, 16, 8)
    assert loaded(x)[0].abs().max() > 0
    torch.testing.assert_close(loaded(x), head.eval()(x), rtol=0, atol=0)
    raw = json.loads((model / MODEL_FILE).read_text())
    (model / MODEL_FILE).write_text(json.dumps({**raw, "head": {**raw["head"], "kernel_centres": 10**9}}))
    with pytest.raises(BadInputError, match=r"model\.json: head .* cannot be built \(head kernel_centres"):
        read_model_config(model)
