"""Device placement without a GPU: the training, evaluation and LoRA paths run on a simulated CUDA device
(tests/simulated_cuda.py), where a tensor left on the host by mistake raises as it would on a real GPU.
The tests marked `gpu` run the same paths on a real one and are skipped without it."""

import contextlib

import numpy as np
import pytest
import torch
from simulated_cuda import DeviceMismatch, place_of, simulated_cuda
from test_training import FINETUNE, PRETRAIN, WINDOW, _clips, _head

from clipva.afew import index_dataset
from clipva.encoder import load_clip
from clipva.feature_sources import AdaptedFrames
from clipva.head import HeadConfig
from clipva.lora import add_adapters
from clipva.losses import regression_loss, temporal_contrastive_loss, vision_language_loss
from clipva.sequences import predict_clip, predictions_table
from clipva.training import finetune, init_linear_from_ridge, pretrain, validation_ccc
from clipva.windows import Window

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    return {"train": _clips(16, 0), "val": _clips(4, 1)}


def test_the_simulation_catches_what_cuda_refuses():
    with simulated_cuda() as cuda:
        x = torch.ones(3, 4, device=cuda)
        assert x.device == cuda and place_of(x.sum(0)) == "cuda"
        with pytest.raises(DeviceMismatch):
            x + torch.ones(3, 4)
        with pytest.raises(TypeError, match="numpy"):
            x.numpy()
        assert (x * torch.tensor(2.0)).device == cuda  # a host scalar is fine, as on CUDA
        layer = torch.nn.Linear(4, 2)
        with pytest.raises(DeviceMismatch):
            layer(x)  # its weights are still on the host
        assert layer.to(cuda)(x).detach().cpu().numpy().shape == (3, 2)
        with pytest.raises(DeviceMismatch):
            x + torch.from_numpy(np.ones((3, 4), np.float32))  # made from host memory, never moved
        with pytest.raises(DeviceMismatch):
            x[x > 0] = torch.zeros(12)  # values from the host written into device memory


def test_head_and_losses_run_on_the_device():
    with simulated_cuda() as cuda:
        head = _head().to(cuda)
        x, mask = torch.randn(4, 12, 16, device=cuda), torch.ones(4, 12, dtype=torch.bool, device=cuda)
        va, pooled = head(x, mask)
        y = torch.rand(4, 12, 2, device=cuda) * 2 - 1
        for kind in ("mse", "ccc", "mix"):
            regression_loss(va, y, mask, kind).backward(retain_graph=True)
        temporal_contrastive_loss(pooled, pooled.flip(0), 0.1, torch.arange(4, device=cuda)).backward(retain_graph=True)
        text = torch.randn(9, 16, device=cuda)
        vision_language_loss(pooled, text, torch.tensor([0, 3, 3, 8], device=cuda)).backward()
        assert predict_clip(head, np.random.default_rng(0).normal(size=(40, 16)), Window(12, 6)).shape == (40, 2)


def test_ridge_start_runs_on_the_device(data):
    """The ridge fit's identity matrix was made on the host (training.py, before the GPU issue)."""
    with simulated_cuda() as cuda:
        head = _head()
        head.set_feature_stats(torch.from_numpy(np.concatenate([c.features for c in data["train"]])))
        head.to(cuda)
        fit = init_linear_from_ridge(head, data["train"], data["val"], WINDOW)
        assert place_of(head.linear.weight) == "cuda" and np.isfinite(fit["val_mean_ccc"])


def test_pretraining_and_finetuning_run_on_the_device_as_on_the_host(data):
    text = np.random.default_rng(0).normal(size=(9, 8)).astype(np.float32)
    cfg = HeadConfig(in_dim=16, d_model=32, depth=1, heads=2, embed_dim=16, dropout=0.0)
    runs = {}
    for name in ("host", "device"):
        with simulated_cuda() if name == "device" else contextlib.nullcontext(CPU) as device:
            head, pre = pretrain(data["train"], cfg, WINDOW, {**PRETRAIN, "epochs": 1}, text, device=device)
            tuned, history, best = finetune(
                data["train"], data["val"], head, WINDOW, {**FINETUNE, "epochs": 2}, device=device
            )
            table = predictions_table(tuned.to(device), data["val"], "val", WINDOW)
            runs[name] = (pre, history, table)
    # the simulated device computes on the host: the same numbers (to rounding), so nothing was skipped
    for k in (0, 1):
        assert runs["device"][k] == [pytest.approx(record, rel=1e-6) for record in runs["host"][k]]
    pred = ["valence_pred", "arousal_pred"]
    assert np.allclose(runs["device"][2][pred], runs["host"][2][pred], atol=1e-5)


def test_a_lora_step_and_its_evaluation_run_on_the_device(demo_root):
    frames, _ = index_dataset(demo_root)
    lora = {
        "r": 4,
        "alpha": 8,
        "dropout": 0.0,
        "target_modules": ["attn", "c_fc", "c_proj"],
        "lr": 5e-3,
        "num_workers": 0,
        "grad_checkpointing": True,
        "max_frames_per_step": 256,
        "seed": 0,
        "augment": {"crop_jitter": 0.05, "flip": True, "colour": 0.2},
    }
    crop = {"method": "landmarks", "margin": 0.2}
    clip_ids = sorted(frames["clip_id"].unique())[:4]
    clips = []
    for clip_id in clip_ids:
        rows = frames[frames["clip_id"] == clip_id]
        n = len(rows)
        va = np.linspace(-5, 5, n, dtype=np.float32)
        clips.append(_clip_features(clip_id, rows["frame"].to_numpy(), va))
    with simulated_cuda() as cuda:
        clip = load_clip("clipva-tiny", None, "fp32", "cpu")
        visual = add_adapters(clip, lora).to(cuda)
        clip.device = cuda
        backbone = AdaptedFrames(clip, visual, frames, crop, lora)
        head = _head(64)
        head.set_feature_stats(torch.randn(50, 64))
        cfg, window = {**FINETUNE, "epochs": 1, "batch_size": 2}, Window(6, 3)
        _, history, _ = finetune(clips[:3], clips[3:], head, window, cfg, device=cuda, backbone=backbone)
        assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
        assert np.isfinite(validation_ccc(head.to(cuda), clips[3:], window, backbone)["mean"])


def _clip_features(clip_id, frame_index, va):
    from clipva.store import ClipFeatures

    return ClipFeatures(clip_id, np.zeros((len(frame_index), 64), np.float32), frame_index, va, -va)


@pytest.mark.gpu
def test_finetuning_on_a_real_gpu(data):
    cuda = torch.device("cuda")
    head, _ = pretrain(
        data["train"],
        HeadConfig(in_dim=16, d_model=32, depth=1, heads=2, embed_dim=16),
        WINDOW,
        {**PRETRAIN, "epochs": 1},
        np.ones((9, 8), np.float32),
        device=cuda,
    )
    _, history, _ = finetune(data["train"], data["val"], head, WINDOW, {**FINETUNE, "epochs": 2}, device=cuda)
    assert len(history) == 2 and np.isfinite(history[-1]["val_mean_ccc"])
