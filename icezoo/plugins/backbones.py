"""Attention backbones: [B, L, D] -> [B, L, D'] (or [B, L+1, D'] with a CLS token in slot 0).

Padded slots are zeroed on entry and are never keys, so nothing in them reaches a real pulse.
None of these backbones uses a slot index (except ``transformer`` with rotary embeddings), so they
declare ``permutation_invariant``: per-pulse outputs permute with the input.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from icezoo.core import Backbone, Batch, Config, hookimpl
from icezoo.nn import (C_ICE, C_VACUUM, DETECTOR_MAX, DETECTOR_MIN, RelativeAttention, TransformerBlock, knn_mask,
                       masked_knn, neg_fill, sinusoidal, zero_padding)


class _BlockConfig(Config):
    """Params shared by the attention backbones built from :class:`icezoo.nn.TransformerBlock`."""

    dim: int | None = Field(None, gt=0, description="model width; None keeps the embedder's dim")
    heads: int = Field(8, gt=0)
    ff_mult: int = Field(4, gt=0, description="feed-forward hidden width = ff_mult * dim")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the residual branches")
    attn_dropout: float = Field(0.0, ge=0, lt=1)


def _width(config, in_dim: int) -> int:
    dim = config.dim or in_dim
    if dim % config.heads:
        raise ValueError(f"dim {dim} is not divisible by heads {config.heads}")
    return dim


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

    @classmethod
    def declared_properties(cls, config: Config) -> frozenset[str]:
        props = set() if config.rotary_pos_emb else {"permutation_invariant"}
        if config.cls:
            props.add("adds_cls_token")
        return frozenset(props)

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        import inspect

        from x_transformers import Encoder
        from x_transformers.x_transformers import AttentionLayers

        dim = _width(config, in_dim)
        dim_head = dim // config.heads
        rotary = {}
        if config.rotary_pos_emb:
            if dim_head < 4:
                raise ValueError(f"rotary embeddings need a head width of at least 4, got {dim_head}")
            # x-transformers' default (half the head width) fails for heads of width 4; keep it even and >= 4
            rotary = {"rotary_emb_dim": max(4, 2 * (dim_head // 4))}
            if "verbose" in inspect.signature(AttentionLayers.__init__).parameters:
                rotary["verbose"] = False  # its "rotary dim should be at least 32" is advice for language models
        self.proj = nn.Linear(in_dim, dim) if dim != in_dim else nn.Identity()
        self.cls_token = nn.Parameter(torch.randn(dim) * 0.02) if config.cls else None
        self.encoder = Encoder(
            dim=dim, depth=config.depth, heads=config.heads, attn_dim_head=dim_head, **rotary,
            rotary_pos_emb=config.rotary_pos_emb, ff_glu=config.ff_glu, use_rmsnorm=config.use_rmsnorm,
            attn_dropout=config.attn_dropout, ff_dropout=config.ff_dropout, layer_dropout=config.layer_dropout,
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


class RelBiasTransformer(Backbone):
    """Attention with a learned bias from the pulses' space-time interval (init5_hb_ft-2, 0.9854; 2nd place).

    For every pair of pulses, ds^2 = c^2 dt^2 - |dx|^2 (metres^2, from ``batch.xyzt``); the signed
    root sign(ds^2) sqrt|ds^2| / ``length_scale`` is clipped to +-``clip`` and encoded with
    ``bias_dim`` sinusoids (frequencies up to ``bias_scale``). Each of the ``biased_depth`` blocks maps
    that encoding with its own Linear to its bias: ``bias_mode = "content"`` (the 2nd-place model) a
    pair vector [B, L, L, dim_head] that each head reads through its query (added to the scores as
    q_i . r_ij and to the output as sum_j a_ij r_ij); ``"additive"`` a per-head additive bias
    [B, heads, L, L] (cheaper: fused attention kernels). Then ``depth`` plain pre-norm blocks, then a
    final LayerNorm.
    """

    name = "relbias_transformer"
    properties = frozenset({"permutation_invariant"})
    example_params = {"heads": 4, "biased_depth": 2, "depth": 1, "bias_dim": 8}
    requires = frozenset({"xyzt"})

    class Config(_BlockConfig):
        biased_depth: int = Field(4, gt=0, description="blocks with the space-time bias (first)")
        depth: int = Field(4, ge=0, description="plain blocks after the biased ones")
        bias_dim: int = Field(32, ge=2, multiple_of=2, description="sinusoids encoding the interval")
        c: float = Field(C_VACUUM, gt=0, description="light speed used in ds^2, m/ns")
        length_scale: float = Field(500.0, gt=0, description="metres per unit of the encoded interval")
        clip: float = Field(4.0, gt=0)
        bias_scale: float = Field(1024.0, gt=0, description="frequency multiplier of the interval encoding")
        bias_mode: Literal["content", "additive"] = Field(
            "content", description="content: q-dependent relative encoding (2nd place); additive: per-head bias")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        dim = _width(config, in_dim)
        self.proj = nn.Linear(in_dim, dim) if dim != in_dim else nn.Identity()
        block = lambda attn=None: TransformerBlock(dim, config.heads, config.ff_mult, config.dropout,  # noqa: E731
                                                   config.attn_dropout, attn=attn)
        if config.bias_mode == "content":
            self.biased = nn.ModuleList([block(RelativeAttention(dim, config.heads, config.attn_dropout))
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
        """Sinusoidal encoding of the scaled signed interval, [B, L, L, bias_dim] (no gradient: data only)."""
        cfg = self.config
        with torch.no_grad():
            p = zero_padding(xyzt.detach(), mask)
            dx2 = (p[:, :, None, :3] - p[:, None, :, :3]).pow(2).sum(-1)
            dt = cfg.c * (p[:, :, None, 3] - p[:, None, :, 3])
            ds2 = dt * dt - dx2
            d = torch.sign(ds2) * torch.sqrt(ds2.abs()) / cfg.length_scale
            return sinusoidal(cfg.bias_scale * d.clamp(-cfg.clip, cfg.clip), cfg.bias_dim)

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        mask = batch.mask
        x = self.proj(zero_padding(h, mask))
        # the geometry in the batch's precision (under fp16/bf16 autocast x is half precision: metres
        # and ns there overflow or lose metres); only the bounded result takes x's dtype
        rel = self.relation(batch.xyzt, mask).to(x.dtype)
        for block, proj in zip(self.biased, self.bias_proj):
            if self.config.bias_mode == "content":
                x = block(x, mask, rel=proj(rel))
            else:
                x = block(x, mask, bias=proj(rel).permute(0, 3, 1, 2))
        for block in self.plain:
            x = block(x, mask)
        return self.norm(x)


def _masked_softmax(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to ``keep``; rows with no kept entry are all zero."""
    fill = torch.full((), neg_fill(scores.dtype), dtype=scores.dtype, device=scores.device)
    p = torch.softmax(torch.where(keep, scores, fill), dim=-1)
    return torch.where(keep.any(-1, keepdim=True), p, torch.zeros((), dtype=p.dtype, device=p.device))


class MoleculeAttention(nn.Module):
    """MAT attention: lambda_a softmax(QK^T/sqrt(d)) + lambda_d softmax(-D) + lambda_g A_norm, then @ V.

    ``dist`` (the row-softmax of minus the distances) and ``adj`` (row-normalised adjacency) are
    [B, 1, L, L] and shared by the heads; lambda_a = 1 - lambda_d - lambda_g (no Q, K when it is 0).
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
            att = _masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dim_head), keep)
            p = p + self.lambda_a * att
        out = self.drop(p) @ v
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class GraphTransformer(Backbone):
    """Molecule-Attention-Transformer over the pulses: attention mixed with adjacency and distances (EXP_06-08).

    Positions are min-max normalised over the detector's bounding box (the log's units: the radius
    0.015 is ~17 m, one DOM spacing; 0.05 ~55 m). Adjacency: pulses closer than ``radius`` (self
    included), row-normalised; distance term: row-softmax of minus the pairwise distance. Weights
    ``lambda_g`` (adjacency) and ``lambda_d`` (distance); the learned attention gets 1 - lambda_g -
    lambda_d, so the log's 0.5/0.5 leaves no learned attention at all (a fixed graph smoother).
    """

    name = "graph_transformer"
    properties = frozenset({"permutation_invariant"})
    example_params = {"depth": 2, "heads": 4, "radius": 0.3}
    requires = frozenset({"xyzt"})

    class Config(_BlockConfig):
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
        dim = _width(config, in_dim)
        self.proj = nn.Linear(in_dim, dim) if dim != in_dim else nn.Identity()
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
            dist = (p[:, :, None, :] - p[:, None, :, :]).pow(2).sum(-1).sqrt()
            keep = mask[:, None, :] & mask[:, :, None]
            soft = _masked_softmax(-dist, keep)
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

    class Config(_BlockConfig):
        k: int = Field(8, gt=0, description="neighbours per pulse (besides itself)")
        local_depth: int = Field(4, gt=0)
        depth: int = Field(3, ge=0, description="ordinary (global) blocks after the local ones")
        space: Literal["xyz", "xyzt"] = Field("xyz", description="kNN metric: positions, or positions and c_ice * time")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        dim = _width(config, in_dim)
        self.proj = nn.Linear(in_dim, dim) if dim != in_dim else nn.Identity()
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


@hookimpl
def icezoo_components():
    return [Transformer, RelBiasTransformer, GraphTransformer, LocalAttention]
