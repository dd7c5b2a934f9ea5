"""The PyG adapter: any message-passing convolution of ``torch_geometric.nn`` as a backbone.

torch_geometric is imported only here, and only when a ``pyg`` backbone is validated or built, so
``icezoo list``, ``--help`` and error paths never import it.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Backbone, Batch, Config
from icezoo.nn import activation, mlp, zero_padding
from icezoo.nn.graph import Space, knn_graph, knn_space, to_edge_index
from icezoo.nn.tracing import exporting

#: MessagePassing's own keyword arguments, accepted by every conv that forwards **kwargs to it
_BASE_PARAMS = ("aggr", "aggr_kwargs", "flow", "node_dim", "decomposed_layers")
#: convs built around a network ``nn`` rather than widths that icezoo builds, as Linear(m in, out), act,
#: Linear(out, out), m the multiple of the pulse width the conv feeds it (EdgeConv: [x_i, x_j - x_i])
NN_CONVS = {"EdgeConv": 2}
#: the convs whose exported models (ONNX, TorchScript) tests/test_export_families.py checks against torch
EXPORTED_CONVS = ("GATv2Conv", "TransformerConv", "EdgeConv", "SAGEConv", "GCNConv", "GATConv", "GENConv",
                  "ResGatedGraphConv", "GraphConv")


def conv_class(name: str):
    """The ``torch_geometric.nn`` message-passing class called ``name`` (ValueError naming it otherwise)."""
    import torch_geometric.nn as pyg_nn
    from torch_geometric.nn.conv import MessagePassing

    cls = getattr(pyg_nn, name, None)
    if not (isinstance(cls, type) and issubclass(cls, MessagePassing)):
        known = sorted(n for n in dir(pyg_nn) if n.endswith("Conv") and isinstance(getattr(pyg_nn, n), type))
        raise ValueError(f"conv '{name}' is not a message-passing class of torch_geometric.nn "
                         f"(e.g. {', '.join(known[:8])}, ...)")
    return cls


def check_conv_params(name: str, params: dict[str, Any]) -> None:
    """Refuse a conv that cannot be built as ``cls(in_channels, out_channels, **params)`` and called
    as ``conv(x, edge_index)``, or params it does not take; each a one-line ValueError naming it."""
    cls = conv_class(name)
    sig = inspect.signature(cls.__init__).parameters
    named = {p: v for p, v in sig.items() if p != "self" and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)}
    reserved = ("nn",) if name in NN_CONVS else ("in_channels", "out_channels")
    if any(r not in named for r in reserved):
        raise ValueError(f"{name} cannot be built from (in_channels, out_channels, params): it takes "
                         f"({', '.join(named)})")
    for r in reserved:
        if r in params:
            raise ValueError(f"{name}: {r} is set by icezoo (from the widths), not a param")
    accepted = set(named) | (set(_BASE_PARAMS) if any(v.kind == v.VAR_KEYWORD for v in sig.values()) else set())
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(f"{name} has no parameter {', '.join(unknown)} (it takes: "
                         f"{', '.join(sorted(accepted - set(reserved)))})")
    missing = [p for p, v in named.items() if v.default is v.empty and p not in params and p not in reserved]
    if missing:
        raise ValueError(f"{name} needs {', '.join(missing)} (set them in params)")
    fwd = inspect.signature(cls.forward).parameters
    if "edge_index" not in fwd:
        raise ValueError(f"{name} builds its own graph (its forward takes no edge_index); icezoo gives it the kNN graph")
    extra = [p for p, v in fwd.items() if p not in ("self", "x", "edge_index") and v.default is v.empty
             and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
    if extra:
        raise ValueError(f"{name}'s forward needs {', '.join(extra)} besides x and edge_index")


class PyGConv(Backbone):
    """Any torch_geometric.nn message-passing conv (GATv2Conv, TransformerConv, SAGEConv, ...) stacked `depth` times on icezoo's kNN graph.

    Each layer is ``act(conv(x, edge_index))`` (plus the input where the widths match, with
    ``residual``) on the real pulses flattened as PyG expects; the graph is each pulse's ``k`` nearest
    other real pulses in ``space`` (:func:`icezoo.nn.graph.to_edge_index`). ``params`` go to the conv
    as keyword arguments and are checked against its signature before it is built; a conv that
    cannot be built from (in_channels, out_channels, params), or that needs more than (x,
    edge_index) to run, is a one-line error naming it; for the convs built around a network
    (EdgeConv) icezoo builds that network (:data:`NN_CONVS`). The conv's output width
    (``dim``, or ``heads * dim`` for a concatenating attention conv) is read from a probe call at
    build time. Under export every slot is a node (:meth:`_every_slot`), so the graph's shapes
    follow the batch's, not its data.
    """

    name = "pyg"
    properties = frozenset({"permutation_invariant"})
    requires = frozenset({"xyzt"})
    example_params = {"conv": "GATv2Conv", "depth": 2, "k": 4, "params": {"heads": 2}}

    class Config(Config):
        conv: str = Field("GATv2Conv", description="class name in torch_geometric.nn")
        params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the conv")
        depth: int = Field(2, gt=0)
        dim: int | None = Field(None, gt=0, description="out_channels of each conv; None keeps the embedder's dim")
        k: int = Field(8, gt=0, description="neighbours per pulse")
        space: Space = Field("xyz", description="kNN on xyz, xyzt (c_ice t) or xyztc (plus the charge column)")
        charge_column: int = Field(4, ge=0, description="feature column of the charge for xyztc")
        act: str = "gelu"
        residual: bool = Field(True, description="add the layer's input where the widths match")

    @classmethod
    def export_refusal(cls, config: Config) -> str | None:
        if config.conv in EXPORTED_CONVS:
            return None
        return (f"conv {config.conv} has no export parity test in icezoo (exported: {', '.join(EXPORTED_CONVS)}); "
                "docs/export.md")

    @classmethod
    def feature_columns(cls, config: Config) -> dict[str, int]:
        return {"charge_column": config.charge_column} if config.space == "xyztc" else {}

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        check_conv_params(config.conv, config.params)  # at build time: a Config alone never imports PyG
        cls = conv_class(config.conv)
        dim = config.dim or in_dim
        self.convs = nn.ModuleList()
        width = in_dim
        for _ in range(config.depth):
            try:
                conv = self._conv(cls, width, dim)
                probe = conv(torch.randn(3, width), torch.tensor([[0, 1], [1, 2]]))
            except Exception as exc:  # noqa: BLE001 (any failure of a foreign class is one line naming it)
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ValueError(f"{config.conv}({width}, {dim}, {config.params}) failed: {detail}") from None
            if not isinstance(probe, torch.Tensor) or probe.dim() != 2:
                raise ValueError(f"{config.conv} does not return one [nodes, features] tensor")
            self.convs.append(conv)
            width = probe.shape[-1]
        self.act = activation(config.act)
        self.out_dim = width

    def _conv(self, cls, width: int, dim: int):
        cfg = self.config
        if cfg.conv in NN_CONVS:
            net = mlp(NN_CONVS[cfg.conv] * width, [dim], dim, act=cfg.act)
            return cls(nn=net, **cfg.params)
        return cls(width, dim, **cfg.params)

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        cfg, mask = self.config, batch.mask
        pos = knn_space(batch.xyzt, cfg.space, batch.features, cfg.charge_column)
        index, valid = knn_graph(pos, mask, cfg.k, time=batch.xyzt[..., 3])
        if exporting():
            return self._every_slot(h, mask, index, valid)
        edge_index = to_edge_index(index, valid, mask)
        x = self._convs(zero_padding(h, mask)[mask], edge_index)
        dense = torch.zeros(*mask.shape, x.shape[-1], dtype=x.dtype, device=x.device)
        dense[mask] = x
        return dense

    def _convs(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            out = self.act(conv(x, edge_index))
            x = x + out if self.config.residual and out.shape == x.shape else out
        return x

    def _every_slot(self, h: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The same layers with every slot a node, for export: shapes follow (B, L), not the data.

        Node 0 is a sink, slot (b, i) is node 1 + b L + i; every valid kNN entry is its edge as in
        :func:`to_edge_index`, every invalid one an edge from the sink to the sink, so a real
        pulse aggregates exactly its neighbours (padded slots have no edges and are zeroed after).
        """
        b, n, k = index.shape
        x = zero_padding(h, mask).reshape(b * n, h.shape[-1])
        x = torch.cat([x.new_zeros(1, x.shape[-1]), x])
        node = torch.arange(1, b * n + 1, device=h.device).view(b, n)
        src = torch.where(valid, node.gather(1, index.reshape(b, n * k)).view(b, n, k), 0)
        dst = torch.where(valid, node[:, :, None].expand(b, n, k), 0)
        x = self._convs(x, torch.stack([src.reshape(-1), dst.reshape(-1)]))
        return zero_padding(x[1:].reshape(b, n, x.shape[-1]), mask)
