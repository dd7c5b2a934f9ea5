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
from icezoo.nn import activation, zero_padding
from icezoo.nn.graph import Space, knn_graph, knn_space, to_edge_index

#: MessagePassing's own keyword arguments, accepted by every conv that forwards **kwargs to it
_BASE_PARAMS = ("aggr", "aggr_kwargs", "flow", "node_dim", "decomposed_layers")


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
    if "in_channels" not in named or "out_channels" not in named:
        raise ValueError(f"{name} cannot be built from (in_channels, out_channels, params): it takes "
                         f"({', '.join(named)})")
    for reserved in ("in_channels", "out_channels"):
        if reserved in params:
            raise ValueError(f"{name}: {reserved} is set by icezoo (from the widths), not a param")
    accepted = set(named) | (set(_BASE_PARAMS) if any(v.kind == v.VAR_KEYWORD for v in sig.values()) else set())
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(f"{name} has no parameter {', '.join(unknown)} (it takes: "
                         f"{', '.join(sorted(accepted - {'in_channels', 'out_channels'}))})")
    missing = [p for p, v in named.items() if v.default is v.empty and p not in params
               and p not in ("in_channels", "out_channels")]
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
    edge_index) to run, is a one-line error naming it. The conv's output width (``dim``, or
    ``heads * dim`` for a concatenating attention conv) is read from a probe call at build time.
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
                conv = cls(width, dim, **config.params)
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

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        cfg, mask = self.config, batch.mask
        pos = knn_space(batch.xyzt, cfg.space, batch.features, cfg.charge_column)
        index, valid = knn_graph(pos, mask, cfg.k, time=batch.xyzt[..., 3])
        edge_index = to_edge_index(index, valid, mask)
        x = zero_padding(h, mask)[mask]
        for conv in self.convs:
            out = self.act(conv(x, edge_index))
            x = x + out if cfg.residual and out.shape == x.shape else out
        dense = torch.zeros(*mask.shape, x.shape[-1], dtype=x.dtype, device=x.device)
        dense[mask] = x
        return dense
