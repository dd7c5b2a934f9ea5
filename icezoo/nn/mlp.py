"""Activations by name, the Linear/activation stack, and the optional post-embedding LayerNorm."""

from __future__ import annotations

from typing import Sequence

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
