"""Heads: pooled vector [B, P] -> prediction."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Config, Head, hookimpl


class DirectionKappa(Head):
    """A 3-vector whose direction is the prediction and whose norm is the vMF concentration kappa (EXP_16 on)."""

    name = "direction_kappa"
    output = "vector"

    class Config(Config):
        hidden: int | None = Field(None, gt=0, description="hidden width of a 2-layer MLP; None: one linear layer")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        if config.hidden:
            self.net = nn.Sequential(nn.Linear(in_dim, config.hidden), nn.GELU(), nn.Linear(config.hidden, 3))
        else:
            self.net = nn.Linear(in_dim, 3)
        self.out_dim = 3

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def direction(self, pred: torch.Tensor) -> torch.Tensor:
        return pred / pred.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(pred.dtype).tiny)

    def kappa(self, pred: torch.Tensor) -> torch.Tensor:
        return pred.norm(dim=-1)


@hookimpl
def icezoo_components():
    return [DirectionKappa]
