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
from icezoo.nn.tracing import exporting, merge_heads


def _eager_cpu(t: torch.Tensor) -> bool:
    """Whether ``t`` is on a CPU in eager execution (not under torch.export or torch.jit.trace): the
    CPU paths below branch on values and loop over events, which an exported graph may not."""
    return t.device.type == "cpu" and not exporting()


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
        if bias is None and allowed is None and _eager_cpu(x) and bool(mask.all()):
            # no padded key (CPU: the check costs no device sync): no mask to build, add and undo
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
            return self.out(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))
        keep = mask[:, None, None, :]
        if allowed is not None:
            keep = keep & (allowed[:, None] if allowed.dim() == 3 else allowed)
        add = torch.zeros((), dtype=q.dtype, device=x.device) if bias is None else bias.to(q.dtype)
        add = torch.where(keep, add, torch.full((), neg_fill(q.dtype), dtype=q.dtype, device=x.device))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=add,
                                             dropout_p=self.dropout if self.training else 0.0)
        rows = keep.any(-1, keepdim=True)  # [B, 1|h, 1|L, 1]
        out = torch.where(rows, out, torch.zeros((), dtype=out.dtype, device=out.device))
        return self.out(merge_heads(out))


def _headmajor_add_(s, x, y):
    """s [B, Lq, h, L] += x @ y with x [B, h, Lq, d], y [B, h, d, L] (head-major products into query-major
    scores). On a CPU without autograd, one gemm per event accumulates straight into the strided view
    (no [B, h, Lq, L] temporary, no strided add); else the product, transposed, is added."""
    if _eager_cpu(s) and not (torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)):
        for b in range(s.shape[0]):
            s[b].transpose(0, 1).baddbmm_(x[b], y[b])
        return s
    return s.add_(torch.matmul(x, y).transpose(1, 2))


def _headmajor_mm(a, v):
    """a.transpose(1, 2) @ v for a [B, Lq, h, L] (query-major), v [B, h, L, d] -> [B, Lq, h, d]. On a CPU
    without autograd one gemm per event reads a in place (matmul would copy a to head-major first)."""
    if _eager_cpu(a) and not (torch.is_grad_enabled() and (a.requires_grad or v.requires_grad)):
        out = a.new_empty(a.shape[0], a.shape[1], a.shape[2], v.shape[-1])
        for b in range(a.shape[0]):
            torch.bmm(a[b].transpose(0, 1), v[b], out=out[b].transpose(0, 1))
        return out
    return torch.matmul(a.transpose(1, 2), v).transpose(1, 2)


def _relative_core(q, k, v, qw, e, mask, dropout: float = 0.0):
    """The pair part of :class:`RelativeAttention`'s fast path, for the queries given.

    Shapes: q [B, Lq, h, d] (scaled), k, v [B, L, h, d], qw [B, Lq, h, c] (the queries contracted
    with the pair projection), e [B, Lq, L, c] (the pair encodings of these queries), mask [B, L] or
    None (no padded key) -> (a [B, Lq, h, L], o1 = sum_j a_ij v_j [B, Lq, h, d], o2 = sum_j a_ij e_ij
    [B, Lq, h, c], rows = sum_j a_ij [B, Lq, h, 1] when ``dropout`` makes it differ from 1, else None).

    The scores live query-major ([B, Lq, h, L]) so that both pair products (qw . e and a . e) are
    plain batched matmuls over (event, query) that read e in place; q . k and a @ v batch over
    (event, head) and meet them through one transposed view each.
    """
    if (_eager_cpu(q) and not dropout and q.dtype in (torch.float32, torch.float64)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, qw, e)))):
        return _relative_core_events(q, k, v, qw, e, mask)
    s = torch.matmul(qw, e.transpose(-1, -2))
    _headmajor_add_(s, q.transpose(1, 2), k.permute(0, 2, 3, 1))
    if mask is not None:
        s.masked_fill_(~mask[:, None, None, :], neg_fill(s.dtype))
    half = s.dtype in (torch.float16, torch.bfloat16)
    a = torch.softmax(s, dim=-1, dtype=torch.float32 if half else None).to(s.dtype)
    rows = None
    if dropout:
        a = F.dropout(a, dropout)
        rows = a.sum(-1, keepdim=True)
    o2 = torch.matmul(a, e)
    o1 = _headmajor_mm(a, v.transpose(1, 2))
    return a, o1, o2, rows


def _relative_core_events(q, k, v, qw, e, mask):
    """:func:`_relative_core` on a CPU without autograd or dropout, one event at a time: the event's
    scores ([Lq, h, L], under a MiB at 128 pulses) stay in cache from the first product to the last,
    and every step writes in place (the softmax too). The same operations per event: same numbers."""
    b, n, h, _ = q.shape
    a = q.new_empty(b, n, h, k.shape[1])
    o1, o2 = q.new_empty(b, n, h, v.shape[-1]), q.new_empty(b, n, h, e.shape[-1])
    qh, kt, vh, et = q.transpose(1, 2), k.permute(0, 2, 3, 1), v.transpose(1, 2), e.transpose(-1, -2)
    fill = neg_fill(q.dtype)
    for i in range(b):
        s = torch.matmul(qw[i], et[i], out=a[i])
        s.transpose(0, 1).baddbmm_(qh[i], kt[i])
        if mask is not None:
            s.masked_fill_(~mask[i], fill)
        torch.ops.aten._softmax.out(s, -1, False, out=s)
        torch.matmul(s, e[i], out=o2[i])
        torch.bmm(s.transpose(0, 1), vh[i], out=o1[i].transpose(0, 1))
    return a, o1, o2, None


class _RelativeCore(torch.autograd.Function):
    """:func:`_relative_core` (no dropout) with a hand-written backward: the attention matrix is
    kept in both layouts it is read in, and each gradient is formed once in the layout its matmuls
    want (autograd's generic backward copies each of them several times)."""

    @staticmethod
    def forward(ctx, q, k, v, qw, e, mask):
        with torch.autocast(q.device.type, enabled=False):  # the caller gave one dtype
            a, o1, o2, _ = _relative_core(q, k, v, qw, e, mask)
        ctx.save_for_backward(q, k, v, e, a)
        return o1, o2

    @staticmethod
    def backward(ctx, go1, go2):
        q, k, v, e, a = ctx.saved_tensors
        qh, kh, vh, go1h = (t.transpose(1, 2) for t in (q, k, v, go1))  # [B, h, L, d] views
        gv = _headmajor_mm(a.transpose(1, 3), go1h)  # a.transpose(1, 3): [B, L(keys), h, L(queries)]
        ga = torch.matmul(go2, e.transpose(-1, -2))  # [B, L, h, L]
        _headmajor_add_(ga, go1h, vh.transpose(-1, -2))
        gs = torch._softmax_backward_data(ga, a, -1, a.dtype)  # a * (ga - sum_j a ga), one pass
        gqw = torch.matmul(gs, e)
        gq = _headmajor_mm(gs, kh)  # per head gs @ k
        gk = _headmajor_mm(gs.transpose(1, 3), qh)  # per head gs^T @ q
        return gq, gk, gv, gqw, None, None


class RelativeAttention(nn.Module):
    """Multi-head attention with content-dependent relative encodings (Shaw et al.; the 2nd-place model).

    Shapes: x [B, L, D], mask [B, L], rel [B, L, L, dim_head] -> [B, L, D]. The scores get
    ``q_i . rel_ij`` added and the output gets ``sum_j a_ij rel_ij``, so each head reads the pair
    relation through its own query. Padded keys are excluded; a query row with no key outputs zeros.

    Fast path: ``forward(x, mask, rel=e, proj=linear)`` with the raw pair encodings e [B, L, L, c]
    and the Linear(c, dim_head) that would make rel = W e + b. The query is contracted with the
    projection first, q . (W e + b) = (W^T q) . e + q . b, and q . b is the same for every key of
    a query, so softmax drops it; the output is W (sum_j a_ij e_ij) + b sum_j a_ij. So the
    [B, L, L, dim_head] tensor is never formed, e is shared by every block, and without grad
    (inference) the queries go in blocks of ``query_block``, which bounds the [B, Lq, h, L] scores on
    long events (same numbers: each query row is computed alike).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, query_block: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dim_head = heads, dim // heads
        self.query_block = query_block
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rel: torch.Tensor,
                proj: nn.Linear | None = None) -> torch.Tensor:
        if proj is None:
            return self._reference(x, mask, rel)
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.dim_head).unbind(2)  # [B, L, h, dh]
        q = q * self.dim_head ** -0.5
        qw = torch.matmul(q, proj.weight.to(q.dtype))  # [B, L, h, c]
        dt = qw.dtype
        k, v, e = k.to(dt), v.to(dt), rel.to(dt)
        p = self.drop.p if self.training else 0.0
        rows = None
        keys = None if _eager_cpu(x) and bool(mask.all()) else mask  # no padded key: no masking pass
        if torch.is_grad_enabled() and not p and not exporting():
            o1, o2 = _RelativeCore.apply(q.to(dt), k, v, qw, e, keys)
        elif p or torch.is_grad_enabled() or not self.query_block or exporting() or n <= self.query_block:
            _, o1, o2, rows = _relative_core(q.to(dt), k, v, qw, e, keys, p)
        else:  # inference on long events: query blocks
            o1 = q.new_empty(b, n, self.heads, self.dim_head, dtype=dt)
            o2 = q.new_empty(b, n, self.heads, e.shape[-1], dtype=dt)
            for i in range(0, n, self.query_block):
                j = min(n, i + self.query_block)
                _, o1[:, i:j], o2[:, i:j], _ = _relative_core(q[:, i:j].to(dt), k, v, qw[:, i:j], e[:, i:j], keys)
        bias = proj.bias.to(dt) if proj.bias is not None else torch.zeros((), dtype=dt, device=x.device)
        if o1.is_contiguous():  # o1 + o2 W^T in one gemm
            out = torch.addmm(o1.view(-1, o1.shape[-1]), o2.reshape(-1, o2.shape[-1]), proj.weight.t().to(dt))
            out = out.view(o1.shape) + (bias if rows is None else bias * rows)
        else:
            out = o1 + torch.matmul(o2, proj.weight.t().to(dt)) + (bias if rows is None else bias * rows)
        if not (_eager_cpu(x) and bool(mask.any(-1).all())):
            out = out * mask.any(-1).to(out.dtype)[:, None, None, None]  # an empty event: zeros
        return self.out(out.reshape(b, n, d))

    def _reference(self, x: torch.Tensor, mask: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """The plain formula with the pair vectors given: the fast path's reference."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        q = q * self.dim_head ** -0.5
        rel = rel.to(q.dtype)
        scores = q @ k.transpose(-1, -2) + torch.einsum("bhid,bijd->bhij", q, rel)
        att = self.drop(masked_softmax(scores, mask[:, None, None, :]))
        out = att @ v + torch.einsum("bhij,bijd->bhid", att, rel)
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x), mask, **kw)``, then ``x + ff(norm(x))``;
    ``norm_first = False``: post-norm, ``norm(x + attn(x))`` then ``norm(x + ff(x))`` (torch's
    TransformerEncoderLayer default, as GraphNeT's DynTrans uses it).

    Shapes: x [B, L, D], mask [B, L] (``**kw`` go to the attention) -> [B, L, D].

    ``attn`` is any module called as ``attn(x, mask, **kw)`` (default :class:`BiasedAttention`), so the
    relative-bias, local and molecule-attention backbones share one block.
    """

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, dropout: float = 0.0, attn_dropout: float = 0.0,
                 attn: nn.Module | None = None, act: str = "gelu", norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn if attn is not None else BiasedAttention(dim, heads, attn_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = mlp(dim, [dim * ff_mult], dim, act=act, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, **kw) -> torch.Tensor:
        if not self.norm_first:
            x = self.norm1(x + self.drop(self.attn(x, mask, **kw)))
            return self.norm2(x + self.drop(self.ff(x)))
        x = x + self.drop(self.attn(self.norm1(x), mask, **kw))
        return x + self.drop(self.ff(self.norm2(x)))


__all__ = ["BiasedAttention", "RelativeAttention", "TransformerBlock"]
