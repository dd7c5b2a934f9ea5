"""Property tests of the directional losses: minimal at the truth, gradient toward it, finite everywhere."""

from __future__ import annotations

import math

import pytest
import torch

from icezoo.core import angles_to_vector, angular_error, vector_to_angles
from icezoo.plugins.losses import AngularLoss, CosineLoss, EuclideanLoss, LogCoshLoss, VonMisesFisher3D, log_c3
from icezoo.zoo import registry

DIRECTIONAL = [VonMisesFisher3D, CosineLoss, EuclideanLoss, LogCoshLoss, AngularLoss]
F64 = torch.float64


def make(cls):
    return cls(cls.Config())


def truths(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Unit vectors away from the poles (zenith in [0.4, pi - 0.4]): azimuth is well defined there."""
    gen = torch.Generator().manual_seed(seed)
    az = torch.rand(n, generator=gen, dtype=F64) * 2 * math.pi
    ze = 0.4 + torch.rand(n, generator=gen, dtype=F64) * (math.pi - 0.8)
    return angles_to_vector(az, ze)


def rotate_towards(t: torch.Tensor, theta: float, seed: int = 1) -> torch.Tensor:
    """Unit vectors at angle ``theta`` from ``t`` along a random great circle."""
    gen = torch.Generator().manual_seed(seed)
    o = torch.linalg.cross(t, torch.randn(t.shape, generator=gen, dtype=F64))
    o = o / o.norm(dim=-1, keepdim=True)
    return math.cos(theta) * t + math.sin(theta) * o


def per_event(loss, pred, target):
    return loss.forward(pred, target)


def test_accepts_declared():
    reg = registry()
    assert reg.get("loss", "vmf3d").cls.accepts == {"vector"}
    for name in ("cosine", "euclidean", "logcosh", "angular"):
        assert reg.get("loss", name).cls.accepts == {"vector", "angles"}


@pytest.mark.parametrize("cls", [VonMisesFisher3D, CosineLoss, EuclideanLoss, AngularLoss])
@pytest.mark.parametrize("kappa", [0.5, 1.0, 10.0])
def test_vector_loss_minimal_at_truth_on_great_circles(cls, kappa):
    loss, t = make(cls), truths()
    values = [per_event(loss, kappa * rotate_towards(t, th), t) for th in (0.0, 0.05, 0.3, 1.0, 2.0, 3.0)]
    for a, b in zip(values, values[1:]):
        assert (a < b).all(), f"{cls.name}: loss does not grow with the angle from the truth"


@pytest.mark.parametrize("cls", [VonMisesFisher3D, CosineLoss, EuclideanLoss, LogCoshLoss, AngularLoss])
@pytest.mark.parametrize("kappa", [1.0, 25.0])
def test_vector_gradient_points_to_truth(cls, kappa):
    loss, t = make(cls), truths()
    for theta in (0.05, 0.5, 1.2):
        u = rotate_towards(t, theta, seed=int(theta * 100))
        pred = (kappa * u).requires_grad_(True)
        per_event(loss, pred, t).sum().backward()
        g = pred.grad
        tangent = g - (g * u).sum(-1, keepdim=True) * u
        toward = t - (t * u).sum(-1, keepdim=True) * u
        assert ((-tangent * toward).sum(-1) > 0).all(), f"{cls.name}: descent does not turn toward the truth"


@pytest.mark.parametrize("cls", [CosineLoss, EuclideanLoss, LogCoshLoss, AngularLoss])
def test_angles_prediction_minimal_at_truth_and_gradient(cls):
    loss, t = make(cls), truths()
    az, ze = vector_to_angles(t)
    base = per_event(loss, torch.stack([az, ze], -1), t)
    for daz, dze in ((0.1, 0.0), (0.0, 0.1), (-0.2, 0.15), (0.3, -0.3)):
        pred = torch.stack([az + daz, ze + dze], -1).requires_grad_(True)
        value = per_event(loss, pred, t)
        assert (value > base + 1e-9).all()
        value.sum().backward()
        step = -torch.tensor([daz, dze], dtype=F64)  # the way back to the truth in angle space
        assert ((-pred.grad * step).sum(-1) > 0).all(), f"{cls.name}: gradient does not point to the truth"


@pytest.mark.parametrize("cls", [VonMisesFisher3D, CosineLoss, EuclideanLoss, LogCoshLoss, AngularLoss])
@pytest.mark.parametrize("kappa", [0.0, 1e-12, 1e-6, 1e-2, 1e3, 1e6, 1e8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_for_any_kappa(cls, kappa, dtype):
    loss, t = make(cls), truths()
    for theta in (0.0, 0.7, math.pi):
        pred = (kappa * rotate_towards(t, theta)).to(dtype).requires_grad_(True)
        value = loss(pred, t.to(dtype))
        value.backward()
        assert torch.isfinite(value), f"{cls.name}: loss not finite at kappa={kappa}, theta={theta}"
        assert torch.isfinite(pred.grad).all(), f"{cls.name}: gradient not finite at kappa={kappa}, theta={theta}"


def test_finite_on_the_poles_and_at_exact_truth():
    t = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]], dtype=F64)
    for cls in DIRECTIONAL:
        for pred0 in (t, -t, 3 * t, torch.zeros_like(t)):
            pred = pred0.clone().requires_grad_(True)
            value = make(cls)(pred, t)
            value.backward()
            assert torch.isfinite(value) and torch.isfinite(pred.grad).all(), cls.name


def test_log_c3_matches_closed_form_and_is_smooth():
    k = torch.logspace(-2.5, 1.5, 200, dtype=F64)
    exact = torch.log(k) - math.log(4 * math.pi) - torch.log(torch.sinh(k))
    assert torch.allclose(log_c3(k), exact, atol=1e-12, rtol=0)
    # continuous across the series/asymptote switch at 1e-3
    below, above = log_c3(torch.tensor([1e-3 * (1 - 1e-9)], dtype=F64)), log_c3(torch.tensor([1e-3], dtype=F64))
    assert abs(float(below - above)) < 1e-12
    # tiny and huge kappa: finite, right limits, finite gradients
    k = torch.tensor([0.0, 1e-30, 1e-8, 1e4, 1e8], dtype=F64, requires_grad=True)
    out = log_c3(k)
    out.sum().backward()
    out = out.detach()
    assert torch.isfinite(out).all() and torch.isfinite(k.grad).all()
    assert abs(float(out[0]) + math.log(4 * math.pi)) < 1e-12
    assert abs(float(out[3]) - (math.log(2e4) - 1e4 - math.log(4 * math.pi))) < 1e-9
    assert torch.isfinite(log_c3(torch.tensor([1e6], dtype=torch.float32)))


def test_vmf_minimum_in_kappa_tracks_the_error():
    """At a fixed direction, the vMF NLL prefers a larger kappa when the prediction is closer."""
    loss, t = make(VonMisesFisher3D), truths(4)
    kappas = torch.logspace(-1, 3, 400, dtype=F64)

    def best_kappa(theta):
        u = rotate_towards(t, theta)
        vals = torch.stack([loss.forward(k * u, t) for k in kappas])
        return kappas[vals.argmin(0)]

    assert (best_kappa(0.05) > best_kappa(0.5)).all()


def test_logcosh_wraps_azimuth():
    loss = make(LogCoshLoss)
    t = angles_to_vector(torch.tensor([0.05], dtype=F64), torch.tensor([1.2], dtype=F64))
    across = torch.tensor([[2 * math.pi - 0.05, 1.2]], dtype=F64, requires_grad=True)
    near = torch.tensor([[-0.05, 1.2]], dtype=F64)
    far = torch.tensor([[math.pi, 1.2]], dtype=F64)
    v_across = loss.forward(across, t)
    assert torch.allclose(v_across, loss.forward(near, t))
    assert v_across < 0.01 < loss.forward(far, t)
    v_across.sum().backward()
    assert across.grad[0, 0] < 0  # descent increases the azimuth, through 2 pi, toward 0.05
    # several turns away is the same angle
    assert torch.allclose(loss.forward(torch.tensor([[0.05 + 6 * math.pi, 1.2]], dtype=F64), t),
                          torch.zeros(1, dtype=F64), atol=1e-12)
    # a vector prediction across the branch cut of atan2 gives the same small loss
    pv = angles_to_vector(torch.tensor([2 * math.pi - 0.05], dtype=F64), torch.tensor([1.2], dtype=F64))
    assert torch.allclose(loss.forward(3.0 * pv, t), v_across)


def test_angular_is_the_metric():
    t = truths(32)
    pred = rotate_towards(t, 0.0) + 0.3 * torch.randn(32, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    loss = make(AngularLoss)
    assert torch.allclose(loss.forward(5 * pred, t), angular_error(pred, t), atol=1e-6)
    az, ze = vector_to_angles(pred)
    assert torch.allclose(loss.forward(torch.stack([az, ze], -1), t), angular_error(pred, t), atol=1e-6)


def test_euclidean_is_chord_length():
    t = truths(8)
    for theta in (0.1, 1.0, 2.5):
        value = make(EuclideanLoss).forward(7.0 * rotate_towards(t, theta), t)
        assert torch.allclose(value, torch.full_like(value, 2 * math.sin(theta / 2)))


def test_weighted_mean_and_fp32():
    t = truths(4)
    pred = rotate_towards(t, 0.4) * 2
    loss = make(CosineLoss)
    w = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64)
    assert torch.allclose(loss(pred, t, w), loss.forward(pred, t)[0])
    assert loss(pred.half(), t.half()).dtype == torch.float32
