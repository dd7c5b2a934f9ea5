"""``icezoo compose``: a pipeline assembled from a base pipeline and named stages, then tried on
one synthetic batch (forward with a per-stage trace, loss, backward), so a new combination is
known to build and to give finite gradients before any data is read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from icezoo.core.compose import Pipeline, count_parameters
from icezoo.core.names import normalise
from icezoo.core.pipelines import ComponentRef, PipelineConfig, pipeline_config
from icezoo.core.synthetic import synthetic_batch
from icezoo.zoo import build, registry

#: the stages a pipeline names, in the order ``compose`` shows them
STAGE_ORDER = ("features", "selection", "embedder", "backbone", "pooler", "head", "loss", "task")
#: stages naming one component; the others take a list
SINGLE_STAGES = ("embedder", "backbone", "head", "selection")


@dataclass
class SmokeStep:
    """What one forward+backward pass on a synthetic batch showed."""

    config: PipelineConfig
    model: Pipeline
    lengths: list[int]
    trace: list = field(default_factory=list)
    loss: float = float("nan")
    loss_finite: bool = False
    grads_finite: bool = False
    parameters: int = 0

    @property
    def ok(self) -> bool:
        return self.loss_finite and self.grads_finite


def compose_config(pipeline: str | None, pipeline_file: str | Path | None, stages: dict[str, tuple[Any, str]],
                   name: str, keep_base_name: bool, overrides: dict[str, Any]) -> tuple[PipelineConfig, dict[str, str]]:
    """The base pipeline (``pipeline`` / ``pipeline_file``, else 'default') with the stages named in
    ``stages`` (stage -> (component name or list of names or None, the flag that named it))
    replaced, then ``overrides``. A stage naming the base's own component keeps the base's params;
    another selection keeps the pulse budget. Returns the config and where each stage came from."""
    config = pipeline_config(pipeline or (None if pipeline_file else "default"), pipeline_file, reg=registry())
    base = config.name if pipeline else Path(pipeline_file).name if pipeline_file else "default"
    origin = {stage: base for stage in STAGE_ORDER}
    updates: dict[str, Any] = {"name": config.name if keep_base_name else name}
    for stage, (wanted, flag) in stages.items():
        if not wanted:
            continue
        origin[stage] = flag
        if stage == "task":  # --task direction energy ...: the direction is the head and loss, always trained
            updates["tasks"] = [ComponentRef(name=v) for v in wanted if normalise(v) != "direction"]
            continue
        if stage not in SINGLE_STAGES:
            updates[stage] = [ComponentRef(name=v) for v in wanted]
            continue
        have = getattr(config, stage)
        if not isinstance(have, list) and have.name == wanted:
            origin[stage] = f"{flag}, {base}'s params"
            updates[stage] = have
        elif stage == "selection":  # the pulse budget carries over to another selection
            updates[stage] = ComponentRef(name=wanted, params=have.params)
        else:
            updates[stage] = ComponentRef(name=wanted)
    return config.model_copy(update=updates).with_overrides(overrides), origin


def smoke_step(config: PipelineConfig, events: int = 4, seed: int = 0) -> SmokeStep:
    """Build ``config`` and run one training-mode forward (traced), loss and backward on ``events``
    synthetic events of increasing length (up to min(max_pulses, 32) pulses)."""
    torch.manual_seed(seed)
    model = build(config)
    n = min(config.max_pulses, 32)
    lengths = [max(1, round(n * (i + 1) / events)) for i in range(events)]
    batch = synthetic_batch(model.feature_dim, lengths, event_dim=model.event_dim, seed=seed)
    trace: list = []
    model.train()
    pred, outs = model(batch, trace, tasks=True)
    value = model.loss(pred, batch)
    if model.tasks:  # each task on a truth it could learn (Task.example_truth of a random signal)
        signal = torch.rand(len(lengths), generator=torch.Generator().manual_seed(seed)) * 2 - 1
        batch.truth = {k: v.float() for t in model.tasks.values() for k, v in t.example_truth(signal).items()}
        value = value + model.task_loss(outs, batch)[0]
    value.backward()
    grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    return SmokeStep(config=config, model=model, lengths=lengths, trace=trace, loss=value.item(),
                     loss_finite=bool(torch.isfinite(value)), grads_finite=grads_finite,
                     parameters=count_parameters(model))
