"""ISeeCube: the BEiT-3 (TorchScale) encoder on IceCube pulses (Li, Cai, Jiang, arXiv:2308.13285; code ChenLi2049/ISeeCube).

Written on plain torch from TorchScale's ``Encoder`` as ISeeCube configures it (no TorchScale dependency).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from icezoo.core import Backbone, Batch, Config, IcezooError
from icezoo.nn import input_projection, merge_heads, neg_fill, zero_padding
from icezoo.nn.tracing import exporting


def relative_bucket(rel: torch.Tensor, buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bidirectional bucket of the slot offsets ``rel`` = key - query (TorchScale's RelativePositionBias):
    half the buckets per sign; offsets below a quarter of the buckets exact, then logarithmic up to
    ``max_distance``, beyond it the last bucket."""
    half = buckets // 2
    out = (rel > 0).long() * half
    n = rel.abs()
    exact = half // 2
    large = exact + (torch.log(n.float().clamp_min(1) / exact) / math.log(max_distance / exact)
                     * (half - exact)).long()
    return out + torch.where(n < exact, n, large.clamp(max=half - 1))


class BeitLayer(nn.Module):
    """One TorchScale encoder layer: self-attention and a GELU feed-forward, each a residual branch.

    ``deepnorm`` (DeepNet, arXiv:2203.00555; ISeeCube's choice): post-norm ``LN(alpha x + f(x))`` with
    alpha = (2N)^(1/4) for an N-layer encoder. ``subln`` (Magneto, arXiv:2210.06423; BEiT-3's default):
    pre-norm ``x + f(LN(x))`` with one more LayerNorm inside each branch (before the attention's output
    projection and before the second feed-forward layer). Shapes: x [B, L, D], mask [B, L], bias
    [1, h, L, L] or None -> [B, L, D].
    """

    def __init__(self, dim: int, heads: int, ff: int, norm: str, alpha: float, dropout: float, attn_dropout: float):
        super().__init__()
        self.heads, self.norm, self.alpha = heads, norm, alpha
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ff)
        self.fc2 = nn.Linear(ff, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.inner_attn_ln = nn.LayerNorm(dim) if norm == "subln" else None
        self.ffn_layernorm = nn.LayerNorm(ff) if norm == "subln" else None
        self.drop = nn.Dropout(dropout)
        self.attn_dropout = attn_dropout
        nn.init.xavier_uniform_(self.qkv.weight, gain=1 / math.sqrt(2))  # TorchScale's q, k, v init
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def scale_init(self, factor: float) -> None:
        """Multiply the value, output and feed-forward weights (DeepNorm's beta, Sub-LN's gamma)."""
        with torch.no_grad():
            d = self.out_proj.in_features
            for t in (self.qkv.weight[2 * d:], self.qkv.bias[2 * d:], self.out_proj.weight, self.out_proj.bias,
                      self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias):
                t.mul_(factor)

    def attend(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        keep = mask[:, None, None, :]
        add = torch.zeros((), dtype=q.dtype, device=x.device) if bias is None else bias.to(q.dtype)
        add = torch.where(keep, add, torch.full((), neg_fill(q.dtype), dtype=q.dtype, device=x.device))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=add,
                                             dropout_p=self.attn_dropout if self.training else 0.0)
        out = merge_heads(out)
        if self.inner_attn_ln is not None:
            out = self.inner_attn_ln(out)
        return self.out_proj(out)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(x))
        if self.ffn_layernorm is not None:
            h = self.ffn_layernorm(h)
        return self.fc2(h)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm == "subln":
            x = x + self.drop(self.attend(self.attn_norm(x), mask, bias))
            return x + self.drop(self.ffn(self.ffn_norm(x)))
        x = self.attn_norm(x * self.alpha + self.drop(self.attend(x, mask, bias)))
        return self.ffn_norm(x * self.alpha + self.drop(self.ffn(x)))


class BeitEncoder(nn.Module):
    """N :class:`BeitLayer` s with TorchScale's initial scaling, an optional relative position bias shared
    by all its layers (T5 buckets of the slot offset, one bias per head), and with ``subln`` a final LayerNorm."""

    def __init__(self, depth: int, dim: int, heads: int, ff: int, norm: str, rel_buckets: int, max_rel_pos: int,
                 dropout: float, attn_dropout: float):
        super().__init__()
        alpha = (2.0 * depth) ** 0.25 if norm == "deepnorm" else 1.0
        self.layers = nn.ModuleList(BeitLayer(dim, heads, ff, norm, alpha, dropout, attn_dropout) for _ in range(depth))
        factor = (8.0 * depth) ** -0.25 if norm == "deepnorm" else math.sqrt(math.log(2.0 * depth))
        for layer in self.layers:
            layer.scale_init(factor)
        self.rel = nn.Embedding(rel_buckets, heads) if rel_buckets else None
        self.rel_buckets, self.max_rel_pos = rel_buckets, max_rel_pos
        self.final_norm = nn.LayerNorm(dim) if norm == "subln" else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bias = None
        if self.rel is not None:
            pos = torch.arange(x.shape[1], device=x.device)
            bucket = relative_bucket(pos[None, :] - pos[:, None], self.rel_buckets, self.max_rel_pos)
            bias = self.rel(bucket).permute(2, 0, 1)[None]  # [1, h, L, L]
        for layer in self.layers:
            x = layer(x, mask, bias)
        return self.final_norm(x) if self.final_norm is not None else x


class ISeeCube(Backbone):
    """BEiT-3 encoder as ISeeCube stacks it (arXiv:2308.13285, ChenLi2049/ISeeCube ``IceCubeModel_RegB``).

    Two TorchScale encoders, each wrapped in a residual connection: ``rel_depth`` layers with a
    relative position bias over the pulse slots (T5 buckets, ``rel_buckets``, ``max_rel_pos``), then,
    after prepending a learned CLS token (``cls``) and adding learned absolute slot embeddings (for up
    to ``max_len`` pulses), ``depth`` plain layers. ``norm``: ``deepnorm`` (ISeeCube's config:
    post-norm with residual scaling alpha = (2N)^(1/4) and the value/output/feed-forward weights
    initialised times (8N)^(-1/4)) or ``subln`` (BEiT-3's default: pre-norm plus a LayerNorm inside
    each branch, weights times sqrt(log 2N), a final LayerNorm). The positions follow the selection's
    pulse order (time), so the backbone is not permutation invariant. Padded pulses are never keys;
    ISeeCube itself attended to padding (no mask given to TorchScale).
    """

    name = "iseecube"
    example_params = {"heads": 2, "rel_depth": 1, "depth": 1, "max_len": 64}

    class Config(Config):
        dim: int | None = Field(None, gt=0, description="model width; None keeps the embedder's dim")
        heads: int = Field(12, gt=0)
        ff_mult: int = Field(4, gt=0, description="feed-forward hidden width = ff_mult * dim (ISeeCube: 1536 = 4 x 384)")
        rel_depth: int = Field(6, ge=0, description="layers of the first encoder (relative position bias)")
        depth: int = Field(12, gt=0, description="layers of the second encoder (CLS, absolute positions)")
        rel_buckets: int = Field(32, ge=4, description="relative position buckets (T5), half per direction")
        max_rel_pos: int = Field(196, gt=1, description="slot offset where the logarithmic buckets end")
        max_len: int = Field(196, gt=0, description="most pulses per event (learned absolute slot embeddings)")
        norm: Literal["deepnorm", "subln"] = Field("deepnorm", description="DeepNorm post-norm (ISeeCube) or "
                                                   "Sub-LN pre-norm (BEiT-3's default)")
        cls: bool = Field(True, description="prepend a learned CLS token before the second encoder")
        dropout: float = Field(0.0, ge=0, lt=1)
        attn_dropout: float = Field(0.0, ge=0, lt=1)

    @classmethod
    def declared_properties(cls, config: Config) -> frozenset[str]:
        return frozenset({"adds_cls_token"}) if config.cls else frozenset()

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        dim = config.dim or in_dim
        if dim % config.heads:
            raise ValueError(f"dim {dim} is not divisible by heads {config.heads}")
        if config.rel_buckets // 2 // 2 >= config.max_rel_pos:
            raise ValueError(f"max_rel_pos {config.max_rel_pos} must exceed rel_buckets/4 = {config.rel_buckets // 4}")
        ff, c = config.ff_mult * dim, config
        self.proj = input_projection(in_dim, dim)
        self.encoder_rel = (BeitEncoder(c.rel_depth, dim, c.heads, ff, c.norm, c.rel_buckets, c.max_rel_pos,
                                        c.dropout, c.attn_dropout) if c.rel_depth else None)
        self.cls_token = nn.Parameter(torch.randn(dim) * 0.02) if c.cls else None
        self.pos = nn.Parameter(torch.randn(c.max_len + int(c.cls), dim) * 0.02)
        self.encoder = BeitEncoder(c.depth, dim, c.heads, ff, c.norm, 0, 0, c.dropout, c.attn_dropout)
        self.out_dim = dim

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        mask = batch.mask
        if not exporting() and mask.shape[1] > self.config.max_len:  # exported: onnxruntime refuses the shapes
            raise IcezooError(f"iseecube: a batch of {mask.shape[1]} pulse slots, but max_len is "
                              f"{self.config.max_len}: set backbone.max_len >= selection.max_pulses")
        x = self.proj(zero_padding(h, mask))
        if self.encoder_rel is not None:
            x = x + self.encoder_rel(x, mask)
        if self.cls_token is not None:
            b = x.shape[0]
            x = torch.cat([self.cls_token.to(x.dtype).expand(b, 1, -1), x], dim=1)
            mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        slots = torch.arange(x.shape[1], device=x.device)  # a gather, not a slice: no bound on the exported length
        x = x + self.pos.index_select(0, slots).to(x.dtype)
        return x + self.encoder(x, mask)
