"""Pretraining objectives (``icezoo pretrain``): self-supervised heads on a pipeline's per-pulse states.

An objective is discarded after pretraining; only the embedder and backbone it trained are kept
(:mod:`icezoo.core.pretraining` hides the masked pulses and holds the mask token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from icezoo.core import N_SENSORS, Batch, Pretrainer
from icezoo.nn import mlp

#: metres -> the scale of the position targets (kaggle_norm's x, y, z / 500)
POSITION_SCALE = 500.0


class MaskedPulse(Pretrainer):
    """Masked-pulse modelling: predict each masked pulse's sensor (x, y, z and/or id) and charge (PolarBERT).

    From the backbone's state at a masked slot a 2-layer MLP predicts the pulse's sensor position
    (x, y, z / 500 m, mean squared error), its sensor id (cross-entropy over the detector's
    ``sensors``) and its charge as the pipeline's features encode it (the pulse feature column
    ``charge_column``, e.g. kaggle_norm's log10(q)/3; mean squared error). The total is the weighted
    sum of the terms, each a mean over the batch's masked pulses; a weight 0 drops its term.
    PolarBERT (NeurIPS 2024 ML4PS workshop, timinar/PolarBERT) masks DOM ids and predicts them
    (cross-entropy over 5160 DOMs) plus the event's charge; arXiv:2510.01733 masks 75-100% of the
    points of a neutrino-telescope event (a masked autoencoder); here the ratio is a parameter.
    """

    name = "masked_pulse"

    class Config(Pretrainer.Config):
        position_weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="weight of the x, y, z term")
        sensor_weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="weight of the sensor-id term")
        charge_weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="weight of the charge term")
        sensors: int = Field(N_SENSORS, gt=0, description="sensor-id classes: the detector's sensors (IceCube-86: "
                             "5160); set by icezoo pretrain from the data")
        charge_column: int | None = Field(None, ge=0, description="pulse feature column of the charge; set by "
                                          "icezoo pretrain from the feature named 'charge'")
        hidden: int | None = Field(None, gt=0, description="hidden width of the MLP (default: the input width)")

        @model_validator(mode="after")
        def _some_term(self):
            if not (self.position_weight or self.sensor_weight or self.charge_weight):
                raise ValueError("every term has weight 0: nothing to learn")
            return self

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        self.neutral_sensor = config.sensors  # the detector's padding id: PAD_SENSOR on IceCube-86
        self.out_dim = 3 + config.sensors + 1
        self.net = mlp(in_dim, [config.hidden or in_dim], self.out_dim)

    @classmethod
    def fill(cls, params: dict, feature_names: tuple[str, ...]) -> dict:
        """``charge_column``: the pulse feature named 'charge' unless given (needed while charge_weight > 0)."""
        if params.get("charge_column") is not None or params.get("charge_weight", 1.0) == 0:
            return params
        if "charge" not in feature_names:
            raise ValueError(f"charge_weight: the pulse features ({', '.join(feature_names)}) have no 'charge' "
                             f"column; name one (charge_column = N) or set charge_weight = 0")
        return {**params, "charge_column": feature_names.index("charge")}

    @classmethod
    def feature_columns(cls, config: Config) -> dict[str, int]:
        return {} if config.charge_column is None else {"charge_column": config.charge_column}

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)

    def loss(self, pred: torch.Tensor, batch: Batch, masked: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        out = pred  # [M, K]: the masked pulses of the whole batch
        zero = pred.sum() * 0.0  # keeps the graph (and DDP's buckets) when a batch masks nothing
        terms: dict[str, torch.Tensor] = {}
        if cfg.position_weight:
            target = batch.xyzt[..., :3][masked].to(out.dtype) / POSITION_SCALE
            terms["position"] = F.mse_loss(out[:, :3], target) if len(out) else zero
        if cfg.sensor_weight:
            target = batch.sensor_id[masked]
            target = torch.where(target < cfg.sensors, target, torch.full_like(target, -100))  # not a sensor
            terms["sensor"] = F.cross_entropy(out[:, 3:3 + cfg.sensors], target, ignore_index=-100) \
                if len(out) else zero
        if cfg.charge_weight:
            if cfg.charge_column is None:
                raise ValueError("masked_pulse: charge_weight > 0 needs charge_column (the pulse feature "
                                 "column of the charge)")
            target = batch.features[..., cfg.charge_column][masked].to(out.dtype)
            terms["charge"] = F.mse_loss(out[:, -1], target) if len(out) else zero
        weights = {"position": cfg.position_weight, "sensor": cfg.sensor_weight, "charge": cfg.charge_weight}
        terms["loss"] = sum((weights[k] * v for k, v in terms.items()), zero)
        return terms
