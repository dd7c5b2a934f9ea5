"""Encodings of scalars for attention models."""

from __future__ import annotations

import math

import torch


def sinusoidal(x: torch.Tensor, dim: int, max_period: float = 10000.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """Transformer-style sinusoidal encoding: sin of dim/2 geometric frequencies from 1 down to
    1/max_period, then cos.

    Shapes: x [...] -> [..., dim] (dim even, >= 2). ``out`` (optional, [..., dim], may be a view):
    written in place and returned, without the concatenation's temporaries.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dim >= 2, got {dim}")
    half = dim // 2
    steps = torch.arange(half, device=x.device, dtype=x.dtype)
    freqs = torch.exp(-math.log(max_period) * steps / max(half - 1, 1))
    args = x[..., None] * freqs
    if out is None or torch.is_grad_enabled() and args.requires_grad:
        res = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
        return res if out is None else out.copy_(res)
    out[..., :half] = torch.sin(args)  # (sin(..., out=strided view) is 2x slower on a CPU)
    out[..., half:] = torch.cos(args)
    return out


__all__ = ["sinusoidal"]
