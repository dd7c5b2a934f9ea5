"""The task figures (energy, classification, vertex, regression), their intervals, plots and the
ensemble rules for task columns, on synthetic arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from icezoo.core.errors import IcezooError
from icezoo.engine import task_metrics as M
from icezoo.engine.ensemble import combine_gaussian, combine_probabilities, combine_task_columns

N_BOOT = 300  # fewer resamples than the default: the intervals' coverage is not what these tests check


# ------------------------------------------------------------------------------ classification
def test_auc_of_separable_scores_is_one_and_of_reversed_zero():
    y = np.r_[np.zeros(50), np.ones(50)]
    s = np.r_[np.linspace(0, 0.4, 50), np.linspace(0.6, 1, 50)]
    assert M.roc_auc(s, y) == 1.0
    assert M.roc_auc(-s, y) == 0.0


def test_auc_counts_ties_half_and_matches_the_pairwise_definition():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 5, 200).astype(float)  # many ties
    y = rng.random(200) < 0.4
    pos, neg = s[y], s[~y]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert M.roc_auc(s, y) == pytest.approx(pairwise, abs=1e-12)
    assert M.roc_auc(np.ones(10), np.r_[np.zeros(5), np.ones(5)]) == 0.5


def test_auc_of_one_class_is_nan():
    assert np.isnan(M.roc_auc(np.arange(5.0), np.ones(5)))


def test_random_scores_give_auc_near_half_with_an_interval_covering_it():
    rng = np.random.default_rng(0)
    p, y = rng.random(2000), rng.random(2000) < 0.3
    out = M.binary_metrics(p, y, ("cascade", "track"), n_boot=N_BOOT)
    assert abs(out["auc"] - 0.5) < 0.04
    lo, hi = out["auc_ci95"]
    assert lo < 0.5 < hi and hi - lo < 0.08
    assert sum(map(sum, out["confusion"])) == 2000 and out["positives"] == int(y.sum())


def test_binary_accuracy_and_confusion_at_half():
    p = np.array([0.1, 0.6, 0.4, 0.9, 0.5])
    y = np.array([0, 0, 1, 1, 1])
    out = M.binary_metrics(p, y, n_boot=N_BOOT)
    assert out["confusion"] == [[1, 1], [1, 2]]  # rows true 0/1, columns predicted 0/1 (0.5 -> 1)
    assert out["accuracy"] == pytest.approx(3 / 5)


def test_roc_curve_runs_from_origin_to_one_and_its_area_is_the_auc():
    rng = np.random.default_rng(1)
    y = rng.random(500) < 0.5
    s = y + rng.normal(0, 1, 500)
    fpr, tpr = M.roc_curve(s, y)
    assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(M.roc_auc(s, y), abs=1e-9)


def test_multiclass_per_class_auc_accuracy_and_confusion():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 600)
    logits = rng.normal(0, 1, (600, 3))
    logits[np.arange(600), y] += 3.0  # informative
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    classes = ["through_going_track", "starting_track", "cascade"]
    out = M.multiclass_metrics(prob, y, classes, n_boot=N_BOOT)
    assert set(out["per_class"]) == set(classes)
    assert all(v["auc"] > 0.9 for v in out["per_class"].values())
    m = np.array(out["confusion"])
    assert m.sum() == 600 and np.trace(m) / 600 == pytest.approx(out["accuracy"])
    assert out["accuracy"] == pytest.approx(np.mean(prob.argmax(1) == y))
    with pytest.raises(IcezooError, match="3 classes"):
        M.multiclass_metrics(prob[:, :2], y, classes)


# ------------------------------------------------------------------------------ regression, energy
def test_resolution_of_gaussian_residuals_is_sigma_and_bias_is_the_shift():
    rng = np.random.default_rng(4)
    true = rng.uniform(2, 6, 20000)
    pred = true + 0.1 + rng.normal(0, 0.25, 20000)
    out = M.regression_metrics(pred, true, n_boot=N_BOOT)
    assert out["resolution"] == pytest.approx(0.25, rel=0.03)
    assert out["bias"] == pytest.approx(0.1, abs=0.01)
    lo, hi = out["resolution_ci95"]
    assert lo < 0.25 < hi
    assert out["interval68"][0] == pytest.approx(0.1 - 0.25, abs=0.015)


def test_resolution_ignores_a_few_wild_events_that_ruin_the_standard_deviation():
    rng = np.random.default_rng(5)
    r = rng.normal(0, 0.2, 5000)
    r[:50] = 100.0
    assert M.half_width68(r) == pytest.approx(0.2, rel=0.08)
    assert r.std() > 5


def test_energy_bands_and_sigma_coverage():
    rng = np.random.default_rng(6)
    log_true = rng.uniform(2.0, 5.0, 6000)
    sigma = np.where(log_true < 3.5, 0.4, 0.1)  # the resolution improves with energy
    log_pred = log_true + rng.normal(0, 1, 6000) * sigma
    out = M.energy_metrics(log_pred, log_true, sigma, n_boot=N_BOOT)
    bands = out["bands"]
    assert [(b["log10_e_min"], b["log10_e_max"]) for b in bands] == [(2, 3), (3, 4), (4, 5)]
    assert bands[0]["resolution"] == pytest.approx(0.4, rel=0.08)
    assert bands[2]["resolution"] == pytest.approx(0.1, rel=0.08)
    assert sum(b["n_events"] for b in bands) == 6000
    assert out["sigma_coverage"] == pytest.approx(0.683, abs=0.03)  # the sigma is right
    wrong = M.energy_metrics(log_pred, log_true, sigma / 2, n_boot=N_BOOT)
    assert wrong["sigma_coverage"] < 0.45  # a sigma half too small covers ~38%


def test_energy_skips_non_finite_events_and_merges_thin_bands():
    log_true = np.r_[np.full(5, 1.5), np.linspace(2, 3.99, 200)]
    log_pred = log_true.copy()
    log_pred[7] = np.nan
    out = M.energy_metrics(log_pred, log_true, n_boot=N_BOOT)
    assert out["n_events"] == 204
    assert out["bands"][0]["log10_e_min"] == 1.0 and len(out["bands"]) == 2  # 5 events of [1, 2) merged


def test_regression_refuses_mismatched_shapes():
    with pytest.raises(IcezooError, match="predictions"):
        M.regression_metrics(np.zeros(3), np.zeros(4))


# ------------------------------------------------------------------------------ vertex
def test_vertex_distance_and_per_axis_resolution():
    rng = np.random.default_rng(7)
    true = rng.uniform(-500, 500, (8000, 3))
    sig = np.array([10.0, 20.0, 5.0])
    pred = true + rng.normal(0, 1, (8000, 3)) * sig
    out = M.vertex_metrics(pred, true, n_boot=N_BOOT)
    for axis, s in zip("xyz", sig):
        assert out["axes"][axis]["resolution"] == pytest.approx(s, rel=0.05)
    d = np.linalg.norm(pred - true, axis=1)
    assert out["median_distance"] == pytest.approx(np.median(d))
    lo, hi = out["median_distance_ci95"]
    assert lo < out["median_distance"] < hi
    iso = M.vertex_metrics(true + rng.normal(0, 7.0, true.shape), true, np.full(8000, 7.0), n_boot=N_BOOT)
    assert iso["sigma_coverage"] == pytest.approx(0.683, abs=0.02)
    with pytest.raises(IcezooError, match=r"\[N, 3\]"):
        M.vertex_metrics(pred[:, :2], true[:, :2])


def test_bootstrap_stat_is_reproducible_and_drops_undefined_resamples():
    x = np.random.default_rng(8).normal(size=300)
    a = M.bootstrap_stat(np.median, (x,), n_boot=200, seed=1)
    assert a == M.bootstrap_stat(np.median, (x,), n_boot=200, seed=1)
    assert M.bootstrap_stat(np.median, (x[:1],)) == [None, None]


def test_headline_and_ledger_text():
    label, value, ci = M.headline("classification", {"auc": 0.91, "auc_ci95": [0.9, 0.92]})
    assert (label, value, ci) == ("AUC", 0.91, [0.9, 0.92])
    text = M.scores_text({"energy": {"label": "log10 E res", "score": 0.2134, "score_ci95": [0.2, 0.23]},
                          "type": {"label": "AUC", "score": None}})
    assert text == "energy: log10 E res 0.2134 [0.2, 0.23]"


# ------------------------------------------------------------------------------ plots
def test_task_plots_are_written(tmp_path):
    from icezoo.engine import task_plots as P

    rng = np.random.default_rng(9)
    written: list[str] = []
    save = P.saver(tmp_path, written)
    t = rng.uniform(2, 5, 500)
    p = t + rng.normal(0, 0.3, 500)
    P.energy_plot(save, "energy", t, p, M.energy_metrics(p, t, n_boot=50), "tiny")
    y = rng.random(500) < 0.5
    s = y + rng.normal(0, 1, 500)
    P.roc_plot(save, "event_type", {"track": (s, y)}, M.binary_metrics(1 / (1 + np.exp(-s)), y, n_boot=50), "tiny")
    v = rng.normal(0, 100, (500, 3))
    P.vertex_plot(save, "vertex", v, v + rng.normal(0, 5, v.shape), M.vertex_metrics(v + 1, v, n_boot=50), "tiny")
    P.regression_plot(save, "inelasticity", "inelasticity", t, p, "tiny")
    assert written == ["energy_energy.png", "event_type_roc.png", "vertex_vertex.png", "inelasticity_regression.png"]
    for name in written:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert not [f for f in tmp_path.iterdir() if f.name not in written]  # no temporary left


# ------------------------------------------------------------------------------ ensembles
def test_inverse_variance_mean_and_member_scale_sigma():
    v, s = combine_gaussian([np.array([2.0, 3.0]), np.array([4.0, 3.0])], [np.array([1.0, 0.5]), np.array([1.0, 0.5])])
    assert v == pytest.approx([3.0, 3.0])
    # equal sigmas, agreeing members: one member's sigma; disagreeing: widened by their spread (variance 1)
    assert s == pytest.approx([np.sqrt(1.0 + 1.0), 0.5])
    v, _ = combine_gaussian([np.array([0.0]), np.array([3.0])], [np.array([1.0]), np.array([2.0])])
    assert v == pytest.approx([(0 / 1 + 3 / 4) / (1 + 1 / 4)])  # weights 1 / sigma^2
    v, s = combine_gaussian([np.array([1.0]), np.array([2.0])], [np.array([np.nan]), np.array([1.0])])
    assert v == pytest.approx([1.5]) and np.isnan(s[0])  # a member without sigma: plain mean


def test_inverse_variance_beats_the_plain_mean_on_members_of_different_quality():
    rng = np.random.default_rng(10)
    truth = rng.uniform(2, 5, 20000)
    s1, s2 = rng.uniform(0.05, 0.6, 20000), rng.uniform(0.05, 0.6, 20000)
    m1, m2 = truth + rng.normal(0, 1, 20000) * s1, truth + rng.normal(0, 1, 20000) * s2
    v, _ = combine_gaussian([m1, m2], [s1, s2])
    assert np.std(v - truth) < 0.9 * np.std(0.5 * (m1 + m2) - truth)


def test_combine_task_columns_by_kind():
    a = {"energy": np.array([2.0]), "energy_sigma": np.array([1.0]), "p_track": np.array([0.2]),
         "vertex_x": np.array([0.0]), "vertex_y": np.array([0.0]), "vertex_z": np.array([0.0]),
         "vertex_sigma": np.array([1.0]), "inelasticity": np.array([0.2])}
    b = {"energy": np.array([4.0]), "energy_sigma": np.array([1.0]), "p_track": np.array([0.6]),
         "vertex_x": np.array([3.0]), "vertex_y": np.array([6.0]), "vertex_z": np.array([0.0]),
         "vertex_sigma": np.array([2.0]), "inelasticity": np.array([0.4])}
    out = combine_task_columns([a, b])
    assert list(out) == list(a)  # the members' column order
    assert out["energy"] == pytest.approx([3.0]) and out["p_track"] == pytest.approx([0.4])
    assert out["vertex_x"] == pytest.approx([0.6]) and out["vertex_y"] == pytest.approx([1.2])  # weights 1 : 1/4
    assert np.isfinite(out["vertex_sigma"]).all() and out["inelasticity"] == pytest.approx([0.3])
    assert combine_probabilities([np.array([[0.2, 0.8]]), np.array([[0.6, 0.4]])]) == pytest.approx(np.array([[0.4, 0.6]]))
    with pytest.raises(IcezooError, match="tasks differ"):
        combine_task_columns([a, {"energy": np.array([1.0])}])


def test_ensemble_of_combines_task_columns_of_the_members_that_have_them():
    from icezoo.engine.ensemble import ensemble_of

    d = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    a = {"event_id": np.array([1, 2]), "direction": d, "kappa": np.array([1.0, 1.0]),
         "tasks": {"energy": np.array([2.0, 3.0]), "energy_sigma": np.array([0.5, 0.5]), "p_track": np.array([0.1, 0.9])}}
    b = {"event_id": np.array([2, 3]), "direction": d, "kappa": np.array([1.0, 1.0]),
         "tasks": {"energy": np.array([5.0, 4.0]), "energy_sigma": np.array([0.5, 0.5]), "p_track": np.array([0.3, 0.5])}}
    c = {"event_id": np.array([2]), "direction": d[:1], "kappa": np.array([1.0])}  # direction only
    out = ensemble_of([a, b, c])
    assert out["event_id"].tolist() == [2]
    assert out["tasks"]["energy"] == pytest.approx([4.0]) and out["tasks"]["p_track"] == pytest.approx([0.6])
    assert "tasks" not in ensemble_of([c, c])
