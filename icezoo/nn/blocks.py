"""Layers shared by the zoo's components, written once.

* :func:`masked_knn` / :func:`knn_mask`: dense k-nearest neighbours on padded events (no pyg-lib).
* :func:`mlp`: a Linear/activation stack.
* :class:`BiasedAttention` / :class:`TransformerBlock`: multi-head attention with an additive bias
  ``[B, h, L, L]``, a key mask ``[B, L]`` and an optional pair mask ``[B, L, L]`` (local attention),
  inside a pre-norm residual block; :class:`RelativeAttention`: the content-dependent (Shaw-style)
  relative variant, pair encodings read through each head's query.
* :func:`sinusoidal`: transformer-style sinusoidal encoding of scalars.

Masking rules, shared by everything here: a padded pulse is never a key nor a neighbour; a query row
with no allowed key (a padded slot, or a whole empty event) gives zeros, never NaN.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from icezoo.core.detector import C_ICE, C_VACUUM, DETECTOR_MAX, DETECTOR_MIN  # noqa: F401 (re-exported)


def neg_fill(dtype: torch.dtype) -> float:
    """The additive value that removes a key from a softmax (finite, so no inf - inf)."""
    return torch.finfo(dtype).min


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` [B, L, ...] with padded slots set to 0 (a select, so NaN/inf there cannot leak, even in grads)."""
    m = mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


# ---------------------------------------------------------------------------------------------
# k nearest neighbours on padded events


def masked_knn(pos: torch.Tensor, mask: torch.Tensor, k: int, time: torch.Tensor | None = None,
               include_self: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest real pulses of every pulse, dense and batched.

    ``pos`` [B, L, d] coordinates (any units), ``mask`` [B, L] real pulses, ``time`` [B, L] optional
    tie-breaker. Returns ``(index, valid)``, both [B, L, k]: ``index[b, i, j]`` is the slot of the j-th
    nearest neighbour of pulse i (nearest first), ``valid`` says which entries are real neighbours.

    * Padded pulses are never neighbours; rows of padded pulses are all invalid.
    * Ties are broken by (distance, time), so the neighbour *set* does not depend on the pulse order
      (only exact duplicates in both position and time fall back to slot order).
    * ``k`` larger than an event's pulse count: the surplus entries are invalid.
    * Invalid entries point at the query itself, so gathering with ``index`` is always safe.

    Distances are exact squared differences (not cdist's matmul trick, whose rounding depends on the
    batch and would break ties differently). No gradient flows through the neighbour choice.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    b, length, _ = pos.shape
    device = pos.device
    with torch.no_grad():
        p = zero_padding(pos.detach(), mask)
        dist = (p[:, :, None, :] - p[:, None, :, :]).pow(2).sum(-1)  # [B, L, L]
        keep = mask[:, None, :].expand(b, length, length)
        if not include_self:
            keep = keep & ~torch.eye(length, dtype=torch.bool, device=device)
        dist = dist.masked_fill(~keep, math.inf)
        slots = torch.arange(length, device=device)
        if time is not None:
            # secondary key first (stable), then the primary key with a stable sort
            t = torch.where(mask, time.detach(), torch.full((), math.inf, dtype=time.dtype, device=device))
            order = torch.sort(t, dim=1, stable=True).indices  # [B, L]
        else:
            order = slots.expand(b, length)
        order3 = order[:, None, :].expand(b, length, length)
        dist = dist.gather(2, order3)
        sorted_d, pos_in_order = torch.sort(dist, dim=-1, stable=True)
        kk = min(k, length)
        index = order3.gather(2, pos_in_order[..., :kk])
        valid = torch.isfinite(sorted_d[..., :kk]) & mask[:, :, None]
        selfidx = slots[None, :, None].expand(b, length, kk)
        index = torch.where(valid, index, selfidx)
        if kk < k:
            extra = k - kk
            index = torch.cat([index, slots[None, :, None].expand(b, length, extra)], dim=-1)
            valid = torch.cat([valid, torch.zeros(b, length, extra, dtype=torch.bool, device=device)], dim=-1)
    return index, valid


def knn_mask(index: torch.Tensor, valid: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """(index, valid) of :func:`masked_knn` -> dense pair mask [B, L, L]: ``[b, i, j]`` True if j is a neighbour of i."""
    b, n, _ = index.shape
    length = n if length is None else length
    counts = torch.zeros(b, n, length, dtype=torch.int32, device=index.device)
    counts.scatter_add_(2, index, valid.to(torch.int32))
    return counts > 0


# ---------------------------------------------------------------------------------------------
# MLP and encodings

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh,
                "leaky_relu": nn.LeakyReLU}


def activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation '{name}' (known: {', '.join(sorted(_ACTIVATIONS))})") from None


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "gelu", norm: bool = False,
        dropout: float = 0.0, final_act: bool = False) -> nn.Sequential:
    """Linear -> [LayerNorm] -> act -> [Dropout] for each hidden width, then Linear to ``out_dim``
    (followed by the activation too when ``final_act``)."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if norm:
            layers.append(nn.LayerNorm(h))
        layers.append(activation(act))
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_dim))
    if final_act:
        layers.append(activation(act))
    return nn.Sequential(*layers)


def sinusoidal(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal encoding of scalars: ``x`` [...] -> [..., dim] (sin of dim/2 geometric frequencies
    from 1 down to 1/max_period, then cos)."""
    if dim < 2 or dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dim >= 2, got {dim}")
    half = dim // 2
    steps = torch.arange(half, device=x.device, dtype=x.dtype)
    freqs = torch.exp(-math.log(max_period) * steps / max(half - 1, 1))
    args = x[..., None] * freqs
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


# ---------------------------------------------------------------------------------------------
# Attention


class BiasedAttention(nn.Module):
    """Multi-head self-attention with an optional additive bias and masks.

    ``forward(x [B, L, D], mask [B, L], bias=None, allowed=None)``: ``bias`` is added to the scaled
    scores (any shape broadcastable to [B, h, L, L]); ``allowed`` [B, L, L] or [B, h, L, L] restricts
    which keys each query may see (local attention). Padded keys are always excluded; a query row left
    with no key outputs zeros.
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

    ``forward(x [B, L, D], mask [B, L], rel [B, L, L, dim_head])``: the scores get ``q_i . rel_ij``
    added and the output gets ``sum_j a_ij rel_ij``, so each head reads the pair relation through its
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
        keep = mask[:, None, None, :]
        scores = torch.where(keep, scores, torch.full((), neg_fill(scores.dtype), dtype=scores.dtype,
                                                     device=x.device))
        att = torch.softmax(scores, dim=-1)
        att = self.drop(torch.where(keep.any(-1, keepdim=True), att, torch.zeros((), dtype=att.dtype,
                                                                                 device=x.device)))
        out = att @ v + torch.einsum("bhij,bijd->bhid", att, rel)
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x), mask, **kw)``, then ``x + ff(norm(x))``.

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


__all__ = [
    "C_VACUUM", "C_ICE", "DETECTOR_MIN", "DETECTOR_MAX", "neg_fill", "zero_padding", "masked_knn", "knn_mask",
    "activation", "mlp", "sinusoidal", "BiasedAttention", "RelativeAttention", "TransformerBlock",
]
