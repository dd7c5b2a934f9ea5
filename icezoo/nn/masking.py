"""Masking rules shared by every layer: a padded pulse is never a key, a neighbour or a pooled value;
a row with no allowed entry (a padded slot, or a whole empty event) gives zeros, never NaN."""

from __future__ import annotations

import torch


def neg_fill(dtype: torch.dtype) -> float:
    """The additive value that removes a key from a softmax (finite, so no inf - inf)."""
    return torch.finfo(dtype).min


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with padded slots set to 0 (a select, so NaN/inf there cannot leak, even in gradients).

    Shapes: x [B, L, ...], mask [B, L] (True = real pulse) -> [B, L, ...].
    """
    m = mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_softmax(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to ``keep``; rows with no kept entry are all zero.

    Shapes: scores [..., N], keep broadcastable to scores (bool) -> [..., N].
    """
    fill = torch.full((), neg_fill(scores.dtype), dtype=scores.dtype, device=scores.device)
    p = torch.softmax(torch.where(keep, scores, fill), dim=-1)
    return torch.where(keep.any(-1, keepdim=True), p, torch.zeros((), dtype=p.dtype, device=p.device))


__all__ = ["neg_fill", "zero_padding", "masked_softmax"]
