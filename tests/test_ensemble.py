"""The ensemble's combination rule and the TTA rotations, against hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinyzoo import tiny_pipeline

from icezoo.core.errors import IcezooError
from icezoo.engine.ensemble import combine, rotate_geometry, rotation_z, tta_angles, unrotate


def test_kappa_weighted_mean_by_hand():
    # kappa 3 along x and kappa 1 along y: sum (3, 1, 0), |sum| = sqrt(10), over 2 members
    d, k = combine([np.array([[1.0, 0, 0]]), np.array([[0, 2.0, 0]])], [np.array([3.0]), np.array([1.0])])
    np.testing.assert_allclose(d, [[3 / np.sqrt(10), 1 / np.sqrt(10), 0]])
    np.testing.assert_allclose(k, [np.sqrt(10) / 2])


def test_plain_mean_without_kappa():
    d, k = combine([np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]])])
    np.testing.assert_allclose(d, [[1 / np.sqrt(2), 1 / np.sqrt(2), 0]])
    assert np.isnan(k).all()


def test_an_event_missing_a_kappa_gets_the_plain_mean_the_others_keep_their_weights():
    a = np.array([[1.0, 0, 0], [1.0, 0, 0]])
    b = np.array([[0, 1.0, 0], [0, 1.0, 0]])
    d, k = combine([a, b], [np.array([3.0, 3.0]), np.array([1.0, np.nan])])
    np.testing.assert_allclose(d[0], [3 / np.sqrt(10), 1 / np.sqrt(10), 0])
    np.testing.assert_allclose(d[1], [1 / np.sqrt(2), 1 / np.sqrt(2), 0])
    assert k[0] == pytest.approx(np.sqrt(10) / 2) and np.isnan(k[1])


def test_one_member_is_itself_and_agreeing_members_keep_their_kappa():
    v = np.array([[0.0, 0.6, 0.8]])
    d, k = combine([v], [np.array([5.0])])
    np.testing.assert_allclose(d, v)
    np.testing.assert_allclose(k, [5.0])
    d, k = combine([v, v, v], [np.array([5.0])] * 3)
    np.testing.assert_allclose(d, v)
    np.testing.assert_allclose(k, [5.0])


def test_scaling_every_kappa_keeps_the_direction_and_opposed_members_keep_the_first():
    rng = np.random.default_rng(0)
    dirs = [rng.normal(size=(50, 3)) for _ in range(3)]
    kap = [rng.uniform(0.1, 20, 50) for _ in range(3)]
    d1, _ = combine(dirs, kap)
    d2, _ = combine(dirs, [10 * x for x in kap])
    np.testing.assert_allclose(d1, d2, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(d1, axis=1), 1.0)
    d, _ = combine([np.array([[0, 0, 1.0]]), np.array([[0, 0, -1.0]])], [np.array([2.0]), np.array([2.0])])
    np.testing.assert_allclose(d, [[0, 0, 1.0]])


def test_combine_checks_shapes():
    with pytest.raises(IcezooError, match="at least one member"):
        combine([])
    with pytest.raises(IcezooError, match="kappas"):
        combine([np.ones((2, 3))], [np.ones(3)])


def test_rotations_about_the_vertical_axis():
    np.testing.assert_allclose(rotation_z(np.pi / 2) @ [1.0, 0, 0], [0, 1.0, 0], atol=1e-12)
    assert tta_angles(4) == pytest.approx([0, np.pi / 2, np.pi, 3 * np.pi / 2])
    geo = np.array([[100.0, 0, -300], [np.nan, np.nan, np.nan]])
    turned = rotate_geometry(geo, np.pi / 2)
    np.testing.assert_allclose(turned[0], [0, 100.0, -300], atol=1e-9)
    assert np.isnan(turned[1]).all()
    v = np.array([[0.6, 0.0, 0.8]])
    # a direction seen in the turned detector, turned back, is the original one
    np.testing.assert_allclose(unrotate(v @ rotation_z(0.7).T, 0.7), v, atol=1e-12)
    with pytest.raises(IcezooError, match="--tta 0"):
        tta_angles(0)


# ------------------------------------------------------------------------------ end to end
TINY = tiny_pipeline(epochs=1) + """

[pipelines.tiny_angles]
parent = "tiny"
description = "tiny pipeline with an angles head (no kappa)"
head = { name = "angles" }
loss = [{ name = "angular" }]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from icezoo.cli.main import main
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("ensemble")
    data = simulate(root / "data", 400, events_per_batch=100, seed=4, test=True, test_events=80)
    pf = root / "tiny.toml"
    pf.write_text(TINY)
    runs = root / "runs"
    for name, pipeline, seed in (("A", "tiny", 0), ("B", "tiny", 1), ("C", "tiny_angles", 0)):
        try:
            main(["train", "--pipeline-file", str(pf), "--pipeline", pipeline, "--data", str(data), "--runs-dir",
                  str(runs), "--name", name, "--seed", str(seed), "--no-progress"])
        except SystemExit as exc:
            assert exc.code in (0, None)
    return {"data": data, "runs": runs}


def _members(world, names, split, ids, tta=1):
    import torch

    from icezoo.engine.checkpoints import load_run_model
    from icezoo.engine.predict import member_predictions

    out = []
    for n in names:
        _, _, _, model, _ = load_run_model(n, world["runs"])
        out.append(member_predictions(model, world["data"], split, ids, torch.device("cpu"), tta=tta))
    return out


def test_evaluate_scores_the_ensemble_beside_its_members_by_the_rule(world):
    from icezoo.core.batch import angular_error
    from icezoo.engine.evaluate import evaluate_members, truth_vectors

    res = evaluate_members(["A", "B", "C"], runs_dir=world["runs"], echo=None)
    rows = res["rows"]
    assert set(rows) == {"A", "B", "C", "ensemble"} and res["reference"] in {"A", "B", "C"}
    ids = json.loads((world["runs"] / "A" / "run.json").read_text())["split"]["val_batches"]
    a, b, c = _members(world, ["A", "B", "C"], "train", ids)
    # with C's angles head (no kappa) every event takes the plain mean of the three directions
    s = a["direction"] + b["direction"] + c["direction"]
    expected = s / np.linalg.norm(s, axis=1, keepdims=True)
    tid, truth = truth_vectors(world["data"], "train", ids)
    err = angular_error(expected, truth[np.searchsorted(tid, a["event_id"])])
    assert rows["ensemble"]["mean"] == pytest.approx(err.mean(), abs=1e-9)
    assert rows["ensemble"]["n_events"] == rows["A"]["n_events"] == len(a["event_id"])
    # A and B alone (both with kappa): the kappa-weighted mean
    ab = evaluate_members(["A", "B"], runs_dir=world["runs"], echo=None)["rows"]["ensemble"]
    s = a["kappa"][:, None] * a["direction"] + b["kappa"][:, None] * b["direction"]
    err = angular_error(s / np.linalg.norm(s, axis=1, keepdims=True), truth[np.searchsorted(tid, a["event_id"])])
    assert ab["mean"] == pytest.approx(err.mean(), abs=1e-9)


def test_predict_writes_the_ensembles_directions(world, tmp_path):
    import polars as pl

    from icezoo.core.batch import angles_to_vector
    from icezoo.engine.ensemble import combine
    from icezoo.engine.predict import predict

    out = tmp_path / "sub.csv"
    predict(["A", "B"], str(world["data"]), split="test", out=out, runs_dir=world["runs"], echo=None)
    sub = pl.read_csv(out)
    a, b = _members(world, ["A", "B"], "test", [1])
    d, _ = combine([a["direction"], b["direction"]], [a["kappa"], b["kappa"]])
    got = sub.filter(pl.col("event_id").is_in(a["event_id"].tolist())).sort("event_id")
    v = angles_to_vector(got["azimuth"].to_numpy(), got["zenith"].to_numpy())
    np.testing.assert_allclose(v, d, atol=1e-6)


def test_tta_rows_are_scored_against_no_tta(world, capsys):
    from icezoo.cli.main import main
    from icezoo.engine.evaluate import evaluate, evaluate_members

    res = evaluate_members(["A"], runs_dir=world["runs"], tta=3, echo=None)
    plain = evaluate("A", runs_dir=world["runs"], plots=False, echo=None)
    assert res["rows"]["A"]["mean"] == pytest.approx(plain["mean"], abs=1e-9)
    tta = res["rows"]["A + TTA 3"]
    assert tta["paired_n"] == plain["n_events"] and tta["diff_ci95"][0] <= tta["diff"] <= tta["diff_ci95"][1]
    assert tta["mean"] != pytest.approx(plain["mean"], abs=1e-6)  # the rotated views did change the prediction
    try:
        main(["evaluate", "A", "--tta", "0", "--runs-dir", str(world["runs"])])
        code = 0
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "--tta" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the kappa filter
def test_kappa_filter_trains_on_the_confident_events_with_cached_predictions(world, capsys):
    from icezoo.cli.main import main
    from icezoo.engine.kappa_filter import predicted_kappa

    info = json.loads((world["runs"] / "A" / "run.json").read_text())
    train_ids = info["split"]["train_batches"]
    pred = predicted_kappa("A", world["data"], train_ids, world["runs"])
    kappa = np.concatenate([k for _, k in pred.values()])
    cut = float(np.median(kappa))
    expected = int((kappa > cut).sum())
    assert 0 < expected < len(kappa)
    cache = list((world["runs"] / "A" / "predictions").glob("*/train_*.npz"))
    assert len(cache) == len(train_ids)
    stamps = {f: f.stat().st_mtime_ns for f in cache}

    def train(name, *extra):
        try:
            main(["train", "--pipeline-file", str(world["runs"].parent / "tiny.toml"), "--pipeline", "tiny",
                  "--data", str(world["data"]), "--runs-dir", str(world["runs"]), "--name", name, "--no-progress",
                  "--epochs", "2", *extra])
            return 0
        except SystemExit as exc:
            return exc.code

    assert train("KF", "--set", f"train.min_kappa={cut!r}", "--set", "train.kappa_from=A") in (0, None)
    run = json.loads((world["runs"] / "KF" / "run.json").read_text())
    assert run["events_seen"] == 2 * expected  # two epochs over exactly the events above the cut
    log = (world["runs"] / "KF" / "train.log").read_text()
    assert f"{expected:,} of {len(kappa):,} training events have kappa > {cut:g}" in log
    assert "(0 made, " in log  # every file's predictions came from the cache
    assert {f: f.stat().st_mtime_ns for f in cache} == stamps
    capsys.readouterr()
    assert train("KF_BAD", "--set", "train.min_kappa=0.5", "--set", "train.kappa_from=C") == 2
    assert "its head predicts no kappa" in capsys.readouterr().err
    assert train("KF_HALF", "--set", "train.min_kappa=0.5") == 2
    assert "needs both min_kappa and kappa_from" in capsys.readouterr().err
