"""A learned vector per DOM (``sensor_embedding``, EXP_03-05, EXP_29)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from icezoo.core import PAD_SENSOR, Batch, Config, Embedder
from icezoo.nn import post_norm, zero_padding


class SensorEmbedding(Embedder):
    """A learnable vector per sensor_id, added to or concatenated with the feature embedding (EXP_03-05, EXP_29).

    ``mode="add"``: Linear(features) + E[sensor_id] (sensor_dim must equal dim).
    ``mode="concat"``: Linear([features, E[sensor_id]]) -> dim.
    ``padding_idx``: row PAD_SENSOR = 5160 (the padding id; sensor 0 is a real DOM) is a fixed zero vector, as EXP_03/04
    did (with index 0); EXP_05 turned it off. Output width is always ``dim``.
    """

    name = "sensor_embedding"
    properties = frozenset({"permutation_invariant"})
    requires = frozenset({"sensor_id"})
    needs = ("icecube86_sensor_id",)  # one learned row per IceCube-86 DOM

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
        self.norm = post_norm(config.post_norm, config.dim)
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
