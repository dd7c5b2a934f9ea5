"""E(n)-equivariant graph backbone (EGNN, Satorras, Hoogeboom, Welling 2021) on the pulses' kNN graph.

The coordinates the layers move are the pulses' positions (and c_ice t, and the charge with
``xyztc``) in units of ``scale`` metres; the states ``h`` see them only through squared distances.
With ``coords_as_features = false`` the per-pulse outputs are therefore unchanged by a translation
of all positions and by a rotation about the vertical axis (declared, and checked by the
conformance kit). Note what that implies: such a model cannot tell the azimuth of the track from
positions alone, unless its input features carry absolute positions (EXP_27's 1.535).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Backbone, Batch, Config
from icezoo.nn import zero_padding
from icezoo.nn.graph import Aggregation, EGNNLayer, Space, knn_graph, knn_space


class EGNN(Backbone):
    """EGNN backbone (EXP_26-28, 30, 32, 34, 35, 38; hb_egnn): equivariant message passing on a kNN graph of the pulses.

    ``depth`` layers of :class:`icezoo.nn.graph.EGNNLayer` (width ``dim``, message width ``hidden``)
    between an input Linear and an output Linear, as the reference EGNN. The graph: ``k`` nearest
    pulses in ``space`` (xyz, xyzt with c_ice t, or xyztc adding the charge column), built once or,
    with ``rebuild_edges`` (EXP_34/35/38), rebuilt before every layer on the updated coordinates.
    ``coords_as_features`` (EXP_26) also feeds the scaled coordinates to the input Linear (absolute
    positions: the outputs are then no longer translation or rotation invariant); without it
    (EXP_27, EXP_32) coordinates only enter through distances.
    """

    name = "egnn"
    requires = frozenset({"xyzt"})
    example_params = {"dim": 16, "depth": 2, "k": 4}

    class Config(Config):
        dim: int | None = Field(128, gt=0, description="state width; None keeps the embedder's dim")
        hidden: int | None = Field(None, gt=0, description="message width; None: dim")
        depth: int = Field(5, gt=0)
        k: int = Field(8, gt=0, description="neighbours per pulse")
        space: Space = Field("xyzt", description="coordinates: xyz, xyzt (c_ice t) or xyztc (plus the charge column)")
        scale: float = Field(500.0, gt=0, description="metres per coordinate unit")
        charge_column: int = Field(4, ge=0, description="feature column of the charge for xyztc (kaggle_norm: 4)")
        charge_scale: float = Field(500.0, gt=0, description="metres per unit of the charge column in xyztc")
        aggr: Aggregation = Field("sum", description="aggregation of the messages m_ij")
        coords_agg: Literal["sum", "mean"] = Field("mean", description="coordinate update: sum (C=1) or mean (C=1/|N|)")
        act: Literal["silu", "swish", "gelu", "relu", "leaky_relu"] = "silu"
        normalize: bool = Field(False, description="unit-length x_i - x_j in the coordinate update")
        tanh: bool = Field(False, description="tanh on the coordinate weights")
        coords_as_features: bool = Field(False, description="also feed the coordinates as input features (EXP_26)")
        rebuild_edges: bool = Field(False, description="rebuild the kNN on the updated coordinates every layer (EXP_34)")

    @classmethod
    def declared_properties(cls, config: Config) -> frozenset[str]:
        if config.coords_as_features:
            return frozenset({"permutation_invariant"})
        return frozenset({"permutation_invariant", "translation_invariant", "vertical_rotation_invariant"})

    @classmethod
    def feature_columns(cls, config: Config) -> dict[str, int]:
        return {"charge_column": config.charge_column} if config.space == "xyztc" else {}

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        dim = config.dim or in_dim
        n_coords = {"xyz": 3, "xyzt": 4, "xyztc": 5}[config.space]
        self.proj = nn.Linear(in_dim + (n_coords if config.coords_as_features else 0), dim)
        self.layers = nn.ModuleList([
            EGNNLayer(dim, config.hidden or dim, act=config.act, aggr=config.aggr, coords_agg=config.coords_agg,
                      normalize=config.normalize, tanh=config.tanh, update_coords=i < config.depth - 1)
            for i in range(config.depth)
        ])
        self.out = nn.Linear(dim, dim)
        self.out_dim = dim

    def coordinates(self, batch: Batch) -> torch.Tensor:
        """The coordinates in units of ``scale`` metres, from the batch's float32 metres and ns."""
        cfg = self.config
        if cfg.space == "xyztc" and cfg.charge_column >= batch.features.shape[-1]:
            raise ValueError(f"charge_column={cfg.charge_column} but the features have only "
                             f"{batch.features.shape[-1]} columns")
        pos = knn_space(batch.xyzt, cfg.space, batch.features, cfg.charge_column, cfg.charge_scale)
        return zero_padding(pos, batch.mask) / cfg.scale

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        cfg, mask = self.config, batch.mask
        coords = self.coordinates(batch)
        x = zero_padding(h, mask)
        if cfg.coords_as_features:
            x = torch.cat([x, coords.to(x.dtype)], dim=-1)
        x = self.proj(x)
        time = batch.xyzt[..., 3]
        index, valid = knn_graph(coords, mask, cfg.k, time=time)
        for i, layer in enumerate(self.layers):
            if i and cfg.rebuild_edges:
                index, valid = knn_graph(coords, mask, cfg.k, time=time)
            x, coords = layer(x, coords, mask, index, valid)
        return zero_padding(self.out(x), mask)
