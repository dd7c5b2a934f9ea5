"""Attention restricted to each pulse's k nearest neighbours (hb_localattention)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Backbone, Batch
from icezoo.nn import C_ICE, TransformerBlock, input_projection, knn_mask, masked_knn, zero_padding
from icezoo.plugins.backbones.common import BlockConfig, model_width


class LocalAttention(Backbone):
    """Attention restricted to each pulse's k nearest neighbours, then ordinary encoder blocks (hb_localattention).

    Each pulse attends to itself and its ``k`` nearest other real pulses (masked kNN on xyz in metres,
    or on (x, y, z, c_ice t) with ``space = "xyzt"``; ties broken by time) for ``local_depth`` blocks,
    then to all pulses for ``depth`` blocks; final LayerNorm.
    """

    name = "local_attention"
    properties = frozenset({"permutation_invariant"})
    example_params = {"k": 4, "local_depth": 2, "depth": 1, "heads": 4}
    requires = frozenset({"xyzt"})

    class Config(BlockConfig):
        k: int = Field(8, gt=0, description="neighbours per pulse (besides itself)")
        local_depth: int = Field(4, gt=0)
        depth: int = Field(3, ge=0, description="ordinary (global) blocks after the local ones")
        space: Literal["xyz", "xyzt"] = Field("xyz", description="kNN metric: positions, or positions and c_ice * time")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        dim = model_width(config, in_dim)
        self.proj = input_projection(in_dim, dim)
        block = lambda: TransformerBlock(dim, config.heads, config.ff_mult, config.dropout, config.attn_dropout)  # noqa: E731
        self.local = nn.ModuleList([block() for _ in range(config.local_depth)])
        self.plain = nn.ModuleList([block() for _ in range(config.depth)])
        self.norm = nn.LayerNorm(dim)
        self.out_dim = dim

    def neighbours(self, xyzt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pair mask [B, L, L]: itself and its k nearest real pulses."""
        pos = xyzt[..., :3]
        if self.config.space == "xyzt":
            pos = torch.cat([pos, C_ICE * xyzt[..., 3:4]], dim=-1)
        index, valid = masked_knn(pos, mask, self.config.k, time=xyzt[..., 3], include_self=False)
        eye = torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
        return knn_mask(index, valid) | (eye & mask[:, :, None])

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        mask = batch.mask
        x = self.proj(zero_padding(h, mask))
        allowed = self.neighbours(batch.xyzt, mask)  # kNN in the batch's precision, not x's (half under autocast)
        for block in self.local:
            x = block(x, mask, allowed=allowed)
        for block in self.plain:
            x = block(x, mask)
        return self.norm(x)
