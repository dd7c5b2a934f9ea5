"""Heads: pooled vector [B, P] -> prediction (a kappa-scaled direction vector, or angles)."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Config, Head, angles_to_vector
from icezoo.nn import mlp


def _net(in_dim: int, hidden: int | None, out: int) -> nn.Module:
    """A 2-layer GELU MLP with ``hidden`` width, or one Linear (kept bare: its checkpoint keys are net.weight/bias)."""
    return mlp(in_dim, [hidden], out) if hidden else nn.Linear(in_dim, out)


class DirectionKappa(Head):
    """A 3-vector whose direction is the prediction and whose norm is the vMF concentration kappa (EXP_16 on)."""

    name = "direction_kappa"
    output = "vector"

    class Config(Config):
        hidden: int | None = Field(None, gt=0, description="hidden width of a 2-layer MLP; None: one linear layer")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        self.net = _net(in_dim, config.hidden, 3)
        self.out_dim = 3

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def direction(self, pred: torch.Tensor) -> torch.Tensor:
        return pred / pred.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(pred.dtype).tiny)

    def kappa(self, pred: torch.Tensor) -> torch.Tensor:
        return pred.norm(dim=-1)


class Angles(Head):
    """Azimuth and zenith in radians, [B, 2] (EXP_00-EXP_14); sigmoid_range: EXP_10's SigmoidRange.

    Without ``sigmoid_range`` the two outputs are the angles as they come (the losses wrap the azimuth;
    :meth:`direction` is periodic anyway). With it, azimuth = 2 pi sigmoid(a) and zenith = pi sigmoid(b),
    fastai's SigmoidRange, so predictions always lie in [0, 2 pi) x [0, pi].
    """

    name = "angles"
    output = "angles"

    class Config(Config):
        hidden: int | None = Field(None, gt=0, description="hidden width of a 2-layer MLP; None: one linear layer")
        sigmoid_range: bool = Field(False, description="squash to [0, 2pi) x [0, pi] with sigmoids (EXP_10)")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        self.net = _net(in_dim, config.hidden, 2)
        self.out_dim = 2

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        if self.config.sigmoid_range:
            scale = torch.tensor([2 * math.pi, math.pi], dtype=out.dtype, device=out.device)
            out = torch.sigmoid(out) * scale
        return out

    def direction(self, pred: torch.Tensor) -> torch.Tensor:
        return angles_to_vector(pred[..., 0], pred[..., 1])
