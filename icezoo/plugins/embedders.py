"""Embedders: per-pulse features [B, L, F] -> [B, L, D]."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Batch, Config, Embedder, hookimpl


class LinearEmbedder(Embedder):
    """One linear layer from the features to dim (the baseline transformer's input, EXP_00 on)."""

    name = "linear"
    properties = frozenset({"permutation_invariant"})

    class Config(Config):
        dim: int = Field(128, gt=0)

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        self.proj = nn.Linear(in_dim, config.dim)
        self.out_dim = config.dim

    def forward(self, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.proj(features)


@hookimpl
def icezoo_components():
    return [LinearEmbedder]
