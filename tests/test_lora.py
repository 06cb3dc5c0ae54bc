import json

import numpy as np
import pytest
import torch

from clipva.afew import index_dataset
from clipva.checkpoints import ResumeState, save_head
from clipva.encoder import encode_images, load_clip
from clipva.errors import ConfigError
from clipva.extract import extract_features
from clipva.feature_sources import AdaptedFrames
from clipva.frames import FrameWindows
from clipva.head import HeadConfig, TemporalHead
from clipva.lora import add_adapters, export_merged, load_adapters, save_adapters
from clipva.model_folder import export_model
from clipva.predict import load_model
from clipva.store import ClipFeatures, FeatureStore
from clipva.training import finetune, validation_ccc
from clipva.windows import Window

LORA = {
    "r": 4,
    "alpha": 8,
    "dropout": 0.0,
    "target_modules": ["attn", "c_fc", "c_proj"],
    "lr": 5e-3,
    "num_workers": 0,
    "grad_checkpointing": False,
    "max_frames_per_step": 256,
    "seed": 0,
    "augment": {"crop_jitter": 0.05, "flip": True, "colour": 0.2},
}
CROP = {"method": "landmarks", "margin": 0.2}


def _lora_b(visual):
    return {k: v.detach().clone() for k, v in visual.named_parameters() if "lora_B" in k}


def test_only_adapters_train_and_the_text_tower_stays_frozen():
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    visual = add_adapters(clip, LORA)
    trainable = {n for n, p in clip.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any(".attn." in n for n in trainable) and any("c_fc" in n for n in trainable)
    assert not any(p.requires_grad for p in clip.model.transformer.parameters())  # the text tower
    assert not any(p.requires_grad for n, p in visual.named_parameters() if "lora_" not in n)


@pytest.mark.parametrize("targets", [["out_proj"], ["attn", "out_proj", "c_fc"]])
def test_out_proj_is_refused(targets):
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    with pytest.raises(ConfigError, match="out_proj is never used"):
        add_adapters(clip, {**LORA, "target_modules": targets})


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_training_leaves_the_base_weights_bit_identical(precision):
    """peft's adapter for a whole nn.MultiheadAttention adds the update to the base weights and subtracts it
    again at every forward, which rounds half-precision weights a little each time; the attention adapter is a
    parametrization instead, so no base weight ever changes."""
    clip = load_clip("clipva-tiny", None, precision, "cpu")
    visual = add_adapters(clip, {**LORA, "dropout": 0.1})
    base = {n: p.detach().clone() for n, p in visual.named_parameters() if not p.requires_grad}
    assert any("in_proj_weight" in n for n in base)
    opt = torch.optim.AdamW([p for p in visual.parameters() if p.requires_grad], lr=5e-2)
    images = torch.randn(4, 3, 64, 64, dtype=clip.dtype)
    for _ in range(4):
        visual(images).float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    after = {n: p.detach() for n, p in visual.named_parameters() if not p.requires_grad}
    assert after.keys() == base.keys()
    assert all(torch.equal(after[n], base[n]) for n in base), [n for n in base if not torch.equal(after[n], base[n])]
    assert any(isinstance(m, torch.nn.Dropout) for m in visual.modules())  # dropout on the MLP adapters


def test_gradient_checkpointing_is_per_block(monkeypatch):
    import open_clip.transformer

    checkpointed = []

    def counting(function, *args, **kwargs):
        checkpointed.append(function)
        return torch.utils.checkpoint.checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(open_clip.transformer, "checkpoint", counting)
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    visual = add_adapters(clip, {**LORA, "grad_checkpointing": True})
    visual(torch.randn(2, 3, 64, 64)).sum().backward()
    assert checkpointed == list(visual.get_base_model().transformer.resblocks)  # one checkpoint per block
    assert all(p.grad is not None for p in visual.parameters() if p.requires_grad)


def test_a_step_moves_the_adapters_and_changes_the_outputs(tmp_path):
    torch.manual_seed(0)
    images = torch.randn(4, 3, 64, 64)
    frozen = encode_images(load_clip("clipva-tiny", None, "fp32", "cpu"), images)
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    visual = add_adapters(clip, LORA)
    assert torch.allclose(visual(images), frozen, atol=1e-5)  # lora_B starts at zero: identity
    before = _lora_b(visual)
    opt = torch.optim.AdamW([p for p in visual.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = (visual(images) - 1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _lora_b(visual)
    assert all(not torch.equal(before[k], after[k]) for k in before)
    visual.eval()
    adapted = visual(images).detach()
    assert (adapted - frozen).abs().max() > 1e-3

    # peft's own format, loaded back for inference, gives the same outputs
    save_adapters(visual, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert json.loads((tmp_path / "adapter/adapter_config.json").read_text())["r"] == 4
    reloaded = load_adapters(load_clip("clipva-tiny", None, "fp32", "cpu"), tmp_path / "adapter")
    assert torch.allclose(reloaded(images), adapted, atol=1e-5)

    # in a shareable model folder: safetensors and JSON only, and the same adapted tower once loaded
    in_dim = load_clip("clipva-tiny", None, "fp32", "cpu").embed_dim
    save_head(tmp_path / "best.pt", TemporalHead(HeadConfig(in_dim, 8, 1, 2, embed_dim=8)), Window(8, 4))
    settings = {
        "clip": {"model": "clipva-tiny", "pretrained": None, "precision": "fp32"},
        "face_crop": {"method": "none", "margin": 0.0},
        "training": {"backbone": "lora"},
    }
    export_model(tmp_path / "model", tmp_path / "best.pt", tmp_path / "adapter", settings)
    assert {p.suffix for p in (tmp_path / "model").rglob("*") if p.is_file()} <= {".json", ".md", ".safetensors"}
    assert (tmp_path / "model/adapter/adapter_model.safetensors").is_file()
    assert torch.allclose(load_model(tmp_path / "model").visual(images), adapted, atol=1e-5)

    # merged into the base weights, exported, and loaded through clip.pretrained
    export_merged("clipva-tiny", None, tmp_path / "adapter", tmp_path / "merged.pt")
    merged = load_clip("clipva-tiny", str(tmp_path / "merged.pt"), "fp32", "cpu")
    assert torch.allclose(encode_images(merged, images), adapted, atol=1e-4)


def test_frame_windows_keep_a_window_consistent(demo_root):
    frames, _ = index_dataset(demo_root)
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    clip_id = frames["clip_id"].iloc[0]
    idx = frames.loc[frames["clip_id"] == clip_id, "frame"].to_numpy()[:4]
    plain = FrameWindows(frames, [(clip_id, idx)], clip.preprocess, CROP)[0]
    assert plain.shape == (4, 3, 64, 64)
    a = FrameWindows(frames, [(clip_id, idx)], clip.preprocess, CROP, LORA["augment"], seed=1)[0]
    b = FrameWindows(frames, [(clip_id, idx)], clip.preprocess, CROP, LORA["augment"], seed=1)[0]
    assert torch.equal(a, b) and not torch.equal(a, plain)


def test_finetuning_with_lora_trains_the_adapters(demo_root, tmp_path):
    frames, _ = index_dataset(demo_root)
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    extract_features(frames, str(tmp_path / "f.h5"), clip, CROP, None, batch_size=16, num_workers=0, progress=False)
    with FeatureStore(tmp_path / "f.h5") as store:
        clips = [c for c in store.load_many(store.clip_ids) if c.labeled.any()]
    train, val = clips[:6], clips[6:]
    torch.manual_seed(0)  # the head's and the adapters' initialisation: whatever ran before
    head = TemporalHead(HeadConfig(in_dim=64, d_model=32, depth=1, heads=2, embed_dim=16))
    head.set_feature_stats(torch.from_numpy(np.concatenate([c.features for c in train])))
    visual = add_adapters(clip, LORA)
    before = _lora_b(visual)
    backbone = AdaptedFrames(clip, visual, frames, CROP, LORA)
    cfg = {
        "epochs": 2,
        "batch_size": 4,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "warmup_epochs": 0,
        "loss": "mix",
        "ccc_weight": 0.5,
        "patience": 5,
        "seed": 0,
        "linear_init": False,
    }
    window = Window(8, 4)
    resume = ResumeState(tmp_path / "state.pt", "test")
    tuned, history, best = finetune(train, val, head, window, cfg, resume, backbone=backbone)
    assert len(history) == 2
    trained = resume.load()["backbone"]  # the adapters after the last epoch
    assert all(not torch.equal(before[k], trained[k]) for k in before)
    # the best epoch's head and adapters (or the start's) are what finetune leaves behind
    assert validation_ccc(tuned, val, window, backbone)["mean"] == pytest.approx(best["val_mean_ccc"], abs=1e-6)
    after = _lora_b(visual)
    best_adapters = trained if best["epoch"] == 1 else before if best["epoch"] == -1 else None
    assert best_adapters is None or all(torch.equal(after[k], best_adapters[k]) for k in before)
    backbone.load_state_dict(trained)
    backbone.train(False)
    adapted = backbone.features_of(val[:1])[0]
    assert adapted.shape == val[0].features.shape
    assert np.abs(adapted - val[0].features).max() > 1e-3  # the adapters change the image features


def test_padding_does_not_go_through_the_tower(demo_root):
    frames, _ = index_dataset(demo_root)
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    visual = add_adapters(clip, LORA)
    backbone = AdaptedFrames(clip, visual, frames, CROP, LORA)
    backbone.train(False)  # no augmentation or dropout: the same frames give the same features
    seen = []
    visual.register_forward_hook(lambda _m, args, _out: seen.append(len(args[0])))
    clip_id = frames["clip_id"].iloc[0]
    n = int((frames["clip_id"] == clip_id).sum())
    fake = [ClipFeatures(clip_id, np.zeros((n, 64), np.float32), np.arange(n), np.zeros(n), np.zeros(n))]
    batch = next(backbone.epoch_batches(fake, [[(0, 0, 8), (0, 2, 5)]], 0, torch.device("cpu")))
    assert seen == [8 + 3]
    assert batch["x"].shape == (2, 8, 64) and batch["mask"].sum(1).tolist() == [8, 3]
    assert torch.all(batch["x"][1, 3:] == 0) and torch.all(batch["x"][1, :3].abs().sum(-1) > 0)
    alone = next(backbone.epoch_batches(fake, [[(0, 2, 5)]], 0, torch.device("cpu")))["x"][0]
    assert torch.allclose(alone, batch["x"][1, :3], atol=1e-5)  # the same frames, whatever the batch


def test_clip_features_are_encoded_once_until_the_adapters_train(demo_root):
    frames, _ = index_dataset(demo_root)
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    visual = add_adapters(clip, LORA)
    backbone = AdaptedFrames(clip, visual, frames, CROP, LORA)
    seen = []
    visual.register_forward_hook(lambda _m, args, _out: seen.append(len(args[0])))
    clips = []
    for clip_id, rows in list(frames.groupby("clip_id"))[:3]:
        n = len(rows)
        clips.append(
            ClipFeatures(clip_id, np.zeros((n, 64), np.float32), rows["frame"].to_numpy(), np.zeros(n), np.zeros(n))
        )
    backbone.train(False)
    first = backbone.features_of(clips)
    assert [len(f) for f in first] == [len(c.frame_index) for c in clips] and sum(seen) == sum(map(len, first))
    backbone.train(False)  # evaluation again (e.g. each ridge alpha): no re-encoding
    assert all(np.array_equal(a, b) for a, b in zip(first, backbone.features_of(clips), strict=True))
    assert sum(seen) == sum(map(len, first))
    backbone.train(True)  # the adapters will change
    backbone.train(False)
    backbone.features_of(clips[:1])
    assert sum(seen) == sum(map(len, first)) + len(first[0])


def test_auto_frame_budget_follows_memory_and_checkpointing(monkeypatch):
    import clipva.feature_sources as feature_sources

    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    visual = add_adapters(clip, LORA)
    per_frame = feature_sources.activation_bytes_per_frame(visual, False)
    assert per_frame == 17 * 64 * 24 * 2  # 4x4 patches + class token, width 64, 2 blocks
    assert feature_sources.activation_bytes_per_frame(visual, True) < per_frame
    monkeypatch.setattr(feature_sources, "available_memory", lambda device: 1 << 30)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert feature_sources.frame_budget("auto", visual, cpu, False) == int(0.25 * (1 << 30) / per_frame)
    assert feature_sources.frame_budget("auto", visual, cuda, False) == int(0.7 * (1 << 30) / per_frame)
    budget = feature_sources.frame_budget
    assert budget("auto", visual, cuda, True) > budget("auto", visual, cuda, False)
    assert feature_sources.frame_budget(16, visual, cuda, False) == 16


def test_a_step_too_large_for_memory_is_refused_before_it_runs(demo_root):
    frames, _ = index_dataset(demo_root)
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    small = {**LORA, "max_frames_per_step": 16}
    backbone = AdaptedFrames(clip, add_adapters(clip, LORA), frames, CROP, small)
    clip_id = frames["clip_id"].iloc[0]
    n = int((frames["clip_id"] == clip_id).sum())
    fake = [ClipFeatures(clip_id, np.zeros((n, 64), np.float32), np.arange(n), np.zeros(n), np.zeros(n))]
    with pytest.raises(ConfigError, match="max_frames_per_step=16"):
        next(backbone.epoch_batches(fake, [[(0, 0, 8), (0, 0, 8), (0, 0, 8)]], 0, torch.device("cpu")))
