"""The x-transformers Encoder backbone (the baseline of the log, EXP_00 on)."""

from __future__ import annotations

import inspect

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Backbone, Batch, Config
from icezoo.nn import input_projection, zero_padding
from icezoo.plugins.backbones.common import model_width


class Transformer(Backbone):
    """x-transformers Encoder over the pulses, padding masked (BASELINE_HF, EXP_00-EXP_29); cls: EXP_24_CLS, EXP_37.

    ``cls = true`` prepends a learned CLS token (declares ``adds_cls_token``: output [B, L+1, D], slot 0
    the CLS). ``rotary_pos_emb`` encodes the slot index, so with it the backbone is not permutation
    invariant (the pulses arrive in the selection's order, usually time).
    """

    name = "transformer"
    example_params = {"depth": 2, "heads": 4}

    class Config(Config):
        depth: int = Field(6, gt=0)
        heads: int = Field(8, gt=0)
        dim: int | None = Field(None, gt=0, description="model width; None keeps the embedder's dim")
        cls: bool = Field(False, description="prepend a learned CLS token (pool it with the 'cls' pooler)")
        rotary_pos_emb: bool = False
        ff_glu: bool = False
        use_rmsnorm: bool = False
        attn_dropout: float = Field(0.0, ge=0, lt=1)
        ff_dropout: float = Field(0.0, ge=0, lt=1)
        layer_dropout: float = Field(0.0, ge=0, lt=1)
        fused_attention: bool = Field(True, description="torch's fused scaled-dot-product attention (same math, "
                                      "~2x faster on CPU); false: x-transformers' einsum path")

    @classmethod
    def declared_properties(cls, config: Config) -> frozenset[str]:
        props = set() if config.rotary_pos_emb else {"permutation_invariant"}
        if config.cls:
            props.add("adds_cls_token")
        return frozenset(props)

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        from x_transformers import Encoder  # imported on use: `icezoo list` stays fast
        from x_transformers.x_transformers import AttentionLayers

        dim = model_width(config, in_dim)
        dim_head = dim // config.heads
        rotary = {}
        if config.rotary_pos_emb:
            if dim_head < 4:
                raise ValueError(f"rotary embeddings need a head width of at least 4, got {dim_head}")
            # x-transformers' default (half the head width) fails for heads of width 4; keep it even and >= 4
            rotary = {"rotary_emb_dim": max(4, 2 * (dim_head // 4))}
            if "verbose" in inspect.signature(AttentionLayers.__init__).parameters:
                rotary["verbose"] = False  # its "rotary dim should be at least 32" is advice for language models
        self.proj = input_projection(in_dim, dim)
        self.cls_token = nn.Parameter(torch.randn(dim) * 0.02) if config.cls else None
        self.encoder = Encoder(
            dim=dim, depth=config.depth, heads=config.heads, attn_dim_head=dim_head, **rotary,
            rotary_pos_emb=config.rotary_pos_emb, ff_glu=config.ff_glu, use_rmsnorm=config.use_rmsnorm,
            attn_dropout=config.attn_dropout, ff_dropout=config.ff_dropout, layer_dropout=config.layer_dropout,
            attn_flash=config.fused_attention,
        )
        self.out_dim = dim

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        mask = batch.mask
        x = self.proj(zero_padding(h, mask))
        if self.cls_token is not None:
            b = x.shape[0]
            x = torch.cat([self.cls_token.to(x.dtype).expand(b, 1, -1), x], dim=1)
            mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        return self.encoder(x, mask=mask)
