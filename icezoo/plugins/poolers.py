"""Poolers: per-pulse states [B, L, D] + mask -> [B, P]; a list of poolers concatenates.

The masked poolers read real pulses only, through :mod:`icezoo.nn.pooling` (padded slots are
selected away, never multiplied, so NaN or inf there cannot leak); an event with no real pulse pools
to zeros. Every pooler here is a symmetric function of the pulses, so all declare
``permutation_invariant``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Pooler
from icezoo.nn import POOLS, masked_max, masked_mean, masked_min, masked_sum, mlp


class MeanPool(Pooler):
    """Mean over real pulses only (MeanPoolingWithMask, EXP_01 on)."""

    name = "mean"

    def forward(self, h, mask, cls=None):
        return masked_mean(h, mask)


class MaxPool(Pooler):
    """Max over real pulses only (EXP_14's mean+max)."""

    name = "max"

    def forward(self, h, mask, cls=None):
        return masked_max(h, mask)


class MinPool(Pooler):
    """Min over real pulses only (EXP_19's mean+max+min)."""

    name = "min"

    def forward(self, h, mask, cls=None):
        return masked_min(h, mask)


class SumPool(Pooler):
    """Sum over real pulses (EXP_28's mean+max+sum+min)."""

    name = "sum"

    def forward(self, h, mask, cls=None):
        return masked_sum(h, mask)


class ClsPool(Pooler):
    """The backbone's CLS token (EXP_24_CLS, EXP_37's max+mean+cls); needs a backbone with adds_cls_token."""

    name = "cls"
    requires = frozenset({"cls_token"})

    def forward(self, h, mask, cls=None):
        if cls is None:
            raise ValueError("the 'cls' pooler got no CLS token: use a backbone with cls = true")
        return cls


class MeanUnmasked(Pooler):
    """Mean over all L slots, padding included (EXP_00 and EXP_06 pooled without the mask; kept to reproduce them)."""

    name = "mean_unmasked"
    properties = frozenset({"permutation_invariant", "reads_padding"})

    def forward(self, h, mask, cls=None):
        return h.mean(1)


class AEPool(Pooler):
    """Masked pools concatenated, then an autoencoder-like bottleneck (EXP_19).

    ``pools`` (default mean, max, min) are computed internally and concatenated to P = len(pools) * D;
    an encoder Linear(P, bottleneck)+act squeezes them and a decoder Linear(bottleneck, P)+act widens
    them back, so the head sees P features that passed through a ``bottleneck``-wide code. With
    ``decode = false`` the code itself is the output. Use it alone (``pooler = [{name = "ae"}]``):
    listing mean/max/min beside it would pool twice.
    """

    name = "ae"

    class Config(Pooler.Config):
        pools: list[Literal["mean", "max", "min", "sum"]] = Field(default_factory=lambda: ["mean", "max", "min"],
                                                                 min_length=1)
        bottleneck: int = Field(64, gt=0)
        decode: bool = Field(True, description="decode back to len(pools)*dim; false: output the bottleneck")
        act: Literal["gelu", "relu", "silu", "tanh"] = "gelu"

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        width = len(config.pools) * in_dim
        self.encoder = mlp(width, [], config.bottleneck, act=config.act, final_act=True)
        self.decoder = mlp(config.bottleneck, [], width, act=config.act, final_act=True) if config.decode else nn.Identity()
        self.out_dim = width if config.decode else config.bottleneck

    def forward(self, h, mask, cls=None):
        pooled = torch.cat([POOLS[p](h, mask) for p in self.config.pools], dim=-1)
        return self.decoder(self.encoder(pooled))
