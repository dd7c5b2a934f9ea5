"""``icezoo calibrate``: the kappa map recovered on synthetic vMF draws with a known miscalibration,
held-out coverage at nominal, predict's cone-radius columns, and a run without (or with a broken)
calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinyzoo import cli, tiny_pipeline

from icezoo.engine import calibrate as CF, vmf as C


def _vmf_errors(kappa: np.ndarray, rng) -> np.ndarray:
    """Angular errors of vMF draws on the sphere (inverse CDF of cos(angle) for concentration kappa)."""
    u = rng.uniform(size=len(kappa))
    c = 1.0 + np.log(u + (1.0 - u) * np.exp(-2.0 * kappa)) / kappa
    return np.arccos(np.clip(c, -1.0, 1.0))


def _miscalibrated(n: int = 6000, seed: int = 0):
    """Predicted kappas spread over three decades; the errors follow a true kappa three times larger."""
    rng = np.random.default_rng(seed)
    predicted = 10 ** rng.uniform(-0.5, 2.5, n)
    return predicted, _vmf_errors(3.0 * predicted, rng)


def test_the_fit_recovers_a_known_miscalibration():
    predicted, err = _miscalibrated()
    cal = CF.fit(predicted, err)
    assert cal["a"] == pytest.approx(3.0, rel=0.1)
    assert cal["b"] == pytest.approx(1.0, abs=0.03)
    full = CF.fit_and_check(predicted, err)  # the data are vMF: the level map is close to the identity
    np.testing.assert_allclose(full["levels"]["vmf"], full["levels"]["nominal"], atol=0.04)


def test_held_out_coverage_is_nominal_after_calibration():
    predicted, err = _miscalibrated()
    cal = CF.fit_and_check(predicted, err, seed=1)
    assert cal["fit_events"] + cal["check_events"] == len(err)
    for q in C.LEVELS:
        before, after = cal["coverage_before"][f"{q:g}"], cal["coverage_after"][f"{q:g}"]
        assert before > q + 0.05  # too-small kappa: cones too wide, over-covering
        assert abs(after - q) <= 0.03
        assert abs(cal["coverage_kappa_only"][f"{q:g}"] - q) <= 0.03
    assert cal["nll_after"] < cal["nll_before"]
    json.dumps(cal)  # stored as JSON: plain numbers only


def test_cone_probability_inverts_the_cone():
    k = np.array([0.0, 0.5, 3.0, 100.0, 5000.0])
    for q in (0.1, 0.5, 0.68, 0.9):
        np.testing.assert_allclose(C.cone_probability(k, C.vmf_cone(k, q)), q, rtol=1e-6)
    assert C.vmf_cone(np.array([0.0]), 0.5)[0] == pytest.approx(np.pi / 2)  # isotropic: half the sphere


def test_a_broken_calibration_is_refused_by_name(tmp_path):
    from icezoo.core.errors import IcezooError
    from icezoo.engine.runs import RunDir

    run = RunDir(tmp_path)
    run.calibration_file.write_text('{"form": "power", "a": -1, "b": 1}')
    with pytest.raises(IcezooError, match=r"calibration.json: unreadable \(a is -1"):
        run.calibration()
    run.calibration_file.write_text('{"form": "power", "a": 1, "b": 1, "levels": {"nominal": [0, 1], "vmf": [1, 0]}}')
    with pytest.raises(IcezooError, match="calibration.json: unreadable \\(levels"):
        run.calibration()
    run.calibration_file.write_text("{")
    with pytest.raises(IcezooError, match="calibration.json: unreadable"):
        run.calibration()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("calibrate")
    data = simulate(root / "data", 400, events_per_batch=100, seed=5, test=True, test_events=60)
    pf = root / "tiny.toml"
    pf.write_text(tiny_pipeline(epochs=1))
    runs = root / "runs"
    cli("train", "--pipeline-file", pf, "--pipeline", "tiny", "--data", data, "--runs-dir", runs,
        "--name", "A", "--seed", "0", "--no-progress")
    return {"data": data, "runs": runs, "root": root}


def _predict(world, out, *extra, expect=0):
    cli("predict", "A", "--data", world["data"], "--runs-dir", world["runs"], "--out", out, *extra, expect=expect)


def test_calibrate_then_predict_writes_the_radii(world, capsys):
    import polars as pl

    from icezoo.engine.runs import RunDir

    run = RunDir(world["runs"] / "A")
    plain = world["root"] / "plain.csv"
    _predict(world, plain)  # before any calibration
    raw = world["root"] / "raw.csv"
    _predict(world, raw, "--uncertainty")
    assert "has no calibration" in capsys.readouterr().err

    cli("calibrate", "A", "--runs-dir", world["runs"])
    printed = capsys.readouterr().out
    assert "held-out vMF cone coverage" in printed and "0.68:" in printed
    cal = run.calibration()
    assert cal["a"] > 0 and cal["b"] > 0 and set(cal["coverage_after"]) == {"0.5", "0.68", "0.9"}

    again = world["root"] / "again.csv"
    _predict(world, again)  # a calibration does not change a direction-only submission
    assert again.read_bytes() == plain.read_bytes()

    unc = world["root"] / "unc.csv"
    _predict(world, unc, "--uncertainty")
    df, before = pl.read_csv(unc), pl.read_csv(raw)
    assert df.columns == ["event_id", "azimuth", "zenith", "cone_radius_50", "cone_radius_90"]
    assert df.select("event_id", "azimuth", "zenith").equals(pl.read_csv(plain))
    r50, r90 = df["cone_radius_50"].to_numpy(), df["cone_radius_90"].to_numpy()
    assert ((r50 > 0) & (r50 < r90) & (r90 <= np.pi)).all()
    # the radii are the calibrated kappa's cones: recompute them from the raw ones
    k_raw = _kappa_of(before["cone_radius_50"].to_numpy())
    np.testing.assert_allclose(r50, C.cone_radius(cal, k_raw, 0.5), rtol=1e-4, atol=1e-7)

    cli("evaluate", "A", "--runs-dir", world["runs"])
    assert (run.plots / "kappa_calibration.png").is_file()


def _kappa_of(r50: np.ndarray) -> np.ndarray:
    """kappa whose 50% cone is ``r50`` (bisection on log kappa; the cone shrinks as kappa grows)."""
    lo, hi = np.full(len(r50), -9.0), np.full(len(r50), 9.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        wide = C.vmf_cone(10 ** mid, 0.5) > r50
        lo, hi = np.where(wide, mid, lo), np.where(wide, hi, mid)
    return 10 ** (0.5 * (lo + hi))


def test_a_corrupt_calibration_is_one_line_exit_2(world, capsys):
    path = world["runs"] / "A" / "calibration.json"
    keep = path.read_text() if path.is_file() else None
    try:
        path.write_text('{"form": "power", "a": "x", "b": 1}')
        out = world["root"] / "bad.csv"
        _predict(world, out, "--uncertainty", expect=2)
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "calibration.json: unreadable (a is 'x'" in err
        assert not out.exists()
    finally:
        if keep is None:
            path.unlink()
        else:
            path.write_text(keep)


def test_uncertainty_is_refused_for_an_ensemble(world, capsys):
    cli("predict", "A", "A", "--data", world["data"], "--runs-dir", world["runs"], "--out",
        world["root"] / "e.csv", "--uncertainty", expect=2)
    assert "--uncertainty needs one run" in capsys.readouterr().err
