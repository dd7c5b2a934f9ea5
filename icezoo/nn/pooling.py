"""Masked pooling over the pulses of each event (real pulses only; an empty event pools to zeros).

Padded slots are selected away, never multiplied, so NaN or inf there cannot leak.
Shapes (every function): h [B, L, D], mask [B, L] -> [B, D].
"""

from __future__ import annotations

import torch

from icezoo.nn.masking import zero_padding


def masked_sum(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over real pulses. Shapes: h [B, L, D], mask [B, L] -> [B, D]."""
    return zero_padding(h, mask).sum(1)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real pulses (0 for an empty event). Shapes: h [B, L, D], mask [B, L] -> [B, D]."""
    count = mask.sum(1, keepdim=True).clamp_min(1).to(h.dtype)
    return masked_sum(h, mask) / count


def _masked_extreme(h: torch.Tensor, mask: torch.Tensor, largest: bool) -> torch.Tensor:
    finfo = torch.finfo(h.dtype)
    fill = torch.full((), finfo.min if largest else finfo.max, dtype=h.dtype, device=h.device)
    x = torch.where(mask.unsqueeze(-1), h, fill)
    out = x.amax(1) if largest else x.amin(1)
    return torch.where(mask.any(1, keepdim=True), out, torch.zeros((), dtype=h.dtype, device=h.device))


def masked_max(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over real pulses (0 for an empty event). Shapes: h [B, L, D], mask [B, L] -> [B, D]."""
    return _masked_extreme(h, mask, largest=True)


def masked_min(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Min over real pulses (0 for an empty event). Shapes: h [B, L, D], mask [B, L] -> [B, D]."""
    return _masked_extreme(h, mask, largest=False)


#: the masked pools by name
POOLS = {"mean": masked_mean, "max": masked_max, "min": masked_min, "sum": masked_sum}

__all__ = ["masked_sum", "masked_mean", "masked_max", "masked_min", "POOLS"]
