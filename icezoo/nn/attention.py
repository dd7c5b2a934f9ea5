"""Multi-head self-attention on padded events and the pre-norm block the attention backbones share.

:class:`BiasedAttention` takes an additive bias and an optional pair mask (local attention);
:class:`RelativeAttention` is the content-dependent (Shaw-style) relative variant; :class:`TransformerBlock`
wraps either (or any attention called as ``attn(x, mask, **kw)``) in a pre-norm residual block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from icezoo.nn.masking import masked_softmax, neg_fill
from icezoo.nn.mlp import mlp


class BiasedAttention(nn.Module):
    """Multi-head self-attention with an optional additive bias and masks.

    Shapes: x [B, L, D], mask [B, L], bias (optional) broadcastable to [B, h, L, L], allowed
    (optional) [B, L, L] or [B, h, L, L] -> [B, L, D]. ``bias`` is added to the scaled scores;
    ``allowed`` restricts which keys each query may see (local attention). Padded keys are always
    excluded; a query row left with no key outputs zeros.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, dim_head: int | None = None):
        super().__init__()
        if dim_head is None:
            if dim % heads:
                raise ValueError(f"dim {dim} is not divisible by heads {heads}")
            dim_head = dim // heads
        self.heads = heads
        self.dim_head = dim_head
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * heads * dim_head)
        self.out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None,
                allowed: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        keep = mask[:, None, None, :]
        if allowed is not None:
            keep = keep & (allowed[:, None] if allowed.dim() == 3 else allowed)
        add = torch.zeros((), dtype=q.dtype, device=x.device) if bias is None else bias.to(q.dtype)
        add = torch.where(keep, add, torch.full((), neg_fill(q.dtype), dtype=q.dtype, device=x.device))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=add,
                                             dropout_p=self.dropout if self.training else 0.0)
        rows = keep.any(-1, keepdim=True)  # [B, 1|h, 1|L, 1]
        out = torch.where(rows, out, torch.zeros((), dtype=out.dtype, device=out.device))
        return self.out(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))


class RelativeAttention(nn.Module):
    """Multi-head attention with content-dependent relative encodings (Shaw et al.; the 2nd-place model).

    Shapes: x [B, L, D], mask [B, L], rel [B, L, L, dim_head] -> [B, L, D]. The scores get
    ``q_i . rel_ij`` added and the output gets ``sum_j a_ij rel_ij``, so each head reads the pair relation through its
    own query. Padded keys are excluded; a query row with no key outputs zeros.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dim_head = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        q = q * self.dim_head ** -0.5
        rel = rel.to(q.dtype)
        scores = q @ k.transpose(-1, -2) + torch.einsum("bhid,bijd->bhij", q, rel)
        att = self.drop(masked_softmax(scores, mask[:, None, None, :]))
        out = att @ v + torch.einsum("bhij,bijd->bhid", att, rel)
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x), mask, **kw)``, then ``x + ff(norm(x))``.

    Shapes: x [B, L, D], mask [B, L] (``**kw`` go to the attention) -> [B, L, D].

    ``attn`` is any module called as ``attn(x, mask, **kw)`` (default :class:`BiasedAttention`), so the
    relative-bias, local and molecule-attention backbones share one block.
    """

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, dropout: float = 0.0, attn_dropout: float = 0.0,
                 attn: nn.Module | None = None, act: str = "gelu"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn if attn is not None else BiasedAttention(dim, heads, attn_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = mlp(dim, [dim * ff_mult], dim, act=act, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, **kw) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask, **kw))
        return x + self.drop(self.ff(self.norm2(x)))


__all__ = ["BiasedAttention", "RelativeAttention", "TransformerBlock"]
