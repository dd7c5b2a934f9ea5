"""The direction_bins head, its bins_ce loss and the bins + vMF combination (3rd place)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from icezoo.core import IcezooError, angular_error
from icezoo.core.pipelines import pipeline_config, pipeline_from_table
from icezoo.engine.ensemble import combine
from icezoo.nn.bins import BinLayout, expected_vector, kappa_from_resultant, peaked_logits, smoothed_targets
from icezoo.plugins.heads import DirectionBins
from icezoo.plugins.losses import BinsCrossEntropy
from icezoo.testing import tiny_pipeline
from icezoo.zoo import build, registry


def _unit(n: int, seed: int = 0) -> torch.Tensor:
    v = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("zenith", ["angle", "cos"])
def test_smoothed_targets_peak_at_the_true_bin_and_wrap_the_azimuth(zenith):
    layout = BinLayout(16, 8, zenith)
    d = _unit(32)
    ta, tz = smoothed_targets(layout, d, 1.0)
    assert torch.allclose(ta.sum(-1), torch.ones(32, dtype=torch.float64))
    assert torch.allclose(tz.sum(-1), torch.ones(32, dtype=torch.float64))
    u_az, u_ze = layout.positions(d)
    assert torch.equal(ta.argmax(-1), u_az.long().clamp(max=15))
    assert torch.equal(tz.argmax(-1), u_ze.long().clamp(max=7))
    # azimuth just above 0, on the edge of bins 15 and 0: the two get the same weight (circular)
    edge = torch.tensor([[math.cos(1e-4), math.sin(1e-4), 0.0]], dtype=torch.float64)
    ta, _ = smoothed_targets(layout, edge, 1.0)
    assert ta[0, 15] == pytest.approx(ta[0, 0].item(), rel=1e-2) and ta[0, 15] > ta[0, 7]
    one_hot, _ = smoothed_targets(layout, d, 0.0)
    assert torch.equal(one_hot.max(-1).values, torch.ones(32, dtype=torch.float64))


@pytest.mark.parametrize("zenith", ["angle", "cos"])
@pytest.mark.parametrize("decode", ["expectation", "mode"])
def test_decoding_recovers_the_direction_and_kappa_grows_with_sharpness(zenith, decode):
    head = DirectionBins(DirectionBins.Config(azimuth_bins=128, zenith_bins=128, zenith=zenith, decode=decode), 4)
    d = _unit(64, 1)
    sharp, broad = peaked_logits(head.layout, d, 0.5), peaked_logits(head.layout, d, 0.01)
    err = angular_error(head.direction(sharp).numpy(), d.numpy())
    # an angle bin is 0.025 rad of zenith; equal-cos bins are widest at the poles (arccos(1 - 2/128) = 0.18 rad)
    assert err.max() < (0.05 if zenith == "angle" else 0.1)
    assert (head.kappa(sharp) > head.kappa(broad)).all()
    flat = torch.zeros(3, head.layout.size, dtype=torch.float64)
    assert (head.kappa(flat) < 1e-2).all()  # a uniform sky has no concentration
    assert torch.allclose(head.direction(sharp).norm(dim=-1), torch.ones(64, dtype=torch.float64))


def test_kappa_matches_the_vmf_mean_resultant_length():
    kappa = torch.tensor([2.0, 10.0, 100.0], dtype=torch.float64)
    r = 1 / torch.tanh(kappa) - 1 / kappa  # A3(kappa), the vMF mean resultant length in 3D
    assert torch.allclose(kappa_from_resultant(r), kappa, rtol=0.06)


def test_regression_combination_is_the_kappa_weighted_ensemble_rule():
    torch.manual_seed(0)
    head = DirectionBins(DirectionBins.Config(azimuth_bins=32, zenith_bins=16, regression=True), 8).double()
    pred = head(torch.randn(10, 8, dtype=torch.float64))
    assert pred.shape == (10, 3 + 48) and head.outputs == {"bins", "vector"}
    bins_only = DirectionBins(DirectionBins.Config(azimuth_bins=32, zenith_bins=16), 8)
    logits = head.view(pred, "bins")
    v_b, k_b = bins_only.direction(logits), bins_only.kappa(logits)
    reg = head.view(pred, "vector")
    want_d, want_k = combine([reg.detach().numpy(), v_b.detach().numpy()],
                             [reg.norm(dim=-1).detach().numpy(), k_b.detach().numpy()])
    assert np.allclose(head.direction(pred).detach().numpy(), want_d, atol=1e-9)
    assert np.allclose(head.kappa(pred).detach().numpy(), want_k, atol=1e-9)


def test_bins_ce_is_cross_entropy_and_lowest_at_the_truth():
    loss = BinsCrossEntropy(BinsCrossEntropy.Config(width=0.0))
    d = _unit(16, 2)
    logits = torch.randn(16, loss.layout.size, dtype=torch.float64)
    u_az, u_ze = loss.layout.positions(d)
    la, lz = loss.layout.split(logits)
    ce = torch.nn.functional.cross_entropy
    want = ce(la, u_az.long().clamp(max=127)) + ce(lz, u_ze.long().clamp(max=127))
    assert loss(logits, d).item() == pytest.approx(want.item(), rel=1e-9)
    smooth = BinsCrossEntropy(BinsCrossEntropy.Config(width=2.0))
    at, away = peaked_logits(smooth.layout, d, 0.05), peaked_logits(smooth.layout, _unit(16, 3), 0.05)
    assert smooth(at, d) < smooth(away, d)


def _third_place(**head):
    table = pipeline_config("THIRD_PLACE_SMALL", reg=registry()).to_table()
    table["head"].update(head)
    return tiny_pipeline(pipeline_from_table("THIRD_PLACE_SMALL", table), registry())


def test_pipeline_gives_each_loss_its_own_view_of_the_head():
    model = build(_third_place(azimuth_bins=16, zenith_bins=8))
    assert model.loss_views == ["bins", "vector"]
    assert model.losses[0].layout == BinLayout(16, 8, "angle")  # bound to the head's layout
    table = pipeline_config("THIRD_PLACE_SMALL", reg=registry()).to_table()
    table["head"] = {"name": "direction_kappa"}
    with pytest.raises(IcezooError, match="bins_ce takes a head output of bins, but head 'direction_kappa' gives vector"):
        build(pipeline_from_table("bad", table))


@pytest.mark.parametrize("name", ["THIRD_PLACE_SMALL", "ISEECUBE_SMALL"])
def test_a_tiny_training_step_lowers_the_loss(name):
    from icezoo.core.synthetic import synthetic_batch

    torch.manual_seed(0)
    model = build(tiny_pipeline(pipeline_config(name, reg=registry()), registry()))
    batch = synthetic_batch(model.feature_dim, [5, 12, 3, 9, 20, 7, 16, 2], seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = model.loss(model(batch), batch)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with torch.no_grad():
        pred = model(batch)
    assert torch.allclose(model.direction(pred).norm(dim=-1), torch.ones(8))
    assert (model.kappa(pred) >= 0).all()
