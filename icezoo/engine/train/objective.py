"""What a run trains for: the direction (``icezoo train``) or a pretraining objective (``icezoo pretrain``).

The loop is the same for both; this module says what differs: the model it builds (a pipeline, or the
pipeline's embedder and backbone under a masked-pulse objective: :mod:`icezoo.core.pretraining`), the
validation score (mean angular error, or the objective's loss on masked validation pulses: lower is
better for both) and its name in the log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from icezoo.core.errors import IcezooError
from icezoo.core.pretraining import compose_pretrain
from icezoo.data.formats import foreign_source
from icezoo.engine.device import autocast
from icezoo.zoo import build, registry

#: the seed of the masks drawn on the validation events (the same masks at every epoch)
VAL_MASK_SEED = 20241215


def is_pretraining(opts) -> bool:
    return opts.objective is not None


def metric_name(opts) -> str:
    """The validation score's name in the log and run.json."""
    return "masked-pulse loss" if is_pretraining(opts) else "mean angular error"


def objective_table(opts) -> dict[str, Any]:
    """The objective as given, with the sensor-id classes of a foreign source's detector (Kaggle-layout
    data is IceCube-86: the objective's default) unless given."""
    table = dict(opts.objective)
    if "sensors" not in table and opts.data is not None and Path(opts.data).exists():
        src = foreign_source(Path(opts.data))
        if src is not None:
            table["sensors"] = int(src.detector().pad_sensor)
    return table


def build_model(opts, config):
    """The model a run trains: the pipeline, or its pretraining model."""
    if not is_pretraining(opts):
        return build(config)
    return compose_pretrain(config, objective_table(opts), registry())


def masked_validation(model, loader, device, precision: str) -> float:
    """The objective's loss on the validation events, each masked the same way at every epoch, averaged
    over events."""
    gen = torch.Generator(device=device).manual_seed(VAL_MASK_SEED)
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.inference_mode():
        for batch in loader:
            batch = batch.to(device)
            with autocast(device, precision):
                pred = model(batch, generator=gen)
            total += float(model.loss(pred.float(), batch)) * batch.num_events
            n += batch.num_events
    model.train(was_training)
    return total / n if n else float(np.nan)


#: the splits ``icezoo pretrain --split`` reads
SPLITS = ("train", "test")


def split_objective(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` overrides -> (the pipeline's, the objective's): ``pretrain.KEY=V`` sets the objective's KEY."""
    pipeline = {k: v for k, v in overrides.items() if not k.startswith("pretrain.")}
    objective = {k[len("pretrain."):]: v for k, v in overrides.items() if k.startswith("pretrain.")}
    if "" in objective or any("." in k for k in objective):
        bad = next(k for k in objective if k == "" or "." in k)
        raise IcezooError(f"--set pretrain.{bad}: expected pretrain.PARAM=VALUE (e.g. pretrain.mask_ratio=0.5)")
    return pipeline, objective


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise IcezooError(f"--split {split}: expected one of {', '.join(SPLITS)}")
    return split
