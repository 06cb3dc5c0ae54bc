"""Temporal transformer head: CLIP frame features -> per-frame valence/arousal and a pooled clip embedding."""

import math
from dataclasses import dataclass

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
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                cfg.d_model,
                cfg.heads,
                dim_feedforward=4 * cfg.d_model,
                dropout=cfg.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(cfg.depth)
        )
        self.out_norm = nn.LayerNorm(cfg.d_model)
        self.va = nn.Linear(cfg.d_model, 2)
        # A per-frame linear path from the whitened features, zero until fine-tuning starts it from a ridge
        # fit (linear probe, then fine-tune): the transformer then learns the temporal correction.
        self.linear = nn.Linear(cfg.in_dim, 2)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.pool_proj = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, cfg.embed_dim)
        )

    @torch.no_grad()
    def set_feature_stats(self, features: Tensor) -> None:
        """Whiten inputs with the mean and (shrunk) covariance of `features` (N, in_dim), e.g. all training
        frames: x -> (x - mean) @ (cov + eps I)^(-1/2), eps = whitening_eps * mean variance."""
        x = features.double()
        mean = x.mean(0)
        cov = torch.cov((x - mean).T).reshape(x.shape[1], x.shape[1])
        eigval, eigvec = torch.linalg.eigh(cov)
        eps = self.cfg.whitening_eps * eigval.clamp_min(0).mean() + 1e-12
        self.feature_mean.copy_(mean)
        self.whitening.copy_(eigvec @ torch.diag((eigval.clamp_min(0) + eps).rsqrt()) @ eigvec.T)

    def whiten(self, x: Tensor) -> Tensor:
        return (x - self.feature_mean) @ self.whitening

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, T, in_dim) frame features, mask (B, T) bool, True = a real frame (False = padding).
        Returns (va (B, T, 2) per-frame valence/arousal in [-1, 1] (tanh), pooled (B, embed_dim))."""
        B, T, _ = x.shape
        if T > self.cfg.max_len:
            raise ValueError(
                f"window of {T} frames exceeds max_len={self.cfg.max_len} of the positional encoding"
            )
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=x.device)
        mask = mask.bool()
        x = self.in_drop(self.whiten(x))
        h = self.drop(self.in_proj(self.in_norm(x)) + self.pe[:T])
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=~mask)
        h = self.out_norm(h)
        va = torch.tanh(self.va(h) + self.linear(x))
        # where() rather than multiply, so non-finite values at padded frames cannot leak into the mean
        mean = torch.where(mask.unsqueeze(-1), h, 0.0).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return va, self.pool_proj(mean)


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
