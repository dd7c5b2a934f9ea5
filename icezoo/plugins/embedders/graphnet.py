"""The GraphNet embedder: GraphNeT's first DynEdge layer as a per-pulse embedding (EXP_31, EXP_33, EXP_101)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Batch, Config, Embedder
from icezoo.nn import activation, zero_padding
from icezoo.nn.graph import Aggregation, EdgeConv, edge_mlp, knn_graph, knn_space, with_global_variables


class GraphNetEmbedder(Embedder):
    """First layer of GraphNet as the embedding (EXP_31, EXP_33, EXP_101): global variables + one EdgeConv on the kNN graph, out to dim.

    The event's global variables (mean of the inputs, homophily of x, y, z, t, log10 of the pulse
    count) are concatenated to every pulse's features (F -> 2F + 5), one EdgeConv (MLP ``widths``,
    LeakyReLU, ``aggr`` sum) runs on the ``k`` nearest pulses in xyz or xyzt (c_ice t), and its
    input and output are concatenated, as DynEdge's skip connections do: 2F + 5 + widths[-1]
    features (EXP_31's 279 for 9 features). ``dim`` maps them with a Linear to the width the next
    stage needs (0 keeps the concatenation).

    ``encode_dim`` (EXP_101): the feature columns after the first ``raw_columns`` (kaggle_norm's x,
    y, z, t) are first encoded by a Linear+GELU to ``encode_dim`` and the raw columns passed as
    they are ("encoding charge, qe, aux, ice_properties ... not encoding xyzt").
    """

    name = "graphnet"
    properties = frozenset({"permutation_invariant"})
    requires = frozenset({"xyzt"})
    example_params = {"dim": 16, "k": 4, "widths": [16, 16]}

    class Config(Config):
        dim: int = Field(256, ge=0, description="output width (a Linear); 0 keeps the skip concatenation")
        k: int = Field(8, gt=0, description="neighbours per pulse")
        space: Literal["xyz", "xyzt"] = Field("xyz", description="kNN on xyz or xyzt (c_ice t)")
        widths: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)] = Field(
            [128, 256], description="EdgeConv MLP widths (GraphNeT's first DynEdge layer)")
        aggr: Aggregation = "sum"
        act: str = "leaky_relu"
        encode_dim: int | None = Field(None, gt=0, description="encode the non-position columns to this width first")
        raw_columns: int = Field(4, ge=0, description="leading feature columns left unencoded with encode_dim")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        width = in_dim
        self.encode = None
        if config.encode_dim is not None:
            if config.raw_columns >= in_dim:
                raise ValueError(f"raw_columns={config.raw_columns} leaves none of the {in_dim} feature columns to encode")
            self.encode = nn.Sequential(nn.Linear(in_dim - config.raw_columns, config.encode_dim), activation("gelu"))
            width = config.raw_columns + config.encode_dim
        width = 2 * width + 5
        self.conv = EdgeConv(edge_mlp(width, config.widths, config.act), aggr=config.aggr)
        width += config.widths[-1]
        self.proj = nn.Linear(width, config.dim) if config.dim else nn.Identity()
        self.out_dim = config.dim or width

    def forward(self, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        cfg, mask = self.config, batch.mask
        x = zero_padding(features, mask)
        if self.encode is not None:
            x = torch.cat([x[..., :cfg.raw_columns], self.encode(x[..., cfg.raw_columns:])], dim=-1)
        pos = knn_space(batch.xyzt, cfg.space)
        index, valid = knn_graph(pos, mask, cfg.k, time=batch.xyzt[..., 3])
        x = with_global_variables(x, batch.xyzt, mask, index, valid)
        x = torch.cat([x, self.conv(x, mask, index, valid)], dim=-1)
        return zero_padding(self.proj(x), mask)
