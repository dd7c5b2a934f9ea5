"""Per-pulse projections of the features: none (``identity``), one Linear (``linear``) or a small MLP (``mlp``)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Batch, Config, Embedder
from icezoo.nn import InputStandardizer, mlp, post_norm, zero_padding


class LinearEmbedder(Embedder):
    """One linear layer from the features to dim (the baseline transformer's input, EXP_00 on; post_norm: EXP_24).

    ``standardize`` first brings every feature column to mean 0 and variance 1 with statistics of the
    training pulses (:class:`icezoo.nn.InputStandardizer`); the `default` pipeline uses it (docs/engine.md:
    without it the small recipe sat on a plateau for ~300 steps).
    """

    name = "linear"
    properties = frozenset({"permutation_invariant"})

    class Config(Config):
        dim: int = Field(128, gt=0)
        post_norm: bool = Field(False, description="LayerNorm after the projection (post_emb_norm, EXP_24)")
        standardize: bool = Field(False, description="standardize each feature column with training statistics "
                                                     "before the projection (no plateau in short runs)")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        self.standardize = InputStandardizer(in_dim) if config.standardize else None
        self.proj = nn.Linear(in_dim, config.dim)
        self.norm = post_norm(config.post_norm, config.dim)
        self.out_dim = config.dim

    def forward(self, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.standardize is not None:
            features = self.standardize(zero_padding(features, batch.mask), batch.mask)
        return self.norm(self.proj(zero_padding(features, batch.mask)))


class MLPEmbedder(Embedder):
    """A small per-pulse MLP from the features to dim (a deeper alternative to `linear`)."""

    name = "mlp"
    properties = frozenset({"permutation_invariant"})

    class Config(Config):
        dim: int = Field(128, gt=0)
        hidden: int | None = Field(None, gt=0, description="hidden width; None: dim")
        layers: int = Field(2, ge=1, description="number of Linear layers")
        act: Literal["gelu", "relu", "silu"] = "gelu"
        post_norm: bool = False

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        hidden = config.hidden or config.dim
        self.net = mlp(in_dim, [hidden] * (config.layers - 1), config.dim, act=config.act)
        self.norm = post_norm(config.post_norm, config.dim)
        self.out_dim = config.dim

    def forward(self, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.norm(self.net(zero_padding(features, batch.mask)))


class IdentityEmbedder(Embedder):
    """The features as they are (D = F): for backbones that take raw pulse features, as GraphNeT's DynEdge does (EXP_23, EXP_25)."""

    name = "identity"
    properties = frozenset({"permutation_invariant"})

    def forward(self, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        return zero_padding(features, batch.mask)
