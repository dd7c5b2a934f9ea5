"""Activations by name, the Linear/activation stack, the optional post-embedding LayerNorm and the input standardizer."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh,
                "leaky_relu": nn.LeakyReLU}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (gelu, relu, silu/swish, tanh, leaky_relu)."""
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation '{name}' (known: {', '.join(sorted(_ACTIVATIONS))})") from None


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "gelu", norm: bool = False,
        dropout: float = 0.0, final_act: bool = False) -> nn.Sequential:
    """Linear -> [LayerNorm] -> act -> [Dropout] for each hidden width, then Linear to ``out_dim``
    (followed by the activation too when ``final_act``).

    Shapes: [..., in_dim] -> [..., out_dim].
    """
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if norm:
            layers.append(nn.LayerNorm(h))
        layers.append(activation(act))
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_dim))
    if final_act:
        layers.append(activation(act))
    return nn.Sequential(*layers)


def post_norm(enabled: bool, dim: int) -> nn.Module:
    """LayerNorm(dim) when ``enabled`` (the log's post_emb_norm), else Identity.

    Shapes: [..., dim] -> [..., dim].
    """
    return nn.LayerNorm(dim) if enabled else nn.Identity()


def input_projection(in_dim: int, dim: int) -> nn.Module:
    """Linear(in_dim, dim) when the widths differ, else Identity. Shapes: [..., in_dim] -> [..., dim]."""
    return nn.Linear(in_dim, dim) if dim != in_dim else nn.Identity()


__all__ = ["activation", "mlp", "post_norm", "input_projection"]


class InputStandardizer(nn.Module):
    """Each input column minus its mean, over its standard deviation, both measured on the training
    pulses (padding excluded) and kept as buffers, so evaluation uses the training statistics.

    Why: Adam moves every weight by about the learning rate per step whatever its input's scale, so a
    column with a small spread (kaggle_norm's time: ~0.09 against ~0.5 for the positions) is learned
    several times slower, and a column with an offset (qe ~1.04) adds the same vector to every pulse.
    The statistics are cumulative averages over the training forward passes (training mode, autograd
    on): after a few batches they are in effect fixed, an affine change of the inputs. Before any
    training pass they are mean 0, variance 1 (the identity). Shapes: x [B, L, F], mask [B, L] -> [B, L, F].
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def _update(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        real = x[mask].to(torch.float64)
        n = real.shape[0]
        if n == 0:
            return
        mean_b, var_b = real.mean(0), real.var(0, unbiased=False)
        total = self.count + n
        delta = mean_b - self.mean.to(torch.float64)
        mean = self.mean.to(torch.float64) + delta * (n / total)
        # pooled variance of the two groups (Chan et al.): exact for the union of all pulses seen
        var = (self.var.to(torch.float64) * self.count + var_b * n + delta**2 * self.count * n / total) / total
        self.mean.copy_(mean.to(self.mean.dtype))
        self.var.copy_(var.to(self.var.dtype))
        self.count.copy_(total)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self._update(x, mask)
        return (x - self.mean.to(x.dtype)) * torch.rsqrt(self.var.to(x.dtype) + self.eps)
