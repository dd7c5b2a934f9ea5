"""Embedders: per-pulse features [B, L, F] -> [B, L, D].

Every embedder here works pulse by pulse, so all declare ``permutation_invariant`` (per-pulse outputs
permute with the input) and padding cannot reach a real pulse. Padded inputs are zeroed first, so
whatever a batch holds in its padded slots (NaN included) never reaches an output or a gradient.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from icezoo.core import PAD_SENSOR, Batch, Config, Embedder, hookimpl
from icezoo.nn import mlp, sinusoidal, zero_padding


def _post_norm(enabled: bool, dim: int) -> nn.Module:
    return nn.LayerNorm(dim) if enabled else nn.Identity()


class LinearEmbedder(Embedder):
    """One linear layer from the features to dim (the baseline transformer's input, EXP_00 on; post_norm: EXP_24)."""

    name = "linear"
    properties = frozenset({"permutation_invariant"})

    class Config(Config):
        dim: int = Field(128, gt=0)
        post_norm: bool = Field(False, description="LayerNorm after the projection (post_emb_norm, EXP_24)")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        self.proj = nn.Linear(in_dim, config.dim)
        self.norm = _post_norm(config.post_norm, config.dim)
        self.out_dim = config.dim

    def forward(self, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.norm(self.proj(zero_padding(features, batch.mask)))


class MLPEmbedder(Embedder):
    """A small per-pulse MLP from the features to dim (a deeper alternative to `linear`)."""

    name = "mlp"
    properties = frozenset({"permutation_invariant"})

    class Config(Config):
        dim: int = Field(128, gt=0)
        hidden: int | None = Field(None, gt=0, description="hidden width; None: dim")
        layers: int = Field(2, ge=1, description="number of Linear layers")
        act: Literal["gelu", "relu", "silu"] = "gelu"
        post_norm: bool = False

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        hidden = config.hidden or config.dim
        self.net = mlp(in_dim, [hidden] * (config.layers - 1), config.dim, act=config.act)
        self.norm = _post_norm(config.post_norm, config.dim)
        self.out_dim = config.dim

    def forward(self, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.norm(self.net(zero_padding(features, batch.mask)))


class SensorEmbedding(Embedder):
    """A learnable vector per sensor_id, added to or concatenated with the feature embedding (EXP_03-05, EXP_29).

    ``mode="add"``: Linear(features) + E[sensor_id] (sensor_dim must equal dim).
    ``mode="concat"``: Linear([features, E[sensor_id]]) -> dim.
    ``padding_idx``: row 5160 (the padding id; sensor 0 is a real DOM) is a fixed zero vector, as EXP_03/04
    did (with index 0); EXP_05 turned it off. Output width is always ``dim``.
    """

    name = "sensor_embedding"
    properties = frozenset({"permutation_invariant"})
    requires = frozenset({"sensor_id"})

    class Config(Config):
        dim: int = Field(128, gt=0)
        sensor_dim: int | None = Field(None, gt=0, description="embedding width per sensor; None: dim")
        mode: Literal["add", "concat"] = "add"
        padding_idx: bool = Field(False, description=f"index {PAD_SENSOR} (padding) is a fixed zero vector")
        post_norm: bool = Field(False, description="LayerNorm after the embedding (EXP_03/04 on, EXP_05 off)")

        @model_validator(mode="after")
        def _widths(self):
            if self.mode == "add" and self.sensor_dim not in (None, self.dim):
                raise ValueError(f"mode 'add' needs sensor_dim == dim ({self.dim}), got {self.sensor_dim}")
            return self

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        sdim = config.sensor_dim or config.dim
        self.sensor = nn.Embedding(PAD_SENSOR + 1, sdim, padding_idx=PAD_SENSOR if config.padding_idx else None)
        self.proj = nn.Linear(in_dim + (sdim if config.mode == "concat" else 0), config.dim)
        self.norm = _post_norm(config.post_norm, config.dim)
        self.out_dim = config.dim

    def forward(self, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        sid = torch.where(batch.mask, batch.sensor_id, torch.full_like(batch.sensor_id, PAD_SENSOR))
        emb = self.sensor(sid).to(features.dtype)
        x = zero_padding(features, batch.mask)
        if self.config.mode == "add":
            out = self.proj(x) + emb
        else:
            out = self.proj(torch.cat([x, emb], dim=-1))
        return self.norm(out)


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
        self.proj = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.GELU(), nn.Linear(width, config.dim))
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


@hookimpl
def icezoo_components():
    return [LinearEmbedder, MLPEmbedder, SensorEmbedding, FourierEmbedder]
