"""Training losses: CCC/MSE regression losses and (multi-positive) contrastive losses, as plain functions.

Masks are bool tensors over the leading dims of ``pred`` (shape ``pred.shape[:-1]``), True = use the frame.
Masked regression losses pool all selected frames (of all clips in the batch) into one set of statistics.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

LOSS_KINDS = ("mse", "ccc", "mix")


def _select(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Flatten (..., D) to the (M, D) frames the mask selects."""
    if pred.shape != target.shape or pred.ndim < 1:
        raise ValueError(
            f"pred and target must have one shape (..., D), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if mask is None:
        return pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
    if mask.shape != pred.shape[:-1]:
        raise ValueError(f"mask must have shape {tuple(pred.shape[:-1])}, got {tuple(mask.shape)}")
    mask = mask.bool()
    return pred[mask], target[mask]


def _zero(pred: Tensor) -> Tensor:
    """A zero connected to the graph of ``pred`` so that ``backward()`` still works."""
    return pred.sum() * 0.0


def _ccc(p: Tensor, t: Tensor, eps: float) -> Tensor:
    if p.dtype in (torch.float16, torch.bfloat16):  # second moments need more than half precision
        p, t = p.float(), t.float()
    mp, mt = p.mean(0), t.mean(0)
    a, b = p - mp, t - mt
    den = (a * a).mean(0) + (b * b).mean(0) + (mp - mt) ** 2
    return 2 * (a * b).mean(0) / den.clamp_min(eps)


def ccc_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """Mean over dims of 1 - CCC (population statistics, all leading dims pooled); a graph-connected zero
    when no frame is selected. The CCC's denominator is clamped at ``eps`` (no effect unless both sides are
    constant and equal, where CCC would be 0/0: this gives 0 instead of NaN)."""
    p, t = _select(pred, target, mask)
    return _zero(pred) if p.numel() == 0 else (1 - _ccc(p, t, eps)).mean()


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """MSE over the selected frames and all dims; a graph-connected zero when no frame is selected."""
    p, t = _select(pred, target, mask)
    return _zero(pred) if p.numel() == 0 else F.mse_loss(p, t)


def regression_loss(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, kind: str = "mix", ccc_weight: float = 0.5
) -> Tensor:
    """Valence/arousal regression loss: "mse", "ccc" (1 - CCC) or "mix" = (1-w) MSE + w (1 - CCC).

    If the mask selects no frame the loss is a zero that still has a grad_fn (when ``pred`` requires grad),
    so a training loop can call ``backward()`` unconditionally; it contributes no gradient.
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss kind {kind!r}; allowed: {', '.join(LOSS_KINDS)}")
    if kind == "mse":
        return masked_mse(pred, target, mask)
    if kind == "ccc":
        return ccc_loss(pred, target, mask)
    return (1 - ccc_weight) * masked_mse(pred, target, mask) + ccc_weight * ccc_loss(pred, target, mask)


def multi_positive_info_nce(logits: Tensor, pos_mask: Tensor) -> Tensor:
    """InfoNCE with several positives per anchor (row): -log(sum_pos exp(l_ij) / sum_j exp(l_ij)).

    Averaged over rows with at least one positive; other rows are ignored (a graph-connected zero if none
    has one). Entries of ``logits`` may be -inf to drop candidates (e.g. self-similarity).
    """
    if logits.ndim != 2 or pos_mask.shape != logits.shape:
        raise ValueError(
            f"logits must be 2-D and pos_mask of its shape, got {tuple(logits.shape)} and {tuple(pos_mask.shape)}"
        )
    pos_mask = pos_mask.bool()
    keep = pos_mask.any(1)
    # Rows without a positive are weighted out rather than indexed out: no host sync on a GPU. They take
    # every candidate as positive meanwhile, so their (unused) terms stay finite and add no NaN gradient.
    log_pos = torch.logsumexp(logits.masked_fill(~(pos_mask | ~keep[:, None]), float("-inf")), dim=1)
    per_row = torch.logsumexp(logits, dim=1) - log_pos
    return (per_row * keep).sum() / keep.sum().clamp_min(1)


def vision_language_loss(window_emb: Tensor, text_emb: Tensor, bin_ids: Tensor, temperature: float = 0.07) -> Tensor:
    """Symmetric window-text InfoNCE where windows of the same emotion bin are positives, not negatives.

    window_emb (B, E), text_emb (K, E) one prompt embedding per bin, bin_ids (B,) long in [0, K).
    """
    if window_emb.ndim != 2 or text_emb.ndim != 2 or window_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"need window_emb (B, E) and text_emb (K, E), got {tuple(window_emb.shape)} and {tuple(text_emb.shape)}"
        )
    if bin_ids.shape != window_emb.shape[:1]:
        raise ValueError(f"bin_ids must have shape ({window_emb.shape[0]},), got {tuple(bin_ids.shape)}")
    on_host = bin_ids.device.type == "cpu"  # checked where it costs no device synchronisation
    if on_host and bin_ids.numel() and (int(bin_ids.min()) < 0 or int(bin_ids.max()) >= text_emb.shape[0]):
        raise ValueError(f"bin_ids must lie in [0, {text_emb.shape[0]})")
    w, t = F.normalize(window_emb, dim=-1), F.normalize(text_emb, dim=-1)[bin_ids]
    logits = w @ t.T / temperature
    pos = bin_ids[:, None] == bin_ids[None, :]
    return 0.5 * (multi_positive_info_nce(logits, pos) + multi_positive_info_nce(logits.T, pos.T))


def temporal_contrastive_loss(
    z1: Tensor, z2: Tensor, temperature: float = 0.1, clip_ids: Tensor | None = None
) -> Tensor:
    """NT-Xent over 2B embeddings of two views (windows) of B clips; each view's positive is the other view.

    Self-similarity is excluded. With ``clip_ids`` (B,), all embeddings of the same clip are positives
    (e.g. a clip that landed in the batch twice), so they are never pushed apart.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have one shape (B, E), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    ids = torch.arange(b, device=z1.device) if clip_ids is None else clip_ids
    if ids.shape != (b,):
        raise ValueError(f"clip_ids must have shape ({b},), got {tuple(ids.shape)}")
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    ids = torch.cat([ids, ids])
    self_mask = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    pos = (ids[:, None] == ids[None, :]) & ~self_mask
    return multi_positive_info_nce(logits, pos)
