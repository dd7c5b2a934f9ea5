"""The conformance kit: property tests generated from the registry, for icezoo and for plugins.

Use it from any test suite (a third-party package's included)::

    from icezoo.testing import ConformanceSuite

    class TestMyPluginConformance(ConformanceSuite):
        package = "icezoo-gru"      # only this distribution's components; None = every component

Every registered component of the package gets ``test_component`` (hypothesis draws event sizes
and seeds), and ``test_every_component_is_tested`` asserts that the set tested equals the set
registered. Checks run in eval mode and float64 (atol 1e-6):

* padding never changes outputs for real pulses nor pooled results (unless ``reads_padding``);
* outputs and gradients are finite for events of 1 to ``max_pulses`` pulses;
* one event's output does not depend on the other events in the batch;
* with ``permutation_invariant``: pooled outputs are invariant to pulse order, per-pulse outputs
  permute with the pulses;
* with ``translation_invariant`` / ``vertical_rotation_invariant``: per-pulse outputs are unchanged
  when every position is shifted by one vector / rotated about the vertical axis;
* tasks: outputs finite and in range (probabilities in [0, 1], sigmas > 0), losses finite, and
  (``test_task_learns``) falling while the head learns a function of its input;
* heads give unit directions; losses are finite with finite gradients for tiny and huge kappa
  and lower at the truth than away from it, and a loss's per-event terms (its ``forward``) do not
  depend on the other events; selections keep at most max_pulses in time order,
  deterministically; feature extractors are finite, shaped, and per-event; a pretraining objective
  masks real pulses only, and nothing it predicts leaks from the masked pulses into any output.

A component whose defaults are too big or invalid for a quick test sets ``example_params``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from icezoo.core.batch import PAD_SENSOR, Batch, PulseChunk
from icezoo.core.registry import ComponentSpec, Registry
from icezoo.core.synthetic import synthetic_batch, synthetic_sensor_batch
from icezoo.testing_pretrain import check_pretrain
from icezoo.testing_tasks import check_task, check_task_learns

ATOL = 1e-6
FEATURE_DIM = 5
EVENT_DIM = 0
MODEL_DIM = 16
MAX_PULSES = 24


def _register_profiles() -> None:
    try:
        from hypothesis import settings
    except ImportError:  # the kit's checks also run without hypothesis (fixed cases)
        return
    settings.register_profile("ci", max_examples=4, deadline=None, derandomize=True, print_blob=True)
    settings.register_profile("dev", max_examples=10, deadline=None)
    settings.register_profile("thorough", max_examples=60, deadline=None)
    settings.load_profile(os.environ.get("ICEZOO_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


_register_profiles()


# ------------------------------------------------------------------------------------------ helpers
def build_component(spec: ComponentSpec, in_dim: int | None = None):
    """An instance from ``example_params`` (or the defaults): float64 and eval mode for modules."""
    cfg = spec.cls.Config.model_validate(spec.cls.example_params)
    obj = spec.cls.build(cfg, in_dim or 0)
    if isinstance(obj, torch.nn.Module):
        obj.double().eval()
    return obj, cfg


def _close(a: torch.Tensor, b: torch.Tensor, what: str, name: str) -> None:
    if a.shape != b.shape:
        raise AssertionError(f"{name}: {what}: shapes differ {tuple(a.shape)} vs {tuple(b.shape)}")
    if not torch.allclose(a, b, atol=ATOL, rtol=1e-6):
        diff = (a - b).abs().max().item()
        raise AssertionError(f"{name}: {what} (max abs difference {diff:.3g} > {ATOL})")


def _finite(t: torch.Tensor, what: str, name: str) -> None:
    if not torch.isfinite(t).all():
        raise AssertionError(f"{name}: {what} is not finite")


def _batch(lengths: list[int], seed: int, width: int | None = None, pad_value: float = 0.0,
           feature_dim: int = FEATURE_DIM) -> Batch:
    return synthetic_batch(feature_dim, lengths, width=width, seed=seed, dtype=torch.float64,
                           pad_value=pad_value, event_dim=EVENT_DIM)


def _garbage_padding(batch: Batch, extra: int, seed: int) -> Batch:
    """The same events with ``extra`` more padded slots and large random values in every padded slot."""
    gen = torch.Generator().manual_seed(seed + 7)
    b, length, f = batch.features.shape
    width = length + extra
    pad = torch.arange(width)[None, :] >= batch.lengths[:, None]

    def widen(t: torch.Tensor, fill) -> torch.Tensor:
        out = torch.full((b, width, *t.shape[2:]), fill, dtype=t.dtype)
        out[:, :length] = t
        return out

    noise_f = torch.randn(b, width, f, generator=gen, dtype=batch.features.dtype) * 1e3
    noise_x = torch.randn(b, width, 4, generator=gen, dtype=batch.xyzt.dtype) * 1e3
    features = torch.where(pad[..., None], noise_f, widen(batch.features, 0.0))
    xyzt = torch.where(pad[..., None], noise_x, widen(batch.xyzt, 0.0))
    return batch.with_(features=features, xyzt=xyzt, mask=~pad, sensor_id=widen(batch.sensor_id, PAD_SENSOR))


def _permute(batch: Batch, seed: int) -> tuple[Batch, torch.Tensor]:
    """Shuffle the real pulses within each event; returns the batch and the gather index [B, L]."""
    gen = torch.Generator().manual_seed(seed + 11)
    b, length = batch.mask.shape
    index = torch.arange(length).repeat(b, 1)
    for e, n in enumerate(batch.lengths.tolist()):
        index[e, :n] = torch.randperm(n, generator=gen)
    take = lambda t: torch.gather(t, 1, index.view(b, length, *([1] * (t.dim() - 2))).expand_as(t))
    return batch.with_(features=take(batch.features), xyzt=take(batch.xyzt), sensor_id=take(batch.sensor_id)), index


def _geometric_moves(batch: Batch, seed: int) -> dict[str, tuple[str, Batch]]:
    """The batch with every position shifted by one vector, and rotated about the vertical axis
    (times, features and z unchanged), for the translation/rotation invariance properties."""
    gen = torch.Generator().manual_seed(seed + 13)
    xyz, t = batch.xyzt[..., :3], batch.xyzt[..., 3:]
    shift = (torch.rand(3, generator=gen, dtype=xyz.dtype) - 0.5) * 400.0
    angle = float(torch.rand((), generator=gen)) * 2 * np.pi
    c, s = np.cos(angle), np.sin(angle)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=xyz.dtype)
    return {
        "translation_invariant": (f"a translation by {shift.numpy().round(1).tolist()} m",
                                  batch.with_(xyzt=torch.cat([xyz + shift, t], dim=-1))),
        "vertical_rotation_invariant": (f"a rotation by {angle:.2f} rad about the vertical axis",
                                        batch.with_(xyzt=torch.cat([xyz @ rot.T, t], dim=-1))),
    }


def _properties(spec: ComponentSpec, cfg) -> frozenset[str]:
    return spec.cls.declared_properties(cfg)


#: tiny values for the size params of embedders and backbones (set wherever a component has them)
TINY_SIZES = {"dim": 16, "depth": 1, "heads": 2, "hidden": 8, "k": 3, "biased_depth": 1, "local_depth": 1,
              "ff_mult": 1, "sensor_dim": 8, "encode_dim": 8, "bias_dim": 4, "base_dim": 4, "bottleneck": 8,
              "post": [16], "widths": [16]}


def tiny_pipeline(config, registry: Registry):
    """The pipeline with its embedder and backbone(s) shrunk to test size (width 16, one or two
    layers): every size param a component has and sets (to a non-zero value) gets its tiny value."""
    from icezoo.core.pipelines import pipeline_from_table

    table = config.to_table()
    for stage in ("embedder", "backbone", "pooler"):
        refs = table[stage] if isinstance(table[stage], list) else [table[stage]]
        for ref in refs:
            fields = registry.get(stage, ref["name"]).cls.Config.model_fields
            for param, field in fields.items():
                value = ref.get(param, field.get_default(call_default_factory=True))
                if param in TINY_SIZES and value:
                    ref[param] = TINY_SIZES[param]
                elif param == "layers" and value:  # an MLP depth, or a list of per-layer widths
                    ref[param] = [[16, 16]] * 2 if isinstance(value, list) else 1
    return pipeline_from_table(config.name, table)


# ------------------------------------------------------------------------------------------ checks
def _check_sequence_module(spec: ComponentSpec, lengths: list[int], seed: int, run: Callable, obj, cfg,
                           cls_slot: bool) -> None:
    """Shared checks for embedders and backbones (per-pulse outputs)."""
    name = f"{spec.kind} {spec.name}"
    props = _properties(spec, cfg)
    batch = _batch(lengths, seed)
    with torch.no_grad():
        out = run(batch)
    _finite(out, "output", name)
    off = 1 if cls_slot else 0
    if out.shape[1] != batch.mask.shape[1] + off:
        raise AssertionError(f"{name}: output has {out.shape[1]} slots for {batch.mask.shape[1]} pulses")
    real = batch.mask
    if "reads_padding" not in props:
        with torch.no_grad():
            out_pad = run(_garbage_padding(batch, extra=3, seed=seed))
        width = batch.mask.shape[1]
        _close(out_pad[:, off:off + width][real], out[:, off:][real], "padding changed outputs of real pulses", name)
        if cls_slot:
            _close(out_pad[:, 0], out[:, 0], "padding changed the CLS output", name)
        for e, n in enumerate(lengths):
            with torch.no_grad():
                alone = run(batch.select([e]).with_(
                    features=batch.features[e:e + 1, :n], xyzt=batch.xyzt[e:e + 1, :n],
                    mask=batch.mask[e:e + 1, :n], sensor_id=batch.sensor_id[e:e + 1, :n]))
            _close(alone[0, :n + off], out[e, :n + off], f"event {e} depends on the other events", name)
    if "permutation_invariant" in props:
        permuted, index = _permute(batch, seed)
        with torch.no_grad():
            out_perm = run(permuted)
        expect = torch.gather(out[:, off:], 1, index[..., None].expand_as(out[:, off:]))
        _close(out_perm[:, off:][real], expect[real], "outputs do not permute with the pulses", name)
    for prop, (what, moved) in _geometric_moves(batch, seed).items():
        if prop in props:
            with torch.no_grad():
                out_moved = run(moved)
            _close(out_moved[:, off:][real], out[:, off:][real], f"outputs changed under {what}", name)
    # gradients: finite for every size, from 1 to max pulses
    obj.zero_grad(set_to_none=True)
    features = batch.features.clone().requires_grad_(True)
    out = run(batch.with_(features=features))
    loss = out[:, off:][real].sum() + (out[:, 0].sum() if cls_slot else 0.0)
    loss.backward()
    _finite(features.grad, "input gradient", name)
    for pname, p in obj.named_parameters():
        if p.grad is not None:
            _finite(p.grad, f"gradient of {pname}", name)


def check_embedder(spec: ComponentSpec, lengths: list[int], seed: int) -> None:
    obj, cfg = build_component(spec, FEATURE_DIM)
    _check_sequence_module(spec, lengths, seed, lambda b: obj(b.features, b), obj, cfg, cls_slot=False)
    if "sensor_tokens" in spec.cls.declared_requires(cfg):
        check_sensor_tokens(spec, obj, cfg, lengths, seed)


def check_sensor_tokens(spec: ComponentSpec, obj, cfg, lengths: list[int], seed: int) -> None:
    """An embedder of sensor tokens on batches with packed pulses (``batch.pulses``): the order of the
    pulses never matters, padded token slots never do, events are independent, tokens permute with
    their pulses (when it declares permutation_invariant), gradients of the pulses are finite."""
    name = f"{spec.kind} {spec.name}"
    batch = synthetic_sensor_batch(FEATURE_DIM, lengths, seed=seed, dtype=torch.float64, event_dim=EVENT_DIM)
    run = lambda b: obj(b.features, b)  # noqa: E731
    real, p = batch.mask, batch.pulses
    with torch.no_grad():
        out = run(batch)
        _finite(out, "output", name)
        shuffled = p.to(dtype=None)
        order = torch.randperm(p.num_pulses, generator=torch.Generator().manual_seed(seed + 17))
        for field in p.TENSORS:
            setattr(shuffled, field, getattr(p, field)[order])
        _close(run(batch.with_(pulses=shuffled))[real], out[real], "the order of the pulses changed outputs", name)
        _close(run(_garbage_padding(batch, extra=3, seed=seed))[:, :real.shape[1]][real], out[real],
               "padded token slots changed outputs of real tokens", name)
        for e, n in enumerate(lengths):
            one = batch.select([e])
            alone = run(one.with_(features=one.features[:, :n], xyzt=one.xyzt[:, :n], mask=one.mask[:, :n],
                                  sensor_id=one.sensor_id[:, :n]))
            _close(alone[0, :n], out[e, :n], f"event {e} depends on the other events", name)
        if "permutation_invariant" in _properties(spec, cfg):
            permuted, index = _permute(batch, seed)
            inverse = torch.argsort(index, dim=1)  # old slot -> new slot
            moved = p.to(dtype=None)
            moved.slot = inverse[p.event, p.slot]
            expect = torch.gather(out, 1, index[..., None].expand_as(out))
            _close(run(permuted.with_(pulses=moved))[real], expect[real], "tokens do not permute with their pulses", name)
    obj.zero_grad(set_to_none=True)
    grad_in = p.to(dtype=None)
    grad_in.features = p.features.clone().requires_grad_(True)
    run(batch.with_(pulses=grad_in))[real].sum().backward()
    _finite(grad_in.features.grad, "gradient of the pulse features", name)


def check_backbone(spec: ComponentSpec, lengths: list[int], seed: int) -> None:
    obj, cfg = build_component(spec, MODEL_DIM)
    proj = torch.nn.Linear(FEATURE_DIM, MODEL_DIM).double()
    torch.nn.init.normal_(proj.weight, std=0.5)
    cls_slot = "adds_cls_token" in _properties(spec, cfg)
    _check_sequence_module(spec, lengths, seed, lambda b: obj(proj(b.features), b), obj, cfg, cls_slot=cls_slot)


def check_pooler(spec: ComponentSpec, lengths: list[int], seed: int) -> None:
    name = f"pooler {spec.name}"
    obj, cfg = build_component(spec, MODEL_DIM)
    props = _properties(spec, cfg)
    batch = _batch(lengths, seed, feature_dim=MODEL_DIM)
    gen = torch.Generator().manual_seed(seed + 3)
    cls = torch.randn(len(lengths), MODEL_DIM, generator=gen, dtype=torch.float64)
    run = lambda b, c=cls: obj(b.features, b.mask, c)
    with torch.no_grad():
        out = run(batch)
    _finite(out, "output", name)
    if out.shape != (len(lengths), obj.out_dim):
        raise AssertionError(f"{name}: output shape {tuple(out.shape)}, expected ({len(lengths)}, {obj.out_dim})")
    if "reads_padding" not in props:
        with torch.no_grad():
            _close(run(_garbage_padding(batch, 3, seed)), out, "padding changed the pooled result", name)
        for e, n in enumerate(lengths):
            with torch.no_grad():
                alone = obj(batch.features[e:e + 1, :n], batch.mask[e:e + 1, :n], cls[e:e + 1])
            _close(alone[0], out[e], f"event {e} depends on the other events", name)
    if "permutation_invariant" in props:
        with torch.no_grad():
            _close(run(_permute(batch, seed)[0]), out, "pooled result depends on pulse order", name)
    h = batch.features.clone().requires_grad_(True)
    c = cls.clone().requires_grad_(True)
    obj(h, batch.mask, c).sum().backward()
    if h.grad is not None:  # a cls pooler reads only the CLS vector
        _finite(h.grad, "input gradient", name)
    if c.grad is not None:
        _finite(c.grad, "CLS gradient", name)


def check_head(spec: ComponentSpec, lengths: list[int], seed: int) -> None:
    name = f"head {spec.name}"
    obj, _ = build_component(spec, MODEL_DIM)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(len(lengths), MODEL_DIM, generator=gen, dtype=torch.float64, requires_grad=True)
    pred = obj(z)
    _finite(pred, "output", name)
    direction = obj.direction(pred)
    _close(direction.norm(dim=-1), torch.ones(len(lengths), dtype=torch.float64), "direction is not a unit vector", name)
    for e in range(len(lengths)):
        with torch.no_grad():
            _close(obj(z[e:e + 1])[0], pred[e], f"event {e} depends on the other events", name)
    pred.sum().backward()
    _finite(z.grad, "input gradient", name)


def check_loss(spec: ComponentSpec, lengths: list[int], seed: int) -> None:
    from icezoo.core.batch import vector_to_angles

    name = f"loss {spec.name}"
    obj, _ = build_component(spec)
    gen = torch.Generator().manual_seed(seed)
    b = len(lengths)
    target = torch.randn(b, 3, generator=gen, dtype=torch.float64)
    target = target / target.norm(dim=-1, keepdim=True)
    # a direction 0.5 rad away from the truth, for every event
    ortho = torch.linalg.cross(target, torch.randn(b, 3, generator=gen, dtype=torch.float64))
    ortho = ortho / ortho.norm(dim=-1, keepdim=True)
    away = torch.cos(torch.tensor(0.5)) * target + torch.sin(torch.tensor(0.5)) * ortho
    vector = "vector" in spec.cls.accepts
    bins = not vector and "bins" in spec.cls.accepts
    for kappa in ((1e-6, 1.0, 1e4) if vector or bins else (1.0,)):
        def pred_of(direction):
            if vector:
                return direction * kappa
            if bins:  # logits peaked at the direction, sharper with kappa (the loss's own default layout)
                from icezoo.nn.bins import peaked_logits
                return peaked_logits(obj.layout, direction, kappa)
            az, ze = vector_to_angles(direction)
            return torch.stack([az, ze], -1)
        at_truth = pred_of(target).clone().requires_grad_(True)
        value = obj(at_truth, target)
        _finite(value, f"loss at kappa={kappa}", name)
        value.backward()
        _finite(at_truth.grad, f"gradient at kappa={kappa}", name)
        off = pred_of(away).clone().requires_grad_(True)
        value_off = obj(off, target)
        value_off.backward()
        _finite(off.grad, f"gradient away from the truth at kappa={kappa}", name)
        if kappa >= 1.0 and not float(value.detach()) < float(value_off.detach()):
            raise AssertionError(f"{name}: loss at the truth ({float(value):.4g}) is not below the loss "
                                 f"0.5 rad away ({float(value_off):.4g}) at kappa={kappa}")
        with torch.no_grad():
            terms = obj.forward(off, target)
            for e in range(b):
                _close(obj.forward(off[e:e + 1], target[e:e + 1])[0], terms[e],
                       f"per-event term {e} depends on the other events at kappa={kappa}", name)


def synthetic_chunk(lengths: list[int], seed: int, sensors: int | None = None) -> PulseChunk:
    """A PulseChunk of real IceCube sensors with time-ordered pulses (for selection/feature checks);
    ``sensors``: draw from the first that many sensors only (so sensors have several pulses)."""
    from icezoo.resources import geometry_csv

    rng = np.random.default_rng(seed)
    geometry = np.loadtxt(geometry_csv(), delimiter=",", skiprows=1)
    n = int(sum(lengths))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    sensor = rng.integers(0, sensors or len(geometry), n)
    time = np.concatenate([np.sort(rng.uniform(6000, 20000, k)).round() for k in lengths]) if n else np.zeros(0)
    charge = np.round(rng.lognormal(0.0, 0.8, n) / 0.025) * 0.025 + 0.025
    az = rng.uniform(0, 2 * np.pi, len(lengths))
    ze = np.arccos(rng.uniform(-1, 1, len(lengths)))
    return PulseChunk(
        sensor_id=sensor.astype(np.int16), time=time.astype(np.float64), charge=charge,
        auxiliary=rng.random(n) < 0.4, x=geometry[sensor, 1], y=geometry[sensor, 2], z=geometry[sensor, 3],
        offsets=offsets, event_id=np.arange(len(lengths), dtype=np.int64) + 100,
        n_pulses=np.asarray(lengths, dtype=np.int64), azimuth=az, zenith=ze,
    )


def check_selection(spec: ComponentSpec, lengths: list[int], seed: int) -> None:
    name = f"selection {spec.name}"
    obj, _ = build_component(spec)
    chunk = synthetic_chunk([n * 3 for n in lengths], seed)
    out = obj.select(chunk, np.random.default_rng(seed))
    again = obj.select(chunk, np.random.default_rng(seed))
    if out.num_events != chunk.num_events:
        raise AssertionError(f"{name}: {chunk.num_events} events in, {out.num_events} out")
    if (out.lengths > obj.max_pulses).any():
        raise AssertionError(f"{name}: kept more than max_pulses={obj.max_pulses}")
    if (out.lengths > chunk.lengths).any() or ((out.lengths == 0) & (chunk.lengths > 0)).any():
        raise AssertionError(f"{name}: an event gained pulses or lost all of them")
    for field in PulseChunk.PULSE_FIELDS:
        if not np.array_equal(getattr(out, field), getattr(again, field)):
            raise AssertionError(f"{name}: not deterministic for a given rng ({field})")
    for e in range(out.num_events):
        t = out.time[out.offsets[e]:out.offsets[e + 1]]
        if (np.diff(t) < 0).any():
            raise AssertionError(f"{name}: event {e} is not in time order after selection")
        kept = set(zip(out.sensor_id[out.offsets[e]:out.offsets[e + 1]].tolist(), t.tolist()))
        orig = set(zip(chunk.sensor_id[chunk.offsets[e]:chunk.offsets[e + 1]].tolist(),
                       chunk.time[chunk.offsets[e]:chunk.offsets[e + 1]].tolist()))
        if not kept <= orig:
            raise AssertionError(f"{name}: event {e} has pulses that were not in its input")
    if "sensor_tokens" in _properties(spec, obj.config):  # sensors with several pulses each
        few = synthetic_chunk([n * 3 for n in lengths], seed, sensors=6)
        _check_whole_sensors(name, obj, few, obj.select(few, np.random.default_rng(seed)))


def _check_whole_sensors(name: str, obj, chunk: PulseChunk, out: PulseChunk) -> None:
    """A selection of whole sensors: at most ``max_sensors`` sensors per event (when it has that
    param), and every pulse of a kept sensor kept (when the event is under its pulse cap)."""
    cap = getattr(obj.config, "max_sensors", None)
    for e in range(out.num_events):
        kept = out.sensor_id[out.offsets[e]:out.offsets[e + 1]].astype(np.int64)
        orig = chunk.sensor_id[chunk.offsets[e]:chunk.offsets[e + 1]].astype(np.int64)
        sensors = np.unique(kept)
        if cap is not None and len(sensors) > min(cap, len(np.unique(orig))):
            raise AssertionError(f"{name}: event {e} kept {len(sensors)} sensors, max_sensors={cap}")
        if cap is not None and len(sensors) < min(cap, len(np.unique(orig))):
            raise AssertionError(f"{name}: event {e} kept {len(sensors)} sensors of {len(np.unique(orig))} "
                                 f"under max_sensors={cap}")
        if chunk.lengths[e] <= obj.max_pulses and not np.array_equal(
                np.bincount(kept, minlength=chunk.pad_sensor)[sensors],
                np.bincount(orig, minlength=chunk.pad_sensor)[sensors]):
            raise AssertionError(f"{name}: event {e} dropped pulses of a sensor it kept")


def check_features(spec: ComponentSpec, lengths: list[int], seed: int) -> None:
    name = f"features {spec.name}"
    obj, _ = build_component(spec)
    chunk = synthetic_chunk(lengths, seed)
    out = obj.extract(chunk, chunk)
    rows = chunk.num_events if obj.event_level else len(chunk.time)
    if out.shape != (rows, obj.out_dim) or out.dtype != np.float32:
        raise AssertionError(f"{name}: got {out.shape} {out.dtype}, expected ({rows}, {obj.out_dim}) float32")
    if len(obj.feature_names()) != obj.out_dim:
        raise AssertionError(f"{name}: {len(obj.feature_names())} column names for {obj.out_dim} columns")
    if not np.isfinite(out).all():
        raise AssertionError(f"{name}: non-finite features")
    for e in range(chunk.num_events):
        sub = chunk.events([e])
        alone = obj.extract(sub, sub)
        expect = out[e:e + 1] if obj.event_level else out[chunk.offsets[e]:chunk.offsets[e + 1]]
        if not np.allclose(alone, expect, atol=1e-5):
            raise AssertionError(f"{name}: features of event {e} depend on the other events")


#: the property checks for each kind; a kind without one fails the coverage test
CHECKS: dict[str, Callable[[ComponentSpec, list[int], int], None]] = {
    "selection": check_selection,
    "features": check_features,
    "embedder": check_embedder,
    "backbone": check_backbone,
    "pooler": check_pooler,
    "head": check_head,
    "loss": check_loss,
    "task": check_task,
    "pretrain": check_pretrain,
}


def check_component(spec: ComponentSpec, lengths: list[int], seed: int) -> None:
    """Run every property check of the component's kind on events of the given pulse counts."""
    CHECKS[spec.kind](spec, lengths, seed)


# ------------------------------------------------------------------------------------------ pytest
@dataclass
class _Case:
    spec: ComponentSpec

    def __repr__(self) -> str:
        return f"{self.spec.kind}:{self.spec.name}"


_REGISTRY: Registry | None = None


def _kit_registry() -> Registry:
    """Built-ins plus every installed plugin (entry points always load here: they are what is tested)."""
    global _REGISTRY
    if _REGISTRY is None:
        from icezoo.zoo import make_registry

        _REGISTRY = make_registry(autoload=True)
    return _REGISTRY


class ConformanceSuite:
    """Subclass in a test module (named ``Test...``) to test every component of ``package``."""

    #: distribution name whose components are tested; None tests every registered component
    package: str | None = None
    #: largest event drawn (pulses); events of exactly 1 and of this many are always included
    max_pulses: int = MAX_PULSES

    def registry(self) -> Registry:
        return _kit_registry()

    def specs(self) -> list[ComponentSpec]:
        return [s for s in self.registry().list() if self.package is None or s.package == self.package]

    def pytest_generate_tests(self, metafunc):
        if "component" in metafunc.fixturenames:
            learn = metafunc.function.__name__ == "test_task_learns"
            cases = [_Case(s) for s in self.specs() if (s.kind == "task" if learn else s.kind in CHECKS)]
            metafunc.parametrize("component", cases, ids=[repr(c) for c in cases])

    def test_component(self, component: _Case) -> None:
        from hypothesis import given
        from hypothesis import strategies as st

        spec, top = component.spec, self.max_pulses
        check_component(spec, [1, top, 2], seed=0)  # the extremes, always

        @given(lengths=st.lists(st.integers(1, top), min_size=1, max_size=4), seed=st.integers(0, 2**16))
        def properties(lengths, seed):
            check_component(spec, lengths, seed)

        properties()

    def test_task_learns(self, component: _Case) -> None:
        check_task_learns(component.spec)

    def test_every_stage_has_checks(self) -> None:
        from icezoo.core.components import STAGES

        assert [s.kind for s in STAGES if s.kind not in CHECKS] == [], "stages without conformance checks"

    def test_every_component_is_tested(self) -> None:
        registered = {(s.kind, s.name) for s in self.specs()}
        tested = {(s.kind, s.name) for s in self.specs() if s.kind in CHECKS}
        assert registered, f"no component registered for package {self.package!r}"
        assert tested == registered, f"components without conformance checks: {sorted(registered - tested)}"
