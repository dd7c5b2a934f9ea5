"""The conformance kit's check of pretraining objectives (kind ``pretrain``): run by :mod:`icezoo.testing`
for every registered objective, the built-ins' and a plugin's alike.

``check_pretrain`` puts the objective on an encoder that reads every per-pulse input (features, sensor
ids through a sensor embedding, positions through the space-time bias) and checks that ``choose``
masks real pulses only and leaves one visible, that the head gives one finite row per masked slot,
that no state of the encoder depends on what is hidden of the masked pulses (no leak), and that the
loss is finite with finite gradients and reads only the masked slots' targets.
"""

from __future__ import annotations

import torch

from icezoo.core.batch import Batch
from icezoo.core.registry import ComponentSpec
from icezoo.core.synthetic import synthetic_batch

#: the encoder's width and the tolerance of the invariance checks (the kit's MODEL_DIM and ATOL)
DIM = 16
ATOL = 1e-6


def _finite(t: torch.Tensor, what: str, name: str) -> None:
    if not torch.isfinite(t).all():
        raise AssertionError(f"{name}: {what} is not finite")


def _close(a: torch.Tensor, b: torch.Tensor, what: str, name: str) -> None:
    if a.shape != b.shape or not torch.allclose(a, b, atol=ATOL, rtol=1e-5):
        err = (a - b).abs().max().item() if a.shape == b.shape else f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"
        raise AssertionError(f"{name}: {what} (max difference {err})")


#: the kit's pretraining encoder reads every per-pulse input: features (kaggle_norm: charge in column 4),
#: sensor ids (a sensor embedding) and positions (relative space-time attention)
KIT_ENCODER = {"features": [{"name": "kaggle_norm"}], "embedder": {"name": "sensor_embedding", "dim": DIM},
               "backbone": {"name": "relbias_transformer", "biased_depth": 1, "depth": 0, "heads": 2, "bias_dim": 8},
               "pooler": ["mean"]}


def check_pretrain(spec: ComponentSpec, lengths: list[int], seed: int) -> None:
    """A pretraining objective on the kit's encoder: ``choose`` masks only real pulses and leaves one
    visible; outputs are finite, one row per masked slot; no state of the encoder depends on what is
    hidden of the masked pulses (features, x, y, z, sensor ids; times without ``keep_time``); the loss
    is a finite scalar with finite gradients that reads only the masked slots' targets."""
    from icezoo.core.pipelines import pipeline_from_table
    from icezoo.core.pretraining import PretrainModel
    from icezoo.zoo import build

    name = f"pretrain {spec.name}"
    pipeline = build(pipeline_from_table("kit", KIT_ENCODER))
    columns = pipeline.features[0].feature_names()
    cfg = spec.cls.Config.model_validate(spec.cls.fill(dict(spec.cls.example_params), columns))
    obj = spec.cls.build(cfg, pipeline.backbone.out_dim)
    model = PretrainModel(pipeline, obj).double().eval()
    batch = synthetic_batch(len(columns), lengths, seed=seed, dtype=torch.float64)
    masked = obj.choose(batch, torch.Generator().manual_seed(seed))
    n, m = batch.mask.sum(1), masked.sum(1)
    if (masked & ~batch.mask).any() or (m > (n - 1).clamp_min(0)).any() or ((n >= 2) & (m == 0)).any():
        raise AssertionError(f"{name}: choose() masked {m.tolist()} of {n.tolist()} pulses (real pulses only, "
                             f"at least one, one left visible)")
    with torch.no_grad():
        states = model.encode(batch, masked)
        out = obj(states[masked])
    _finite(out, "output", name)
    if out.dim() != 2 or out.shape[0] != int(masked.sum()):
        raise AssertionError(f"{name}: output {tuple(out.shape)} is not one row per masked slot ({int(masked.sum())})")
    other = synthetic_batch(len(columns), lengths, seed=seed + 101, dtype=torch.float64)
    hidden = torch.ones(4, dtype=torch.bool)
    hidden[3] = not cfg.keep_time

    def swap(where: torch.Tensor, keep_time: bool) -> Batch:  # the slots ``where`` take the other batch's values
        w = where[..., None]
        return batch.with_(features=torch.where(w, other.features, batch.features),
                           sensor_id=torch.where(where, other.sensor_id, batch.sensor_id),
                           xyzt=torch.where(w & (hidden if keep_time else True), other.xyzt, batch.xyzt))

    moved = swap(masked, keep_time=True)
    with torch.no_grad():
        states_moved = model.encode(moved, masked)
    _close(states_moved[batch.mask], states[batch.mask], "outputs depend on the masked pulses' hidden inputs (a leak)",
           name)
    pred = obj(model.encode(batch, masked)[masked])
    loss = obj.loss(pred, batch, masked)["loss"]
    _finite(loss, "loss", name)
    loss.backward()
    for pname, p in obj.named_parameters():
        if p.grad is not None:
            _finite(p.grad, f"gradient of {pname}", name)
    with torch.no_grad():
        elsewhere = obj.loss(pred, swap(batch.mask & ~masked, keep_time=False), masked)["loss"]
    _close(elsewhere, loss.detach(), "the loss reads targets at unmasked slots", name)
