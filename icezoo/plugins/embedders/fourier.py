"""Sinusoidal encodings of position, time and charge (``fourier``, the 2nd-place input, INIT5_HB)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Batch, Config, Embedder
from icezoo.nn import mlp, sinusoidal, zero_padding


class FourierEmbedder(Embedder):
    """Sinusoidal encodings of position, time and charge plus an auxiliary embedding (2nd-place input, INIT5_HB).

    Position and time come from ``batch.xyzt`` (x, y, z / 500 m; t / 3e4 ns, relative to the first
    pulse), each scalar encoded with ``base_dim`` sinusoids of frequencies up to ``scale``; the charge
    is the feature column ``charge_column`` (kaggle_norm: log10(q)/3, column 4) encoded the same way
    at ``charge_scale``; the auxiliary flag (column ``aux_column`` > 0) gets a learned embedding; all
    feature columns also enter through a linear map, so extra features (qe, ice) are not lost. The
    concatenation goes through Linear-LayerNorm-GELU-Linear to ``dim``.
    """

    name = "fourier"
    properties = frozenset({"permutation_invariant"})
    requires = frozenset({"xyzt"})
    example_params = {"dim": 16, "base_dim": 8, "charge_column": 4, "aux_column": 3}

    class Config(Config):
        dim: int = Field(192, gt=0)
        base_dim: int = Field(32, ge=2, multiple_of=2, description="sinusoids per encoded scalar")
        scale: float = Field(4096.0, gt=0, description="frequency multiplier of the xyz/500 and t/3e4 encodings")
        charge_scale: float = Field(1024.0, gt=0)
        charge_column: int | None = Field(4, ge=0, description="feature column of the (normalised) charge; None: none")
        aux_column: int | None = Field(5, ge=0, description="feature column of the auxiliary flag (> 0 is aux); None: none")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        for param in ("charge_column", "aux_column"):
            col = getattr(config, param)
            if col is not None and col >= in_dim:
                raise ValueError(f"{param}={col} but the features have only {in_dim} columns "
                                 f"(set it to the right column, or to none)")
        base = config.base_dim
        width = 4 * base + base  # xyzt sinusoids + linear path of all features
        if config.charge_column is not None:
            width += base
        if config.aux_column is not None:
            self.aux = nn.Embedding(2, base)
            width += base
        self.linear = nn.Linear(in_dim, base)
        self.proj = mlp(width, [width], config.dim, act="gelu", norm=True)
        self.out_dim = config.dim

    def forward(self, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        cfg = self.config
        x = zero_padding(features, batch.mask)
        xyzt = zero_padding(batch.xyzt.to(x.dtype), batch.mask)
        units = torch.tensor([500.0, 500.0, 500.0, 3.0e4], dtype=x.dtype, device=x.device)
        parts = [sinusoidal(cfg.scale * xyzt / units, cfg.base_dim).flatten(-2), self.linear(x)]
        if cfg.charge_column is not None:
            parts.append(sinusoidal(cfg.charge_scale * x[..., cfg.charge_column], cfg.base_dim))
        if cfg.aux_column is not None:
            parts.append(self.aux((x[..., cfg.aux_column] > 0).long()).to(x.dtype))
        return self.proj(torch.cat(parts, dim=-1))
