"""Temporal head: CLIP frame features -> per-frame valence/arousal and a pooled clip embedding.

Per frame, a readout of the whitened features (started from a ridge fit) plus a correction from a temporal
encoder (transformer, temporal convolution or bidirectional GRU); then a learned Gaussian smoothing over time,
so that the curves move as much as the labels do and no more. The readout is linear in the whitened features;
with ``readout: kernel`` a second path, linear in their Nystroem features for a Gaussian kernel (kernel ridge
regression that scales with the number of centres, not of training frames), corrects it.
"""

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
from torch import Tensor


@dataclass
class HeadConfig:
    in_dim: int  # CLIP image embedding width
    d_model: int = 128
    depth: int = 2
    heads: int = 4
    dropout: float = 0.1
    max_len: int = 256  # longest window the positional encoding supports
    embed_dim: int = 128  # width of the pooled clip embedding used by contrastive pretraining
    input_dropout: float = 0.0  # dropout on the whitened frame features
    whitening_eps: float = 1.0  # shrinkage of the whitening, as a fraction of the mean feature variance
    type: str = "transformer"  # temporal encoder: transformer | conv | gru | none (the readout alone)
    smoothing: bool = True  # learned Gaussian smoothing of the per-frame outputs over time
    output: str = "linear"  # linear (clamped to -1..1 when predicting) | tanh
    readout: str = "linear"  # per-frame readout: linear | kernel (linear plus a Gaussian kernel correction)
    kernel_centres: int = 1024  # training frames the kernel correction is expanded on
    kernel_share: float = 0.25  # share of the features' principal directions (the leading ones) the kernel sees
    centre: str = "none"  # the features it reads: as stored (none) or minus their actor's mean feature (actor)


def sinusoidal_encoding(max_len: int, d_model: int) -> Tensor:
    """Fixed sine/cosine positional encoding, (max_len, d_model)."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return pe


class TemporalHead(nn.Module):
    """Pre-norm transformer encoder over a window of frame features."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        # Whitening of the frame features with training-set statistics (set_feature_stats): in frozen CLIP
        # features (random-init ones above all) the label signal lies in low-variance directions, which
        # gradient descent on raw or standardised features barely reaches.
        self.register_buffer("feature_mean", torch.zeros(cfg.in_dim))
        self.register_buffer("whitening", torch.eye(cfg.in_dim))
        self.in_drop = nn.Dropout(cfg.input_dropout)
        self.in_norm = nn.LayerNorm(cfg.in_dim)
        self.in_proj = nn.Linear(cfg.in_dim, cfg.d_model)
        self.register_buffer("pe", sinusoidal_encoding(cfg.max_len, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.type not in HEAD_TYPES:
            raise ValueError(f"head type {cfg.type!r} is not one of {', '.join(HEAD_TYPES)}")
        if cfg.output not in ("tanh", "linear"):
            raise ValueError(f"head output {cfg.output!r} is not tanh or linear")
        if cfg.readout not in ("linear", "kernel"):
            raise ValueError(f"head readout {cfg.readout!r} is not linear or kernel")
        if not 1 <= cfg.kernel_centres <= MAX_KERNEL_CENTRES:
            raise ValueError(f"head kernel_centres {cfg.kernel_centres} is not in 1..{MAX_KERNEL_CENTRES}")
        if not 0 < cfg.kernel_share <= 1:
            raise ValueError(f"head kernel_share {cfg.kernel_share} is not in (0, 1]")
        if cfg.centre not in CENTRES:
            raise ValueError(f"head centre {cfg.centre!r} is not one of {', '.join(CENTRES)}")
        self.layers = nn.ModuleList(_encoder_layer(cfg, i) for i in range(cfg.depth if cfg.type != "none" else 0))
        # log of the smoothing's standard deviation in frames, per output; set by fine-tuning's start
        self.log_sigma = nn.Parameter(torch.zeros(2), requires_grad=cfg.smoothing)
        self.out_norm = nn.LayerNorm(cfg.d_model)
        self.va = nn.Linear(cfg.d_model, 2)
        # A per-frame linear path from the whitened features, zero until fine-tuning starts it from a ridge
        # fit (linear probe, then fine-tune): the transformer then learns the temporal correction.
        self.linear = nn.Linear(cfg.in_dim, 2)
        # With the kernel readout a second per-frame path, linear in the Nystroem features
        # exp(-gamma |z - c|^2) @ K_cc^(-1/2) of the whitened frame z for centres c (set_kernel), started from
        # kernel ridge on the linear fit's residuals: the probe can bend where the data asks for it, and for a
        # frame far from every centre (an unseen face) the correction fades and the linear path remains.
        # Its distances are measured within the features' leading principal directions (kernel_share of them)
        # (kernel_projection, set with the whitening): whitening lifts the many low-variance directions
        # towards the scale of the leading ones, and summed over hundreds of them the small differences that
        # carry no label (compression, another face's details) outweigh those that do.
        # Nothing of it exists with a linear readout, so those checkpoints and model folders stay as they were.
        kernel = cfg.readout == "kernel"
        m = cfg.kernel_centres if kernel else 0
        self.register_buffer("kernel_projection", torch.eye(cfg.in_dim if kernel else 0), persistent=kernel)
        self.register_buffer("centres", torch.zeros(m, cfg.in_dim), persistent=kernel)
        self.register_buffer("nystroem", torch.zeros(m, m), persistent=kernel)
        self.register_buffer("kernel_gamma", torch.ones(()), persistent=kernel)
        self.kernel = nn.Linear(m, 2) if kernel else None
        if self.kernel is not None:
            nn.init.zeros_(self.kernel.weight)
            nn.init.zeros_(self.kernel.bias)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.pool_proj = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, cfg.embed_dim)
        )
        self.register_load_state_dict_pre_hook(_all_directions_if_unsaved)

    @torch.no_grad()
    def set_feature_stats(self, features: Tensor) -> None:
        """Whiten inputs with the mean and (shrunk) covariance of `features` (N, in_dim), e.g. all training
        frames: x -> (x - mean) @ (cov + eps I)^(-1/2), eps = whitening_eps * mean variance."""
        x = features.double()
        mean = x.mean(0)
        self.set_feature_moments(mean, torch.cov((x - mean).T).reshape(x.shape[1], x.shape[1]))

    @torch.no_grad()
    def set_feature_moments(self, mean: Tensor, cov: Tensor) -> None:
        """set_feature_stats from the features' mean and covariance (computed elsewhere, e.g. streamed)."""
        mean, cov = mean.double(), cov.double()
        eigval, eigvec = torch.linalg.eigh(cov)
        eps = self.cfg.whitening_eps * eigval.clamp_min(0).mean() + 1e-12
        self.feature_mean.copy_(mean)
        self.whitening.copy_(eigvec @ torch.diag((eigval.clamp_min(0) + eps).rsqrt()) @ eigvec.T)
        if self.cfg.readout == "kernel":  # whitening keeps the eigenvectors: the leading ones of the features
            lead = eigvec[:, -max(1, round(self.cfg.kernel_share * len(eigval))) :]
            full = lead.shape[1] == len(eigval)
            self.kernel_projection.copy_(torch.eye(len(eigval)) if full else lead @ lead.T)

    def whiten(self, x: Tensor) -> Tensor:
        return (x - self.feature_mean) @ self.whitening

    @torch.no_grad()
    def set_kernel(self, centres: Tensor, gamma: float) -> None:
        """The kernel readout's expansion: `centres` (at most kernel_centres, whitened training frames) and the
        Gaussian kernel's gamma. Unused centre slots stay zero and give zero features."""
        c = centres.double() @ self.kernel_projection.double()
        k = torch.exp(-gamma * torch.cdist(c, c).square())
        eigval, eigvec = torch.linalg.eigh(k)
        keep = eigval > eigval.max() * 1e-8  # duplicate or near-duplicate centres add nothing
        inv_sqrt = eigvec[:, keep] @ torch.diag(eigval[keep].rsqrt()) @ eigvec[:, keep].T
        self.centres.zero_()
        self.nystroem.zero_()
        self.centres[: len(c)] = c.to(self.centres)
        self.nystroem[: len(c), : len(c)] = inv_sqrt.to(self.nystroem)
        self.kernel_gamma.fill_(gamma)

    def kernel_features(self, z: Tensor) -> Tensor:
        """Whitened frames (..., in_dim) -> their Nystroem features (..., kernel_centres)."""
        z = z @ self.kernel_projection.to(z.dtype)
        d2 = (z.square().sum(-1, keepdim=True) - 2 * z @ self.centres.T + self.centres.square().sum(-1)).clamp_min(0)
        return torch.exp(-self.kernel_gamma * d2) @ self.nystroem

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, T, in_dim) frame features, mask (B, T) bool, True = a real frame (False = padding).
        Returns (va (B, T, 2) per-frame valence/arousal (in [-1, 1] under a tanh output), pooled (B, embed_dim))."""
        B, T, _ = x.shape
        if T > self.cfg.max_len:
            raise ValueError(f"window of {T} frames exceeds max_len={self.cfg.max_len} of the positional encoding")
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=x.device)
        mask = mask.bool()
        z = self.whiten(x)
        x = self.in_drop(z)
        h = self.in_proj(self.in_norm(x))
        h = self.drop(h + self.pe[:T] if self.cfg.type == "transformer" else h)
        for layer in self.layers:
            h = layer(h, ~mask) if self.cfg.type != "transformer" else layer(h, src_key_padding_mask=~mask)
        h = self.out_norm(h)
        va = self.finish(self.va(h) + self.readout(z, x), mask)
        # where() rather than multiply, so non-finite values at padded frames cannot leak into the mean
        mean = torch.where(mask.unsqueeze(-1), h, 0.0).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return va, self.pool_proj(mean)

    def readout(self, z: Tensor, dropped: Tensor | None = None) -> Tensor:
        """The per-frame readout of whitened frames z: the linear path (of `dropped`, z after input dropout,
        when given) plus the kernel correction."""
        out = self.linear(z if dropped is None else dropped)
        if self.kernel is not None:
            out = out + self.kernel(self.in_drop(self.kernel_features(z)))
        return out

    def finish(self, va: Tensor, mask: Tensor) -> Tensor:
        """Per-frame outputs (B, T, 2) before smoothing -> the head's outputs: smoothed, through the output."""
        if self.cfg.smoothing:
            va = gaussian_smooth(va, mask, self.log_sigma.exp())
        return torch.tanh(va) if self.cfg.output == "tanh" else va


def _all_directions_if_unsaved(module, state, prefix, *_) -> None:
    """A kernel readout saved before kernel_share existed measured its distances in every direction."""
    if module.cfg.readout == "kernel" and prefix + "centres" in state and prefix + "kernel_projection" not in state:
        state[prefix + "kernel_projection"] = torch.eye(module.cfg.in_dim)
        module.cfg = replace(module.cfg, kernel_share=1.0)


HEAD_TYPES = ("transformer", "conv", "gru", "none")
CENTRES = ("none", "actor")  # HeadConfig.centre; clipva.sequences.load_splits does the centring
MAX_KERNEL_CENTRES = 16384  # the expansion is a (centres x centres) matrix: 16k is 1 GB in float32


def gaussian_smooth(v: Tensor, mask: Tensor, sigma: Tensor) -> Tensor:
    """(B, T, K) values smoothed over time with a Gaussian of std sigma (K,) frames, within the real frames of
    each window (mask (B, T)): the weights renormalise at window edges and padding contributes nothing."""
    t = torch.arange(v.shape[1], device=v.device, dtype=torch.float32)
    d2 = (t[:, None] - t[None, :]) ** 2  # (T, T)
    w = torch.exp(-d2[None] / (2 * sigma.float()[:, None, None] ** 2).clamp_min(1e-6))  # (K, T, T)
    w = w[None] * mask[:, None, None, :].float()  # (B, K, T, S)
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("bkts,bsk->btk", w, v.float()).to(v.dtype)


class _ConvBlock(nn.Module):
    """Pre-norm residual block: depthwise temporal convolution (kernel 5, dilated) and a pointwise MLP."""

    def __init__(self, d: int, dilation: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, 5, padding=2 * dilation, dilation=dilation, groups=d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, pad: Tensor) -> Tensor:
        z = torch.where(pad.unsqueeze(-1), 0.0, self.norm1(h))  # padding must not leak into real frames
        h = h + self.drop(self.conv(z.transpose(1, 2)).transpose(1, 2))
        return h + self.drop(self.mlp(self.norm2(h)))


class _GRUBlock(nn.Module):
    """Pre-norm residual bidirectional GRU: trailing padding is packed away, masked frames inside a window
    enter as zeros, so neither's values reach the real frames."""

    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.gru = nn.GRU(d, d // 2, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * (d // 2), d)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, pad: Tensor) -> Tensor:
        real = ~pad
        lengths = torch.where(real.any(1), real.shape[1] - real.flip(1).int().argmax(1), 1).cpu()
        z = torch.where(pad.unsqueeze(-1), 0.0, self.norm(h))
        packed = nn.utils.rnn.pack_padded_sequence(z, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])
        return h + self.drop(self.proj(out))


def _encoder_layer(cfg: HeadConfig, index: int) -> nn.Module:
    if cfg.type == "conv":
        return _ConvBlock(cfg.d_model, 2**index, cfg.dropout)
    if cfg.type == "gru":
        return _GRUBlock(cfg.d_model, cfg.dropout)
    return nn.TransformerEncoderLayer(
        cfg.d_model,
        cfg.heads,
        dim_feedforward=4 * cfg.d_model,
        dropout=cfg.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )


def frame_feature_augment(
    x: Tensor, noise_std: float, drop_prob: float, generator: torch.Generator | None = None
) -> Tensor:
    """Feature-level augmentation of (..., D) frame features: Gaussian noise of noise_std times the
    features' std, and whole frames zeroed with probability drop_prob. Returns a new tensor."""
    if noise_std < 0 or not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"need noise_std >= 0 and 0 <= drop_prob <= 1, got {noise_std}, {drop_prob}")
    out = x.clone()
    if noise_std > 0:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        out = out + noise * (noise_std * x.detach().std(correction=0))
    if drop_prob > 0:
        keep = torch.rand(x.shape[:-1], generator=generator, device=x.device) >= drop_prob
        out = out * keep.unsqueeze(-1).to(x.dtype)
    return out
