"""Dense k nearest neighbours on padded events (no pyg-lib): a padded pulse is never a neighbour."""

from __future__ import annotations

import math

import torch

from icezoo.nn.masking import zero_padding
from icezoo.nn.tracing import exporting, smallest


def masked_knn(pos: torch.Tensor, mask: torch.Tensor, k: int, time: torch.Tensor | None = None,
               include_self: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest real pulses of every pulse, dense and batched.

    Shapes: pos [B, L, d] coordinates (any units), mask [B, L] real pulses, time [B, L] optional
    tie-breaker -> ``(index, valid)``, both [B, L, k]: ``index[b, i, j]`` is the slot of the j-th
    nearest neighbour of pulse i (nearest first), ``valid`` says which entries are real neighbours.

    * Padded pulses are never neighbours; rows of padded pulses are all invalid.
    * Ties are broken by (distance, time), so the neighbour *set* does not depend on the pulse order
      (only exact duplicates in both position and time fall back to slot order).
    * ``k`` larger than an event's pulse count: the surplus entries are invalid.
    * Invalid entries point at the query itself, so gathering with ``index`` is always safe.

    Distances are exact squared differences (not cdist's matmul trick, whose rounding depends on the
    batch and would break ties differently), :func:`pair_distances`. No gradient flows through the
    neighbour choice. The same code runs exported (ONNX, TorchScript) for any batch and length
    (:mod:`icezoo.nn.tracing`).
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    b, length, _ = pos.shape
    device = pos.device
    with torch.no_grad():
        p = zero_padding(pos.detach(), mask)
        dist = pair_distances(p)
        keep = mask[:, None, :] & mask[:, :, None]
        slots = torch.arange(length, device=device)
        if not include_self:
            keep = keep & (slots[:, None] != slots[None, :])
        dist = dist.masked_fill(~keep, math.inf)
        if time is not None:
            # secondary key first (stable), then the primary key with a stable sort
            t = torch.where(mask, time.detach(), torch.full((), math.inf, dtype=time.dtype, device=device))
            order = smallest(t, length)[1]  # [B, L]: slots in time order
        else:
            order = slots.expand(b, length)
        dist = dist.gather(2, order[:, None, :].expand(b, length, length))
        if exporting() or length < k:
            # k columns of "no neighbour" behind the candidates, so that there are always k: an exported
            # graph has no branch on the pulse count and runs for any length (eager pads only short batches)
            dist = torch.cat([dist, dist.new_full((b, length, k), math.inf)], dim=-1)
            order = torch.cat([order, order.new_zeros(b, k)], dim=1)  # the extra columns' slot: never valid
        sorted_d, pos_in_order = smallest(dist, k)
        valid = torch.isfinite(sorted_d) & mask[:, :, None]
        index = order.gather(1, pos_in_order.reshape(b, length * k)).view(b, length, k)
        index = torch.where(valid, index, slots[None, :, None])
    return index, valid


def pair_distances(p: torch.Tensor, q: torch.Tensor | None = None) -> torch.Tensor:
    """Squared distances from every point of ``q`` (default ``p``) to every point of ``p``.

    Shapes: p [B, L, d], q [B, Lq, d] -> [B, Lq, L].

    Up to 8 coordinates: one coordinate at a time, added in order (dx*dx + dy*dy + ...), so that every
    runtime (torch, onnxruntime) rounds alike and breaks equal distances alike (a reduction's order is
    the runtime's choice; for 3 and 4 coordinates torch's own sum gives these same numbers). Wider
    (latent) spaces: blocks of 8 coordinates, never [B, Lq, L, d].
    """
    q = p if q is None else q
    if p.shape[-1] > 8:
        return sum((q[:, :, None, c:c + 8] - p[:, None, :, c:c + 8]).pow(2).sum(-1) for c in range(0, p.shape[-1], 8))
    out = None
    for c in range(p.shape[-1]):
        diff = q[:, :, None, c] - p[:, None, :, c]
        out = diff * diff if out is None else out + diff * diff
    return out


def knn_mask(index: torch.Tensor, valid: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """(index, valid) of :func:`masked_knn` -> dense pair mask: ``[b, i, j]`` True if j is a neighbour of i.

    Shapes: index, valid [B, L, k] -> [B, L, length] (length defaults to L).
    """
    b, n, _ = index.shape
    length = n if length is None else length
    counts = torch.zeros(b, n, length, dtype=torch.int32, device=index.device)
    counts.scatter_add_(2, index, valid.to(torch.int32))
    return counts > 0


__all__ = ["masked_knn", "knn_mask", "pair_distances"]
