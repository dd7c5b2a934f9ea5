"""The space-time relative-bias transformer (the 2nd-place model, init5_hb_ft-2)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Backbone, Batch
from icezoo.nn import (C_VACUUM, RelativeAttention, TransformerBlock, input_projection, pair_distances, sinusoidal,
                       zero_padding)
from icezoo.nn.tracing import exporting
from icezoo.plugins.backbones.common import BlockConfig, model_width


class RelBiasTransformer(Backbone):
    """Attention with a learned bias from the pulses' space-time interval (init5_hb_ft-2, 0.9854; 2nd place).

    For every pair of pulses, ds^2 = c^2 dt^2 - |dx|^2 (metres^2, from ``batch.xyzt``); the signed
    root sign(ds^2) sqrt|ds^2| / ``length_scale`` is clipped to +-``clip`` and encoded with
    ``bias_dim`` sinusoids (frequencies up to ``bias_scale``). Each of the ``biased_depth`` blocks maps
    that encoding with its own Linear to its bias: ``bias_mode = "content"`` (the 2nd-place model) a
    pair vector [B, L, L, dim_head] that each head reads through its query (added to the scores as
    q_i . r_ij and to the output as sum_j a_ij r_ij); ``"additive"`` a per-head additive bias
    [B, heads, L, L] (fused attention kernels). Then ``depth`` plain pre-norm blocks, then a final
    LayerNorm.

    Speed and memory (docs/performance.md): the encoding is computed once per batch (in blocks of
    ``query_block`` rows) and shared by the blocks; in content mode each block contracts its
    queries with its projection instead of forming the pair vectors (:class:`RelativeAttention`'s
    fast path, the same numbers), and at inference it takes its queries ``query_block`` at a time.
    """

    name = "relbias_transformer"
    properties = frozenset({"permutation_invariant"})
    example_params = {"heads": 4, "biased_depth": 2, "depth": 1, "bias_dim": 8}
    requires = frozenset({"xyzt"})

    class Config(BlockConfig):
        biased_depth: int = Field(4, gt=0, description="blocks with the space-time bias (first)")
        depth: int = Field(4, ge=0, description="plain blocks after the biased ones")
        bias_dim: int = Field(32, ge=2, multiple_of=2, description="sinusoids encoding the interval")
        c: float = Field(C_VACUUM, gt=0, description="light speed used in ds^2, m/ns")
        length_scale: float = Field(500.0, gt=0, description="metres per unit of the encoded interval")
        clip: float = Field(4.0, gt=0)
        bias_scale: float = Field(1024.0, gt=0, description="frequency multiplier of the interval encoding")
        bias_mode: Literal["content", "additive"] = Field(
            "content", description="content: q-dependent relative encoding (2nd place); additive: per-head bias")
        query_block: int = Field(128, gt=0, description="queries per block at inference and when encoding "
                                                        "the pairs (bounds memory on long events)")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        dim = model_width(config, in_dim)
        self.proj = input_projection(in_dim, dim)
        block = lambda attn=None: TransformerBlock(dim, config.heads, config.ff_mult, config.dropout,  # noqa: E731
                                                   config.attn_dropout, attn=attn)
        if config.bias_mode == "content":
            self.biased = nn.ModuleList([block(RelativeAttention(dim, config.heads, config.attn_dropout,
                                                                     query_block=config.query_block))
                                         for _ in range(config.biased_depth)])
            width = dim // config.heads
        else:
            self.biased = nn.ModuleList([block() for _ in range(config.biased_depth)])
            width = config.heads
        self.bias_proj = nn.ModuleList([nn.Linear(config.bias_dim, width) for _ in range(config.biased_depth)])
        self.plain = nn.ModuleList([block() for _ in range(config.depth)])
        self.norm = nn.LayerNorm(dim)
        self.out_dim = dim

    def relation(self, xyzt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sinusoidal encoding of the scaled signed interval, [B, L, L, bias_dim] (no gradient: data
        only), ``query_block`` rows at a time, so the intermediates stay small next to the result."""
        cfg = self.config
        with torch.no_grad():
            p = zero_padding(xyzt.detach(), mask)
            if exporting():  # one block: an exported graph's loop may not depend on the pulse count
                return self._encode(p, p)
            b, n, _ = p.shape
            out = torch.empty(b, n, n, cfg.bias_dim, dtype=p.dtype, device=p.device)
            for i in range(0, n, cfg.query_block):
                self._encode(p[:, i:i + cfg.query_block], p, out=out[:, i:i + cfg.query_block])
            return out

    def _encode(self, q: torch.Tensor, p: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The encoded interval between the queries q [B, Lq, 4] and every pulse p [B, L, 4] -> [B, Lq, L, bias_dim]
        (written into ``out`` when given)."""
        cfg = self.config
        dx2 = pair_distances(p[..., :3], q[..., :3])  # coordinate by coordinate: ORT rounds it alike
        dt = cfg.c * (q[:, :, None, 3] - p[:, None, :, 3])
        ds2 = dt * dt - dx2
        d = torch.sign(ds2) * torch.sqrt(ds2.abs()) / cfg.length_scale
        return sinusoidal(cfg.bias_scale * d.clamp(-cfg.clip, cfg.clip), cfg.bias_dim, out=out)

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        mask = batch.mask
        x = self.proj(zero_padding(h, mask))
        # the geometry in the batch's precision (under fp16/bf16 autocast x is half precision: metres
        # and ns there overflow or lose metres); only the bounded result takes x's dtype
        rel = self.relation(batch.xyzt, mask).to(x.dtype)
        for block, proj in zip(self.biased, self.bias_proj):
            if self.config.bias_mode == "content":
                x = block(x, mask, rel=rel, proj=proj)
            else:
                x = block(x, mask, bias=proj(rel).permute(0, 3, 1, 2))
        for block in self.plain:
            x = block(x, mask)
        return self.norm(x)
