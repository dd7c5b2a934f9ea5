"""Edge-convolution backbones: GraphNeT's DynEdge, the 1st-place DynEdge-TITO, and DynNet.

All three run the dense layers of :mod:`icezoo.nn.graph` on the padded batch: a kNN graph of each
pulse's ``k`` nearest other real pulses (masked, ties broken by time), EdgeConv messages aggregated
over it. Padded slots are zeroed and never neighbours. Nothing depends on a slot index, so all
declare ``permutation_invariant``. Output: one vector per pulse ([B, L, D']); the poolers pool it
(GraphNeT and the log use min, max, mean, sum).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Backbone, Batch, Config
from icezoo.nn import TransformerBlock, mlp, zero_padding
from icezoo.nn.graph import (Aggregation, EdgeConv, Space, edge_mlp, knn_graph, knn_space,
                             with_global_variables)

Widths = Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)]


class _GraphConfig(Config):
    """Params of the first kNN graph, shared by the edge-convolution backbones."""

    k: int = Field(8, gt=0, description="neighbours per pulse")
    space: Space = Field("xyz", description="first graph on xyz, xyzt (c_ice t) or xyztc (plus the charge column)")
    charge_column: int = Field(4, ge=0, description="feature column of the charge for xyztc (kaggle_norm: 4)")
    charge_scale: float = Field(500.0, gt=0, description="metres per unit of the charge column in xyztc")
    global_variables: bool = Field(True, description="per-event means, homophily of x,y,z,t and log10(pulses) "
                                                     "broadcast to the pulses before the convolutions")


def first_graph(config: _GraphConfig, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The kNN graph on the configured space, from the batch's own float32 metres and ns."""
    if config.space == "xyztc" and config.charge_column >= batch.features.shape[-1]:
        raise ValueError(f"charge_column={config.charge_column} but the features have only "
                         f"{batch.features.shape[-1]} columns")
    pos = knn_space(batch.xyzt, config.space, batch.features, config.charge_column, config.charge_scale)
    return knn_graph(pos, batch.mask, config.k, time=batch.xyzt[..., 3])


def graph_input(config: _GraphConfig, h: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, ...]:
    """Padding zeroed, the first kNN graph, and the global variables appended when configured:
    the input of the first EdgeConv (x [B, L, D'], index and valid [B, L, k])."""
    x = zero_padding(h, batch.mask)
    index, valid = first_graph(config, batch)
    if config.global_variables:
        x = with_global_variables(x, batch.xyzt, batch.mask, index, valid)  # homophily on exact metres
    return x, index, valid


def input_width(config: _GraphConfig, in_dim: int) -> int:
    """Width after the global variables: D, or 2 D + 5 (GraphNeT's nb_inputs + 5 + nb_inputs)."""
    return 2 * in_dim + 5 if config.global_variables else in_dim


class DynEdge(Backbone):
    """GraphNeT's DynEdge (arXiv:2209.03042; the log's GraphNet, EXP_23, EXP_25): four EdgeConvs on dynamic kNN graphs.

    The first graph: ``k`` = 8 nearest pulses in ``space`` (xyz; EXP_23 used xyzt). The event's global
    variables (mean of the inputs, homophily of x, y, z, t, log10 of the pulse count) are broadcast to
    every pulse. Then one EdgeConv per entry of ``layers`` (MLP widths [128, 256], then [336, 256] x 3,
    LeakyReLU after every Linear, ``aggr`` sum as GraphNeT's "add"), the kNN rebuilt before each
    later layer on the first ``knn_features`` (3) latent features. The input and every layer's output
    are concatenated (skip connections) and go through the ``post`` MLP ([336, 256]).

    With the defaults and 6 input features this is GraphNeT's DynEdge without its readout
    (1,249,808 parameters); GraphNeT's 128-wide readout after 4 poolings is the ``hidden = 128`` of
    the ``direction_kappa`` head here (docs/components.md).
    """

    name = "dynedge"
    properties = frozenset({"permutation_invariant"})
    requires = frozenset({"xyzt"})
    example_params = {"k": 4, "layers": [[16, 16], [16, 16]], "post": [16]}

    class Config(_GraphConfig):
        layers: Annotated[list[Widths], Field(min_length=1)] = Field(
            [[128, 256], [336, 256], [336, 256], [336, 256]], description="MLP widths of each EdgeConv")
        post: Widths = Field([336, 256], description="MLP widths after the skip concatenation")
        knn_features: int | None = Field(3, gt=0, description="latent features the kNN is rebuilt on; None: all")
        aggr: Aggregation = "sum"
        act: str = Field("leaky_relu", description="activation after every Linear")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        width = input_width(config, in_dim)
        skip = width
        self.convs = nn.ModuleList()
        for widths in config.layers:
            if config.knn_features and self.convs and width < config.knn_features:
                raise ValueError(f"knn_features={config.knn_features} but a layer has only {width} features")
            self.convs.append(EdgeConv(edge_mlp(width, widths, config.act), aggr=config.aggr))
            width = widths[-1]
            skip += width
        self.post = mlp(skip, list(config.post[:-1]), config.post[-1], act=config.act, final_act=True)
        self.out_dim = config.post[-1]

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        cfg, mask = self.config, batch.mask
        x, index, valid = graph_input(cfg, h, batch)
        skips = [x]
        for i, conv in enumerate(self.convs):
            if i:  # dynamic edges: the kNN of the previous layer's output
                space = x[..., :cfg.knn_features] if cfg.knn_features else x
                index, valid = knn_graph(space, mask, cfg.k, time=batch.xyzt[..., 3])
            x = conv(x, mask, index, valid)
            skips.append(x)
        return zero_padding(self.post(torch.cat(skips, dim=-1)), mask)


class DynNet(DynEdge):
    """DynNet (EXP_39): DynEdge-like layers whose kNN is rebuilt on each layer's whole output, 5 layers, GELU, first graph on xyztc.

    The log's "dynnet" is the DGCNN-style dynamic graph: after every layer the neighbours are the
    nearest pulses in the full latent space (``knn_features = None``), not in three chosen features.
    Everything else as :class:`DynEdge` (global variables, skip concatenation, post MLP).
    """

    name = "dynnet"
    example_params = {"k": 4, "layers": [[16, 16], [16, 16]], "post": [16], "charge_column": 2}

    class Config(DynEdge.Config):
        space: Space = "xyztc"
        layers: Annotated[list[Widths], Field(min_length=1)] = Field(
            [[128, 256], [336, 256], [336, 256], [336, 256], [336, 256]], description="MLP widths of each EdgeConv")
        knn_features: int | None = Field(None, gt=0, description="latent features the kNN is rebuilt on; None: all")
        act: str = "gelu"


class DynEdgeTITO(Backbone):
    """DynEdge-TITO, the 1st-place model (GraphNeT's DynEdgeTITO/DynTrans): TITO EdgeConvs each followed by a transformer layer.

    Static kNN graph on xyzt (``k`` = 8); global variables broadcast to the pulses; four blocks of
    an EdgeConv with the TITO message phi([x_i, x_j - x_i, x_j]) (widths [256, 256], LeakyReLU, max
    aggregation), a residual connection where the widths match, LayerNorm, and one post-norm
    transformer encoder layer (``heads`` 8, ReLU feed-forward 8 x 256 = 2048 wide, dropout 0.1:
    torch's TransformerEncoderLayer defaults, as GraphNeT) on icezoo's masked attention (an event
    without pulses gives zeros, not NaN); then the ``post`` MLP [336, 256].
    """

    name = "dynedge_tito"
    properties = frozenset({"permutation_invariant"})
    requires = frozenset({"xyzt"})
    example_params = {"k": 4, "layers": [[16, 16], [16, 16]], "post": [16], "heads": 2, "ff_mult": 1}

    class Config(_GraphConfig):
        space: Space = "xyzt"
        layers: Annotated[list[Widths], Field(min_length=1)] = Field(
            [[256, 256]] * 4, description="MLP widths of each TITO EdgeConv")
        post: Widths = Field([336, 256], description="MLP widths after the last block")
        heads: int = Field(8, gt=0)
        ff_mult: int = Field(8, gt=0, description="feed-forward width = ff_mult * layer width (8 * 256 = 2048)")
        dropout: float = Field(0.1, ge=0, lt=1, description="dropout in the transformer layers")
        aggr: Aggregation = "max"
        act: str = "leaky_relu"

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        width = input_width(config, in_dim)
        self.convs, self.norms, self.encoders = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for widths in config.layers:
            d = widths[-1]
            if d % config.heads:
                raise ValueError(f"layer width {d} is not divisible by heads {config.heads}")
            self.convs.append(EdgeConv(edge_mlp(width, widths, config.act, tito=True), aggr=config.aggr, tito=True))
            self.norms.append(nn.LayerNorm(d))
            self.encoders.append(TransformerBlock(d, config.heads, config.ff_mult, config.dropout, config.dropout,
                                                  act="relu", norm_first=False))
            width = d
        self.post = mlp(width, list(config.post[:-1]), config.post[-1], act=config.act, final_act=True)
        self.out_dim = config.post[-1]

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        cfg, mask = self.config, batch.mask
        x, index, valid = graph_input(cfg, h, batch)
        for conv, norm, encoder in zip(self.convs, self.norms, self.encoders):
            out = conv(x, mask, index, valid)
            x = norm(x + out if out.shape[-1] == x.shape[-1] else out)
            x = zero_padding(encoder(x, mask), mask)
        return zero_padding(self.post(x), mask)
