"""Attention backbones: [B, L, D] -> [B, L, D] (or [B, L+1, D] with a CLS token in slot 0)."""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import nn

from icezoo.core import Backbone, Batch, Config, hookimpl


class Transformer(Backbone):
    """x-transformers Encoder over the pulses, padding masked (BASELINE_HF, EXP_00-EXP_29)."""

    name = "transformer"

    class Config(Config):
        depth: int = Field(6, gt=0)
        heads: int = Field(8, gt=0)
        dim: int | None = Field(None, gt=0, description="model width; None keeps the embedder's dim")
        rotary_pos_emb: bool = False
        ff_glu: bool = False
        use_rmsnorm: bool = False
        attn_dropout: float = Field(0.0, ge=0, lt=1)
        ff_dropout: float = Field(0.0, ge=0, lt=1)
        layer_dropout: float = Field(0.0, ge=0, lt=1)

    @classmethod
    def declared_properties(cls, config: Config) -> frozenset[str]:
        # rotary embeddings encode the slot index, so outputs depend on pulse order
        return frozenset() if config.rotary_pos_emb else frozenset({"permutation_invariant"})

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        from x_transformers import Encoder

        dim = config.dim or in_dim
        if dim % config.heads:
            raise ValueError(f"dim {dim} is not divisible by heads {config.heads}")
        self.proj = nn.Linear(in_dim, dim) if dim != in_dim else nn.Identity()
        self.encoder = Encoder(
            dim=dim, depth=config.depth, heads=config.heads, attn_dim_head=dim // config.heads,
            rotary_pos_emb=config.rotary_pos_emb, ff_glu=config.ff_glu, use_rmsnorm=config.use_rmsnorm,
            attn_dropout=config.attn_dropout, ff_dropout=config.ff_dropout, layer_dropout=config.layer_dropout,
        )
        self.out_dim = dim

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.encoder(self.proj(h), mask=batch.mask)


@hookimpl
def icezoo_components():
    return [Transformer]
