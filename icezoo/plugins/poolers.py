"""Poolers: per-pulse states [B, L, D] + mask -> [B, P]; a list of poolers concatenates."""

from __future__ import annotations

import torch

from icezoo.core import Pooler, hookimpl


class MeanPool(Pooler):
    """Mean over real pulses only (MeanPoolingWithMask, EXP_01 on)."""

    name = "mean"

    def forward(self, h, mask, cls=None):
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class MaxPool(Pooler):
    """Max over real pulses only (EXP_14's mean+max)."""

    name = "max"

    def forward(self, h, mask, cls=None):
        return h.masked_fill(~mask.unsqueeze(-1), torch.finfo(h.dtype).min).amax(1)


@hookimpl
def icezoo_components():
    return [MeanPool, MaxPool]
