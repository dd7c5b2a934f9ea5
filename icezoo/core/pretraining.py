"""Masked-pulse pretraining: a pipeline's embedder and backbone with a self-supervised objective on top.

``icezoo pretrain`` trains a :class:`PretrainModel`: the objective (a :class:`Pretrainer` component)
chooses pulses to mask, :func:`hide_pulses` removes what is predicted about them from *every* input
the embedder and backbone read (features, the x, y, z of ``xyzt`` and ``sensor_id``: relative-position
biases and kNN graphs read the last two directly, not only the features), the embedder's output at
those slots is replaced by a learned mask token, and the objective predicts the hidden pulses from the
backbone's per-pulse states. Only the embedder and backbone are kept: a pipeline's ``init_from``
(or ``icezoo train --init-from``) takes them; the mask token and the objective's head are discarded.

After PolarBERT (NeurIPS 2024 ML4PS workshop; timinar/PolarBERT: masked DOM-id prediction on
IceCube events) and arXiv:2510.01733 (masked point transformers for neutrino telescopes).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from icezoo.core.batch import Batch
from icezoo.core.components import Pretrainer
from icezoo.core.compose import compose
from icezoo.core.errors import IcezooError
from icezoo.core.pipelines import validate_params
from icezoo.core.sizes import size_guard

#: ns -> the time scale of the mask token's time term (icezoo's time features use 3e4 ns too)
TIME_SCALE = 3.0e4


def hide_pulses(batch: Batch, masked: torch.Tensor, neutral_sensor: int, keep_time: bool) -> Batch:
    """The batch with the ``masked`` slots [B, L] made uninformative: features 0, x = y = z = 0 (the
    detector's centre), ``sensor_id`` = ``neutral_sensor`` (no real sensor), time 0 unless ``keep_time``.

    With sensor tokens (a slot is a hit sensor) the packed pulses of a masked token get features, dt
    and charge 0 as well. The mask stays True there (the slots are real pulses whose outputs are
    predicted); the event-level fields are kept (no per-pulse stage reads them)."""
    m = masked[..., None]
    zero = torch.zeros((), dtype=batch.features.dtype, device=batch.features.device)
    features = torch.where(m, zero, batch.features)
    keep = torch.ones(4, dtype=torch.bool, device=masked.device)
    keep[3] = not keep_time
    xyzt = torch.where(m & keep, torch.zeros((), dtype=batch.xyzt.dtype, device=batch.xyzt.device), batch.xyzt)
    sensor_id = torch.where(masked, torch.full_like(batch.sensor_id, neutral_sensor), batch.sensor_id)
    pulses = batch.pulses
    if pulses is not None:  # sensor tokens: a masked token's packed pulses are hidden too
        hit = masked.reshape(-1)[pulses.token(masked.shape[1])]
        pulses = replace(pulses, features=torch.where(hit[:, None], zero, pulses.features),
                         dt=torch.where(hit, torch.zeros_like(pulses.dt), pulses.dt),
                         charge=torch.where(hit, torch.zeros_like(pulses.charge), pulses.charge))
    return batch.with_(features=features, xyzt=xyzt, sensor_id=sensor_id, pulses=pulses)


def batch_generator(batch: Batch) -> torch.Generator:
    """A generator seeded by the batch's event ids: the masks depend on which events a batch holds, not
    on how much of torch's global RNG ran before (a resumed run draws the masks of an uninterrupted one)."""
    seed = np.random.SeedSequence([int(i) & 0xFFFFFFFF for i in batch.event_id.cpu().tolist()]).generate_state(2)
    return torch.Generator(device=batch.mask.device).manual_seed(int(seed[0]) << 32 | int(seed[1]))


class PretrainModel(nn.Module):
    """A pipeline's embedder and backbone plus a mask token and a pretraining objective.

    ``forward(batch)`` chooses the masked slots (seeded by the batch's events, or ``generator``), hides them,
    encodes, and returns [M, K + 1] float32: the objective's K predictions at each of the M masked slots
    and, last, the slot's flat index b * L + l (so that :meth:`loss` scores what forward masked without
    state between the calls).
    The state dict holds ``embedder.*`` and ``backbone.*`` under the pipeline's own names (a fine-tune
    loads them as they are), ``mask_token``, ``mask_time.*`` and ``objective.*``. What the training
    loop and the loaders read of a pipeline is here too: ``config``, ``selection``, ``features``,
    ``provenance``, ``frozen`` and the embedder's and backbone's ``stage_inits``.
    """

    def __init__(self, pipeline, objective: Pretrainer):
        super().__init__()
        self.embedder = pipeline.embedder
        self.backbone = pipeline.backbone
        self.objective = objective
        dim = pipeline.embedder.out_dim
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.mask_time = nn.Linear(1, dim, bias=False) if objective.config.keep_time else None
        self.config, self.selection, self.features = pipeline.config, pipeline.selection, pipeline.features
        self.provenance = dict(pipeline.provenance)  # the engine adds the objective's provider
        self.cls_token = pipeline.cls_token
        kept = [self.embedder, *self.backbone.modules()]
        self.frozen = [m for m in pipeline.frozen if any(m is k for k in kept)]
        self.stage_inits = [s for s in pipeline.stage_inits if s[3] in ("embedder", "backbone")]
        # what check_detector reads of a pipeline: the stages this model does not have
        self.poolers, self.head, self.losses = [], None, []

    def encode(self, batch: Batch, masked: torch.Tensor) -> torch.Tensor:
        """Per-pulse states [B, L, D'] of the batch with ``masked`` slots hidden (CLS slot dropped)."""
        obj = self.objective
        hidden = hide_pulses(batch, masked, obj.neutral_sensor, obj.config.keep_time)
        h = self.embedder(hidden.features, hidden)
        token = self.mask_token.to(h.dtype).expand_as(h)
        if self.mask_time is not None:
            t = (hidden.xyzt[..., 3:4] / TIME_SCALE).to(self.mask_time.weight.dtype)
            token = token + self.mask_time(t).to(h.dtype)
        h = torch.where(masked[..., None], token, h)
        h = self.backbone(h, hidden)
        return h[:, 1:] if self.cls_token else h

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        masked = self.objective.choose(batch, generator if generator is not None else batch_generator(batch))
        pred = self.objective(self.encode(batch, masked)[masked]).float()
        slot = masked.reshape(-1).nonzero().to(pred.dtype)  # b * L + l, exact in fp32 below 2^24 slots
        return torch.cat([pred, slot], dim=-1)

    def terms(self, pred: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """Every loss term of a :meth:`forward` output (fp32, outside autocast); ``loss`` is the total."""
        masked = torch.zeros(batch.mask.numel(), dtype=torch.bool, device=pred.device)
        masked[pred[:, -1].round().long()] = True
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return self.objective.loss(pred[:, :-1].float(), batch, masked.view_as(batch.mask))

    def loss(self, pred: torch.Tensor, batch: Batch, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The objective's total loss (what the training loop minimises; no truth needed)."""
        return self.terms(pred, batch)["loss"]

    def train(self, mode: bool = True) -> "PretrainModel":
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self


def compose_pretrain(config, objective: dict, registry) -> PretrainModel:
    """The pipeline ``config`` composed, with the objective table ``objective`` (``{name = ..., params}``;
    default name ``masked_pulse``) on its backbone; errors are one line naming ``pretrain.FIELD``."""
    params = dict(objective)
    name = str(params.pop("name", "masked_pulse"))
    try:
        spec = registry.get("pretrain", name)
    except IcezooError as exc:
        raise IcezooError(f"pretrain.name: {exc}") from None
    pipeline = compose(config, registry)
    names = tuple(c for f in pipeline.features if not f.event_level for c in f.feature_names())
    try:
        params = spec.cls.fill(params, names)
    except ValueError as exc:
        raise IcezooError(f"pretrain.{exc}") from None
    cfg = validate_params(spec.cls, params, "pretrain")
    for param, col in spec.cls.feature_columns(cfg).items():
        if not 0 <= col < len(names):
            raise IcezooError(f"pretrain.{param}: column {col}, but the pulse features have {len(names)} columns "
                              f"(0..{len(names) - 1}: {', '.join(names)})")
    with size_guard("pretrain"):
        try:
            head = spec.cls.build(cfg, pipeline.backbone.out_dim)
        except (ValueError, TypeError) as exc:
            raise IcezooError(f"pretrain: {spec.name}: {exc}") from None
    model = PretrainModel(pipeline, head)
    model.provenance[f"pretrain.{spec.name}"] = f"{spec.package}=={spec.version}"
    return model


__all__ = ["PretrainModel", "hide_pulses", "compose_pretrain", "TIME_SCALE"]
