"""The conformance kit's checks of tasks (kind ``task``): run by :mod:`icezoo.testing` for every
registered task, the built-ins' and a plugin's alike.

``check_task``: the raw output [B, K] is finite and per event; the named outputs are the ones
``output_names()`` says, each [B], finite and in range (``p_*`` probabilities in [0, 1] summing to at
most 1, ``*_sigma`` positive); the loss is finite with finite gradients and its per-event terms do not
depend on the other events. ``check_task_learns``: the loss falls while the head trains on a truth it
can learn (``Task.example_truth`` of a function of its input).
"""

from __future__ import annotations

import numpy as np
import torch

from icezoo.core.registry import ComponentSpec

#: the pooled width the checks feed a task (the kit's MODEL_DIM) and the tolerance of per-event checks
IN_DIM = 16
ATOL = 1e-6


def _build(spec: ComponentSpec):
    """The task from its ``example_params`` (or defaults), float64 and in eval mode."""
    return spec.cls.build(spec.cls.Config.model_validate(spec.cls.example_params), IN_DIM).double().eval()


def _finite(t: torch.Tensor, what: str, name: str) -> None:
    if not torch.isfinite(t).all():
        raise AssertionError(f"{name}: {what} is not finite")


def _close(a: torch.Tensor, b: torch.Tensor, what: str, name: str) -> None:
    if a.shape != b.shape or not torch.allclose(a, b, atol=ATOL, rtol=1e-6):
        raise AssertionError(f"{name}: {what}")


def _task_columns_in_range(cols: dict[str, torch.Tensor], b: int, name: str, names: tuple[str, ...]) -> None:
    """The columns output_names() says, each [B] and finite; p_* in [0, 1] summing to at most 1; *_sigma > 0."""
    if tuple(cols) != names:
        raise AssertionError(f"{name}: outputs {tuple(cols)} differ from output_names() {names}")
    for column, values in cols.items():
        if values.shape != (b,):
            raise AssertionError(f"{name}: output {column} of shape {tuple(values.shape)}, expected ({b},)")
        _finite(values, f"output {column}", name)
        if column.startswith("p_") and not bool(((values >= 0) & (values <= 1)).all()):
            raise AssertionError(f"{name}: probability {column} outside [0, 1]")
        if column.endswith("_sigma") and not bool((values > 0).all()):
            raise AssertionError(f"{name}: uncertainty {column} not positive")
    probs = [v for c, v in cols.items() if c.startswith("p_")]
    if probs and not bool((torch.stack(probs).sum(0) <= 1 + 1e-9).all()):
        raise AssertionError(f"{name}: the class probabilities sum to more than 1")


def check_task(spec: ComponentSpec, lengths: list[int], seed: int) -> None:
    """A task: [B, out_dim] finite and per event, its named outputs in range, its loss finite with finite
    gradients and its per-event terms independent (that it learns: :func:`check_task_learns`)."""
    name, b = f"task {spec.name}", len(lengths)
    obj = _build(spec)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(b, IN_DIM, generator=gen, dtype=torch.float64, requires_grad=True)
    out = obj(z)
    if out.shape != (b, obj.out_dim):
        raise AssertionError(f"{name}: output of shape {tuple(out.shape)}, expected ({b}, {obj.out_dim})")
    _finite(out, "output", name)
    truth = obj.example_truth(torch.tanh(z[:, 0]).detach())
    with torch.no_grad():
        cols, terms = obj.outputs(out), obj.loss_terms(out, truth)
        for e in range(b):
            _close(obj(z[e:e + 1])[0], out[e], f"event {e} depends on the other events", name)
            _close(obj.loss_terms(out[e:e + 1], {k: v[e:e + 1] for k, v in truth.items()})[0], terms[e],
                   f"per-event loss term {e} depends on the other events", name)
    _task_columns_in_range(cols, b, name, obj.output_names())
    (value := obj.loss(out, truth)).backward()
    _finite(value, "loss", name)
    _finite(z.grad, "input gradient", name)


def check_task_learns(spec: ComponentSpec, seed: int = 0, steps: int = 80) -> None:
    """The loss falls while the head trains on ``example_truth(tanh(pooled[:, 0]))`` (Adam, 64 events)."""
    obj = _build(spec)
    obj.train()
    z = torch.randn(64, IN_DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    truth, opt, losses = obj.example_truth(torch.tanh(z[:, 0])), torch.optim.Adam(obj.parameters(), lr=5e-3), []
    for _ in range(steps):
        opt.zero_grad()
        value = obj.loss(obj(z), truth)
        _finite(value, "training loss", f"task {spec.name}")
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
    late = float(np.median(losses[-10:]))  # an NLL may spike while its width shrinks: the median of the end
    if not late < losses[0] - 0.1:
        raise AssertionError(f"task {spec.name}: the loss did not fall while learning a function of its input "
                             f"({losses[0]:.4g} -> median {late:.4g} over the last 10 of {steps} steps)")
