"""The Molecule Attention Transformer over the pulses (``mat``, formerly ``graph_transformer``; EXP_06-08)."""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator
from torch import nn

from icezoo.core import Backbone, Batch
from icezoo.nn import (DETECTOR_MAX, DETECTOR_MIN, TransformerBlock, input_projection, masked_softmax, pair_distances,
                       zero_padding)
from icezoo.plugins.backbones.common import BlockConfig, model_width


class MoleculeAttention(nn.Module):
    """MAT attention: lambda_a softmax(QK^T/sqrt(d)) + lambda_d softmax(-D) + lambda_g A_norm, then @ V.

    Shapes: x [B, L, D], mask [B, L], dist [B, 1, L, L], adj [B, 1, L, L] -> [B, L, D].
    ``dist`` (the row-softmax of minus the distances) and ``adj`` (row-normalised adjacency) are
    shared by the heads; lambda_a = 1 - lambda_d - lambda_g (no Q, K when it is 0).
    """

    def __init__(self, dim: int, heads: int, lambda_g: float, lambda_d: float, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dim_head = heads, dim // heads
        self.lambda_g, self.lambda_d = lambda_g, lambda_d
        self.lambda_a = max(0.0, 1.0 - lambda_g - lambda_d)
        self.qk = nn.Linear(dim, 2 * dim) if self.lambda_a > 0 else None
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, dist: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        v = self.v(x).view(b, n, self.heads, self.dim_head).transpose(1, 2)
        p = self.lambda_d * dist + self.lambda_g * adj
        if self.qk is not None:
            q, k = self.qk(x).view(b, n, 2, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
            keep = mask[:, None, None, :] & mask[:, None, :, None]
            att = masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dim_head), keep)
            p = p + self.lambda_a * att
        out = self.drop(p) @ v
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class MoleculeAttentionTransformer(Backbone):
    """Molecule-Attention-Transformer over the pulses: attention mixed with adjacency and distances (EXP_06-08).

    Named ``mat``; ``graph_transformer`` (its name until the graph networks arrived) still resolves.

    Positions are min-max normalised over the detector's bounding box (the log's units: the radius
    0.015 is ~17 m, one DOM spacing; 0.05 ~55 m). Adjacency: pulses closer than ``radius`` (self
    included), row-normalised; distance term: row-softmax of minus the pairwise distance. Weights
    ``lambda_g`` (adjacency) and ``lambda_d`` (distance); the learned attention gets 1 - lambda_g -
    lambda_d, so the log's 0.5/0.5 leaves no learned attention at all (a fixed graph smoother).
    """

    name = "mat"
    aliases = ("graph_transformer",)
    properties = frozenset({"permutation_invariant"})
    example_params = {"depth": 2, "heads": 4, "radius": 0.3}
    requires = frozenset({"xyzt"})

    class Config(BlockConfig):
        depth: int = Field(6, gt=0)
        radius: float = Field(0.015, gt=0, description="adjacency radius, detector min-max normalised units")
        lambda_g: float = Field(0.3, ge=0, le=1, description="weight of the adjacency matrix")
        lambda_d: float = Field(0.3, ge=0, le=1, description="weight of the distance matrix")

        @model_validator(mode="after")
        def _lambdas(self):
            if self.lambda_g + self.lambda_d > 1 + 1e-9:
                raise ValueError(f"lambda_g + lambda_d must be <= 1 (the attention gets the rest), "
                                 f"got {self.lambda_g} + {self.lambda_d}")
            return self

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        dim = model_width(config, in_dim)
        self.proj = input_projection(in_dim, dim)
        self.blocks = nn.ModuleList([
            TransformerBlock(dim, config.heads, config.ff_mult, config.dropout,
                             attn=MoleculeAttention(dim, config.heads, config.lambda_g, config.lambda_d,
                                                    config.attn_dropout))
            for _ in range(config.depth)
        ])
        self.norm = nn.LayerNorm(dim)
        self.out_dim = dim

    def graph(self, xyzt: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(softmax(-D), normalised adjacency), each [B, 1, L, L]; padded rows and columns are zero."""
        with torch.no_grad():
            lo = torch.tensor(DETECTOR_MIN, dtype=xyzt.dtype, device=xyzt.device)
            hi = torch.tensor(DETECTOR_MAX, dtype=xyzt.dtype, device=xyzt.device)
            p = zero_padding((xyzt.detach()[..., :3] - lo) / (hi - lo), mask)
            dist = pair_distances(p).sqrt()
            keep = mask[:, None, :] & mask[:, :, None]
            soft = masked_softmax(-dist, keep)
            adj = ((dist < self.config.radius) & keep).to(xyzt.dtype)
            adj = adj / adj.sum(-1, keepdim=True).clamp_min(1.0)
        return soft[:, None], adj[:, None]

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        mask = batch.mask
        x = self.proj(zero_padding(h, mask))
        dist, adj = (t.to(x.dtype) for t in self.graph(batch.xyzt, mask))  # geometry in the batch's precision
        for block in self.blocks:
            x = block(x, mask, dist=dist, adj=adj)
        return self.norm(x)
