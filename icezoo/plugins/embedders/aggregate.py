"""Sensor-level aggregation (``sensor_agg``): every pulse of a hit sensor -> one token (timinar/iceaggr 2025)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Batch, Config, Embedder
from icezoo.nn import InputStandardizer, TransformerBlock, mlp, post_norm, zero_padding

#: scales of the token's position and first-pulse time (m, ns) and of a pulse's time in its sensor (ns)
POSITION_SCALE, TIME_SCALE, SENSOR_TIME_SCALE = 500.0, 3000.0, 1000.0


class SensorAggregation(Embedder):
    """Each hit sensor's pulses encoded into one token (DeepSets or a small transformer), with the sensor's position (timinar/iceaggr 2025).

    Stage one of a two-stage model (iceaggr's T1 over the pulses of a DOM; the backbone is T2 over
    the DOMs): it reads ``batch.pulses`` (:class:`icezoo.core.PackedPulses`), every pulse of every
    kept sensor, so no pulse is dropped and nothing is padded to the brightest event. Per pulse:
    the pipeline's features plus the time since the sensor's first pulse (``dt / 1 us`` and
    ``log1p(dt / 1 ns)``), standardized with training statistics (``standardize``), then an MLP
    (phi). ``encoder = "transformer"`` adds ``depth`` pre-norm attention blocks over the pulses of
    each sensor (sensors bucketed by pulse count, so the padding stays under 2x the pulses). Each
    token pools its pulses (mean and max: plain-torch segment reductions, ``index_add_`` and
    ``scatter_reduce``) with log(1 + pulse count), maps them with a second MLP (rho), and adds a
    linear encoding of the sensor's position and first-pulse time (``batch.xyzt`` of the token).

    Needs a selection that declares ``sensor_tokens`` (``sensors``). A batch without ``pulses`` (the
    synthetic batches of ``icezoo compose`` and the kit's generic checks) is read as one pulse per
    token: the token's own features, ``dt = 0``.
    """

    name = "sensor_agg"
    properties = frozenset({"permutation_invariant"})
    requires = frozenset({"sensor_tokens", "xyzt"})
    example_params = {"dim": 16, "hidden": 16}

    class Config(Config):
        dim: int = Field(128, gt=0)
        hidden: int | None = Field(None, gt=0, description="hidden width of phi and rho; None: dim")
        encoder: Literal["deepsets", "transformer"] = Field(
            "deepsets", description="deepsets: phi per pulse then pool; transformer: attention among a sensor's pulses too")
        depth: int = Field(1, gt=0, description="attention blocks over a sensor's pulses (encoder = transformer)")
        heads: int = Field(4, gt=0, description="heads of those blocks")
        standardize: bool = Field(True, description="standardize the per-pulse inputs with training statistics")
        post_norm: bool = Field(False, description="LayerNorm on the tokens")

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        dim, hidden = config.dim, config.hidden or config.dim
        self.standardize = InputStandardizer(in_dim + 2) if config.standardize else None
        self.phi = mlp(in_dim + 2, [hidden], dim)
        self.blocks = nn.ModuleList([TransformerBlock(dim, config.heads, ff_mult=2) for _ in range(config.depth)]
                                    if config.encoder == "transformer" else [])
        self.rho = mlp(2 * dim + 1, [hidden], dim)
        self.position = nn.Linear(4, dim)
        self.norm = post_norm(config.post_norm, dim)
        self.out_dim = dim

    def _pulses(self, features: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-pulse features [N, F], dt [N] in ns, flat token index [N]) of the batch's pulses."""
        b, s = batch.mask.shape
        if batch.pulses is None:  # one pulse per token: the token's first pulse
            token = torch.nonzero(batch.mask.reshape(-1)).reshape(-1)
            return features.reshape(b * s, -1)[token], features.new_zeros(len(token)), token
        p = batch.pulses
        return p.features.to(features.dtype), p.dt.to(features.dtype), p.token(s)

    def forward(self, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        b, s = batch.mask.shape
        x, dt, token = self._pulses(features, batch)
        x = torch.cat([x, (dt / SENSOR_TIME_SCALE)[:, None], torch.log1p(dt.clamp_min(0))[:, None]], dim=-1)
        if self.standardize is not None:
            x = self.standardize(x[None], torch.ones(1, len(x), dtype=torch.bool, device=x.device))[0]
        h = self.phi(x)
        if len(self.blocks):
            h = self._within_sensors(h, token, b * s)
        count = torch.bincount(token, minlength=b * s).to(h.dtype)[:, None]
        mean = h.new_zeros(b * s, h.shape[1]).index_add_(0, token, h) / count.clamp_min(1)
        top = h.new_zeros(b * s, h.shape[1]).scatter_reduce_(0, token[:, None].expand_as(h), h, "amax",
                                                             include_self=False)
        tokens = self.rho(torch.cat([mean, top, torch.log1p(count)], dim=-1)).view(b, s, -1)
        xyzt = zero_padding(batch.xyzt.to(h.dtype), batch.mask)
        scale = xyzt.new_tensor([POSITION_SCALE] * 3 + [TIME_SCALE])
        return zero_padding(self.norm(tokens + self.position(xyzt / scale)), batch.mask)

    def _within_sensors(self, h: torch.Tensor, token: torch.Tensor, n_tokens: int) -> torch.Tensor:
        """The attention blocks over each sensor's pulses: sensors bucketed by ceil(log2(pulse count)),
        each bucket padded to its longest sensor ([sensors, P, D], P under twice any member's count)."""
        order = torch.sort(token, stable=True).indices
        tok = token[order]
        counts = torch.bincount(token, minlength=n_tokens)
        rank = torch.arange(len(tok), device=h.device) - (torch.cumsum(counts, 0) - counts)[tok]
        level = torch.ceil(torch.log2(counts.clamp_min(1).double())).long()
        out = torch.empty_like(h)
        for lv in torch.unique(level[counts > 0]).tolist():
            members = torch.nonzero((level == lv) & (counts > 0)).reshape(-1)
            row = torch.full((n_tokens,), -1, dtype=torch.int64, device=h.device)
            row[members] = torch.arange(len(members), device=h.device)
            take = row[tok] >= 0
            pulse, r, k = order[take], row[tok[take]], rank[take]
            width = int(counts[members].max())
            x = h.new_zeros(len(members), width, h.shape[1])
            mask = torch.zeros(len(members), width, dtype=torch.bool, device=h.device)
            x[r, k], mask[r, k] = h[pulse], True
            for block in self.blocks:
                x = block(x, mask)
            out[pulse] = x[r, k]
        return out
