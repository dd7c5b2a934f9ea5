"""``icezoo stack``: the stacker's fit on one half and its paired score on the other, the saved file,
and ``icezoo predict --stacker`` (two tiny runs; LightGBM only where installed)."""

from __future__ import annotations

import json

import sys

import numpy as np
import pytest

from tinyzoo import cli, tiny_pipeline

from icezoo.core.errors import IcezooError
from icezoo.engine import stack, stacker as S
from icezoo.engine.ensemble import combine


def _members(n: int = 600, seed: int = 0):
    """Two members: A close to the truth with an uninformative kappa, B noisy with a large kappa, so the
    kappa-weighted mean trusts the wrong one and a fitted weighting should not."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, 3))
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    a = t + 0.05 * rng.normal(size=(n, 3))
    b = t + 0.6 * rng.normal(size=(n, 3))
    m = S.align([{"event_id": np.arange(n), "direction": a, "kappa": np.full(n, 1.0), "n_pulses": np.full(n, 30)},
                 {"event_id": np.arange(n), "direction": b, "kappa": np.full(n, 20.0), "n_pulses": np.full(n, 30)}])
    return m, t


@pytest.mark.parametrize("method", ["linear", "mlp"])
def test_a_fitted_stacker_beats_a_misled_weighted_mean_on_held_out_events(method):
    from icezoo.core.batch import angular_error

    m, t = _members()
    fit_rows, test_rows = stack.split_halves(len(t), 0)
    assert not set(fit_rows) & set(test_rows) and len(fit_rows) + len(test_rows) == len(t)
    stacker = S.fit(method, S.subset(m, fit_rows), t[fit_rows])
    if method == "linear":
        w = stacker["state"]["w"]
        assert w[0] > 3 * abs(w[1])  # the precise member gets the weight
    rep = stack.score(stacker, m, t, fit_rows, test_rows, ["A", "B"])
    rows = rep["rows"]
    assert rep["best_member"] == "A"
    assert rows["kappa-weighted mean"]["ci95"][1] < 0  # stacker - weighted mean: resolved, negative
    te = S.subset(m, test_rows)
    d, _ = S.predict_stacked(stacker, te)
    assert rows["stacker"]["mean"] == pytest.approx(angular_error(d, t[test_rows]).mean())
    wm, _ = combine(list(te["direction"]), list(te["kappa"]))
    assert rows["kappa-weighted mean"]["mean"] == pytest.approx(angular_error(wm, t[test_rows]).mean())


def test_features_and_the_mlp_start_at_the_weighted_mean():
    m, t = _members(40)
    x = S.features(m)
    assert x.shape == (40, 4 * 2 + 1) and np.isfinite(x).all()
    stacker = S.fit("mlp", m, t, steps=2)
    stacker["state"] = {k: (np.zeros_like(v).tolist() if k.startswith("4.") else v)
                        for k, v in stacker["state"].items()}  # last layer back to zero
    d, _ = S.predict_stacked(stacker, m)
    wm, _ = combine(list(m["direction"]), list(m["kappa"]))
    np.testing.assert_allclose(d, wm, atol=1e-12)


def test_a_bad_stacker_file_is_one_line(tmp_path):
    f = tmp_path / "s.json"
    for text, msg in (("{", "invalid JSON"), ('{"format": "x"}', "field 'format'"),
                      ('{"format": "icezoo-stacker", "method": "mlp", "members": [], "n_features": 9}',
                       "field 'state'"),
                      ('{"format": "icezoo-stacker", "method": "tree", "members": [], "n_features": 9}',
                       "field 'method'")):
        f.write_text(text)
        with pytest.raises(IcezooError, match=msg):
            S.load(f)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("stack")
    data = simulate(root / "data", 400, events_per_batch=100, seed=5, test=True, test_events=60)
    pf = root / "tiny.toml"
    pf.write_text(tiny_pipeline(epochs=1))
    runs = root / "runs"
    for name, seed in (("A", 0), ("B", 1)):
        cli("train", "--pipeline-file", pf, "--pipeline", "tiny", "--data", data, "--runs-dir", runs,
            "--name", name, "--seed", seed, "--no-progress")
    return {"data": data, "runs": runs, "root": root}


def test_stack_mlp_then_predict_with_it(world, capsys):
    import polars as pl

    from icezoo.core.batch import angles_to_vector
    from icezoo.engine.checkpoints import load_run_model
    from icezoo.engine.predict import member_predictions

    out = world["root"] / "st.json"
    cli("stack", "A", "B", "--method", "mlp", "--out", out, "--runs-dir", world["runs"])
    assert "apply: icezoo predict A B --stacker" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert set(saved["report"]["rows"]) == {"stacker", "kappa-weighted mean", f"best member ({saved['report']['best_member']})"}
    assert [m["run"] for m in saved["members"]] == ["A", "B"] and saved["method"] == "mlp"
    assert saved["report"]["rows"]["stacker"]["n_events"] == saved["data"]["score_events"] > 0
    assert list((world["runs"] / "A" / "predictions").glob("val-*.npz"))  # the cached predictions
    sub = world["root"] / "sub.csv"
    cli("predict", "A", "B", "--stacker", out, "--data", world["data"], "--out", sub, "--runs-dir", world["runs"])
    preds = []
    import torch
    for name in ("A", "B"):
        _, _, _, model, _ = load_run_model(name, world["runs"])
        preds.append(member_predictions(model, world["data"], "test", [1], torch.device("cpu")))
    want = S.apply(S.load(out), preds)
    got = pl.read_csv(sub).filter(pl.col("event_id").is_in(want["event_id"].tolist())).sort("event_id")
    np.testing.assert_allclose(angles_to_vector(got["azimuth"].to_numpy(), got["zenith"].to_numpy()),
                               want["direction"], atol=1e-6)
    # the wrong runs, or the right ones in the wrong order: one line, exit 2
    cli("predict", "B", "A", "--stacker", out, "--data", world["data"], "--out", sub, "--runs-dir", world["runs"],
        expect=2)
    assert "fitted on runs A, B (in that order), given B, A" in capsys.readouterr().err


def test_gbm_without_lightgbm_is_one_line(world, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # as if the extra were not installed: import fails
    cli("stack", "A", "B", "--method", "gbm", "--out", world["root"] / "g.json", "--runs-dir", world["runs"], expect=2)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --method gbm needs LightGBM: pip install -e '.[lightgbm]' (or pip install lightgbm)"]
    assert not (world["root"] / "g.json").exists()


def test_gbm_with_lightgbm(world):
    pytest.importorskip("lightgbm")
    out = world["root"] / "g.json"
    st = stack.stack(["A", "B"], "gbm", out, runs_dir=world["runs"], echo=None)
    assert len(S.load(out)["gbm"]) == 3 and "stacker" in st["report"]["rows"]
