"""Dense graph layers on padded events, written once for the graph family (DynEdge, DynEdge-TITO,
DynNet, EGNN, the GraphNet embedder, the PyG adapter).

A graph is the ``(index, valid)`` pair of :func:`knn_graph` ([B, L, k] each): ``index[b, i, j]`` is the
slot of the j-th neighbour of pulse i, ``valid`` says which entries are real edges (edge j -> i; a
message flows from the neighbour to the pulse, as in PyG's ``source_to_target`` flow). The masking
rules of :mod:`icezoo.nn`: padded pulses are never neighbours and get zero outputs; a pulse without
a neighbour aggregates to zeros (PyG's convention), never NaN. Everything runs on the padded batch
without compiled extras (no torch-cluster, no pyg-lib), so the same code runs on any device.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from icezoo.core.detector import C_ICE
from icezoo.nn.knn import masked_knn
from icezoo.nn.masking import zero_padding
from icezoo.nn.mlp import activation, mlp

Aggregation = Literal["sum", "mean", "max"]
Space = Literal["xyz", "xyzt", "xyztc"]


# ---------------------------------------------------------------------------------------------
# graphs


def knn_space(xyzt: torch.Tensor, space: Space, features: torch.Tensor | None = None,
              charge_column: int | None = None, charge_scale: float = 500.0) -> torch.Tensor:
    """The coordinates a kNN graph is built on, in metres.

    ``xyz``: DOM positions; ``xyzt``: positions and c_ice * t (light in ice travels 0.22 m/ns);
    ``xyztc``: also ``charge_scale`` * the feature column ``charge_column`` (kaggle_norm's log10(q)/3
    is column 4; with the default 500 one unit of it counts as much as 500 m, the scale of
    kaggle_norm's x / 500, the units in which EXP_38/39 built their xyztc graphs).

    Shapes: xyzt [B, L, 4], features [B, L, F] -> [B, L, 3 | 4 | 5].
    """
    parts = [xyzt[..., :3]]
    if space in ("xyzt", "xyztc"):
        parts.append(C_ICE * xyzt[..., 3:4])
    if space == "xyztc":
        if features is None or charge_column is None:
            raise ValueError("the xyztc space needs the features and a charge column")
        parts.append(charge_scale * features[..., charge_column:charge_column + 1].to(xyzt.dtype))
    return torch.cat(parts, dim=-1)


def knn_graph(pos: torch.Tensor, mask: torch.Tensor, k: int, time: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest other real pulses of every pulse (no self loops, as torch_cluster's knn_graph).

    ``pos`` is any coordinate subset (xyz, xyzt, latent features); ties are broken by ``time`` and
    then deterministically (:func:`icezoo.nn.masked_knn`), ``k`` beyond an event's size leaves the
    surplus entries invalid. No gradient flows through the choice of neighbours.

    Shapes: pos [B, L, d], mask [B, L], time [B, L] -> (index [B, L, k] int64, valid [B, L, k] bool).
    """
    return masked_knn(pos, mask, k, time=time, include_self=False)


def gather_neighbours(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Neighbour values: out[b, i, j] = x[b, index[b, i, j]].

    Shapes: x [B, L, D], index [B, L, k] -> [B, L, k, D].
    """
    b, n, k = index.shape
    flat = index.reshape(b, n * k, 1).expand(b, n * k, x.shape[-1])
    return torch.gather(x, 1, flat).view(b, n, k, x.shape[-1])


def aggregate(msg: torch.Tensor, valid: torch.Tensor, aggr: Aggregation) -> torch.Tensor:
    """Sum, mean or max of the messages over each pulse's valid edges (0 where it has none).

    Invalid messages are selected away (never multiplied), so NaN/inf in them cannot leak.

    Shapes: msg [B, L, k, D], valid [B, L, k] -> [B, L, D].
    """
    v = valid[..., None]
    zero = torch.zeros((), dtype=msg.dtype, device=msg.device)
    if aggr == "max":
        low = torch.full((), torch.finfo(msg.dtype).min, dtype=msg.dtype, device=msg.device)
        out = torch.where(v, msg, low).amax(2)
        return torch.where(valid.any(-1, keepdim=True), out, zero)
    out = torch.where(v, msg, zero).sum(2)
    if aggr == "mean":
        out = out / valid.sum(-1, keepdim=True).clamp_min(1).to(msg.dtype)
    elif aggr != "sum":
        raise ValueError(f"unknown aggregation '{aggr}' (known: sum, mean, max)")
    return out


def to_edge_index(index: torch.Tensor, valid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The dense graph as PyG's ``edge_index`` over the flattened real pulses ``x[mask]``.

    Row 0 holds the source (the neighbour j), row 1 the target (the pulse i): PyG's default
    ``source_to_target`` flow, so a PyG conv aggregates at i exactly what the dense layers do.

    Shapes: index, valid [B, L, k], mask [B, L] -> [2, E] int64 (E = valid.sum()).
    """
    flat = (mask.reshape(-1).cumsum(0) - 1).view(mask.shape)  # slot -> row in x[mask]
    src = torch.gather(flat, 1, index.flatten(1)).view_as(index)
    dst = flat[:, :, None].expand_as(index)
    return torch.stack([src[valid], dst[valid]])


# ---------------------------------------------------------------------------------------------
# edge convolution


def edge_mlp(in_dim: int, widths: list[int] | tuple[int, ...], act: str, tito: bool = False) -> nn.Sequential:
    """GraphNeT's EdgeConv MLP: Linear+activation per width, the first taking the message
    [x_i, x_j - x_i] (2 in_dim) or the TITO message [x_i, x_j - x_i, x_j] (3 in_dim).

    Shapes: [..., (2 | 3) in_dim] -> [..., widths[-1]].
    """
    return mlp((3 if tito else 2) * in_dim, list(widths[:-1]), widths[-1], act=act, final_act=True)


class EdgeConv(nn.Module):
    """EdgeConv (Wang et al. 2019, GraphNeT's DynEdge): phi([x_i, x_j - x_i]) aggregated over neighbours j.

    ``tito = True``: the message of the 1st-place DynEdge-TITO, phi([x_i, x_j - x_i, x_j]).
    ``phi`` is an ``nn.Sequential`` whose first module is a Linear (e.g. :func:`edge_mlp`); that layer
    is applied per pulse and its two halves combined per edge (W [x_i, x_j - x_i] = (W_a - W_b) x_i +
    W_b x_j), which is the same function with k times fewer multiply-adds than building every
    message. ``phi`` holds the weights exactly as ``torch_geometric.nn.EdgeConv(phi)`` would.

    Shapes: x [B, L, D], mask [B, L], index/valid [B, L, k] -> [B, L, D_out] (padded slots zero).
    """

    def __init__(self, phi: nn.Sequential, aggr: Aggregation = "max", tito: bool = False):
        super().__init__()
        if not isinstance(phi[0], nn.Linear):
            raise ValueError("EdgeConv needs an MLP that starts with a Linear layer")
        if aggr not in ("sum", "mean", "max"):
            raise ValueError(f"unknown aggregation '{aggr}' (known: sum, mean, max)")
        self.phi, self.aggr, self.tito = phi, aggr, tito
        parts = 3 if tito else 2
        if phi[0].in_features % parts:
            raise ValueError(f"the first Linear takes {phi[0].in_features} inputs, not a multiple of {parts}")
        self.in_dim = phi[0].in_features // parts

    def forward(self, x: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = zero_padding(x, mask)
        first = self.phi[0]
        w = first.weight.to(x.dtype)
        d = self.in_dim
        w_i, w_d = w[:, :d], w[:, d:2 * d]
        w_j = w_d + w[:, 2 * d:] if self.tito else w_d
        own = x @ (w_i - w_d).T  # [B, L, H]
        if first.bias is not None:
            own = own + first.bias.to(x.dtype)
        msg = own[:, :, None, :] + gather_neighbours(x @ w_j.T, index)  # [B, L, k, H]
        msg = self.phi[1:](msg)
        return zero_padding(aggregate(msg, valid, self.aggr), mask)


# ---------------------------------------------------------------------------------------------
# EGNN


class EGNNLayer(nn.Module):
    """E(n)-equivariant graph layer (Satorras, Hoogeboom, Welling 2021, as their reference E_GCL).

    m_ij = phi_e(h_i, h_j, |x_i - x_j|^2); x_i <- x_i + C sum_j (x_i - x_j) phi_x(m_ij) with
    C = 1/|N(i)| (``coords_agg = "mean"``, the reference default) or 1 (``"sum"``);
    h_i <- h_i + phi_h(h_i, agg_j m_ij) with ``aggr`` sum (the paper), mean or max. The last layer of
    phi_x has no bias and starts near zero (xavier gain 0.001), so coordinates move slowly at first;
    ``normalize`` divides x_i - x_j by its length, ``tanh`` bounds phi_x (both as in the reference).
    Distances enter only as |x_i - x_j|^2 and coordinates move along x_i - x_j, so ``h`` is invariant
    and ``x`` equivariant under translations and rotations of the coordinates.

    Shapes: h [B, L, D], x [B, L, c], mask [B, L], index/valid [B, L, k] -> (h [B, L, D], x [B, L, c]).
    """

    def __init__(self, dim: int, hidden: int, act: str = "silu", aggr: Aggregation = "sum",
                 coords_agg: Literal["sum", "mean"] = "mean", normalize: bool = False, tanh: bool = False,
                 update_coords: bool = True):
        super().__init__()
        self.aggr, self.coords_agg, self.normalize, self.update_coords = aggr, coords_agg, normalize, update_coords
        self.dim = dim
        self.edge = nn.Sequential(nn.Linear(2 * dim + 1, hidden), activation(act), nn.Linear(hidden, hidden),
                                  activation(act))
        self.node = nn.Sequential(nn.Linear(hidden + dim, hidden), activation(act), nn.Linear(hidden, dim))
        if update_coords:
            last = nn.Linear(hidden, 1, bias=False)
            nn.init.xavier_uniform_(last.weight, gain=0.001)
            layers = [nn.Linear(hidden, hidden), activation(act), last] + ([nn.Tanh()] if tanh else [])
            self.coord = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, index: torch.Tensor,
                valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = zero_padding(h, mask)
        x = zero_padding(x, mask)
        diff = x[:, :, None, :] - gather_neighbours(x, index)  # x_i - x_j, [B, L, k, c]
        radial = diff.pow(2).sum(-1, keepdim=True)
        # the first Linear of phi_e per pulse, combined per edge (as EdgeConv)
        first, d = self.edge[0], self.dim
        w = first.weight.to(h.dtype)
        m = (h @ w[:, :d].T + first.bias.to(h.dtype))[:, :, None, :] + gather_neighbours(h @ w[:, d:2 * d].T, index)
        m = self.edge[1:](m + radial * w[:, 2 * d])  # [B, L, k, H]
        if self.update_coords:
            if self.normalize:
                diff = diff / (radial.detach().sqrt() + 1e-8)
            step = aggregate(diff * self.coord(m), valid, "mean" if self.coords_agg == "mean" else "sum")
            x = x + zero_padding(step, mask)
        agg = aggregate(m, valid, self.aggr)
        h = h + self.node(torch.cat([h, agg], dim=-1))
        return zero_padding(h, mask), x


# ---------------------------------------------------------------------------------------------
# event-level ("global") variables


def homophily(values: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per event and column, the fraction of its edges joining two pulses with equal value
    (PyG's edge homophily; GraphNeT's homophily of x, y, z, t: pulses on one string share x and y,
    pulses on one DOM share z as well). 0 for an event without edges.

    Shapes: values [B, L, c], mask [B, L], index/valid [B, L, k] -> [B, c].
    """
    same = values[:, :, None, :] == gather_neighbours(values, index)  # [B, L, k, c]
    same = same & valid[..., None]
    edges = valid.flatten(1).sum(-1, keepdim=True).clamp_min(1).to(values.dtype)
    return same.flatten(1, 2).sum(1).to(values.dtype) / edges


def global_variables(x: torch.Tensor, xyzt: torch.Tensor, mask: torch.Tensor, index: torch.Tensor,
                     valid: torch.Tensor) -> torch.Tensor:
    """GraphNeT's event-level variables: per-event mean of ``x`` over the real pulses, homophily of
    x, y, z, t on the graph, log10 of the event's (selected) pulse count.

    Shapes: x [B, L, D], xyzt [B, L, 4], mask [B, L], index/valid [B, L, k] -> [B, D + 5].
    """
    count = mask.sum(1, keepdim=True)
    mean = zero_padding(x, mask).sum(1) / count.clamp_min(1).to(x.dtype)
    h = homophily(zero_padding(xyzt, mask), mask, index, valid).to(x.dtype)
    return torch.cat([mean, h, torch.log10(count.clamp_min(1).to(x.dtype))], dim=-1)


def with_global_variables(x: torch.Tensor, xyzt: torch.Tensor, mask: torch.Tensor, index: torch.Tensor,
                          valid: torch.Tensor) -> torch.Tensor:
    """``x`` with :func:`global_variables` broadcast to every real pulse (GraphNeT's DynEdge input).

    Shapes: x [B, L, D] -> [B, L, 2 D + 5] (padded slots zero).
    """
    g = global_variables(x, xyzt, mask, index, valid)
    out = torch.cat([x, g[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)
    return zero_padding(out, mask)


__all__ = [
    "knn_space", "knn_graph", "gather_neighbours", "aggregate", "to_edge_index", "edge_mlp", "EdgeConv",
    "EGNNLayer", "homophily", "global_variables", "with_global_variables",
]
