import json

import numpy as np
import pytest
import torch

from clipva.afew import index_dataset
from clipva.backbones import AdaptedFrames
from clipva.encoder import encode_images, load_clip
from clipva.errors import ConfigError
from clipva.extract import extract_features
from clipva.frames import FrameWindows
from clipva.head import HeadConfig, TemporalHead
from clipva.lora import add_adapters, export_merged, load_adapters, save_adapters
from clipva.store import ClipFeatures, FeatureStore
from clipva.training import finetune

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["attn", "c_fc", "c_proj"], "lr": 5e-3,
        "num_workers": 0, "grad_checkpointing": False, "max_frames_per_step": 256, "seed": 0,
        "augment": {"crop_jitter": 0.05, "flip": True, "colour": 0.2}}  # fmt: skip
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


def test_out_proj_alone_is_refused():
    clip = load_clip("clipva-tiny", None, "fp32", "cpu")
    with pytest.raises(ConfigError, match="out_proj alone is never used"):
        add_adapters(clip, {**LORA, "target_modules": ["out_proj"]})


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

    # merged into the base weights, exported, and loaded through clip.pretrained
    export_merged(clip, visual, tmp_path / "merged.pt")
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
    head = TemporalHead(HeadConfig(in_dim=64, d_model=32, depth=1, heads=2, embed_dim=16))
    head.set_feature_stats(torch.from_numpy(np.concatenate([c.features for c in train])))
    visual = add_adapters(clip, LORA)
    before = _lora_b(visual)
    backbone = AdaptedFrames(clip, visual, frames, CROP, LORA)
    cfg = {"epochs": 2, "batch_size": 4, "lr": 1e-3, "weight_decay": 0.0, "warmup_epochs": 0, "loss": "mix",
           "ccc_weight": 0.5, "patience": 5, "seed": 0, "linear_init": False}  # fmt: skip
    window = {"window": 8, "stride": 4}
    _, history, best = finetune(train, val, head, window, cfg, backbone=backbone)
    assert len(history) == 2 and best["epoch"] == 0  # seeded: the first trained epoch is the best one
    after = _lora_b(visual)  # the best epoch's adapters, restored at the end
    assert all(not torch.equal(before[k], after[k]) for k in before)
    backbone.train(False)
    adapted = backbone.clip_features(val[0])
    assert adapted.shape == val[0].features.shape
    assert np.abs(adapted - val[0].features).max() > 1e-3  # the adapters change the image features


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
