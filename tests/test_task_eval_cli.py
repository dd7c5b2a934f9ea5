"""icezoo evaluate / runs / predict with tasks, end to end on a tiny simulated set: each task's
figures, plots and ledger score; a direction-only run's evaluation as before; an ensemble's task
columns combined by the ensemble rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tinyzoo import cli  # noqa: E402

TINY = """
[pipelines.tiny_mt]
description = "tiny multi-task test pipeline"
features = [{ name = "kaggle_norm" }]
selection = { name = "time_order", max_pulses = 32 }
embedder = { name = "linear", dim = 16 }
backbone = { name = "transformer", depth = 1, heads = 2 }
pooler = ["mean", "max"]
head = { name = "direction_kappa" }
loss = [{ name = "vmf3d" }]
tasks = [{ name = "energy", hidden = 8 }, { name = "event_type", hidden = 8 }, { name = "vertex", hidden = 8 }]
train = { batch_size = 32, epochs = 1, lr = 3e-3 }

[pipelines.tiny_mt3]
parent = "tiny_mt"
description = "tiny, the simulator's three event types"
tasks = [{ name = "event_type", classes = "simulator", hidden = 8 }]

[pipelines.tiny_dir]
parent = "tiny_mt"
description = "tiny direction-only test pipeline"
tasks = []
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("taskeval")
    data = simulate(root / "data", 600, events_per_batch=100, seed=2, test=True, test_events=150)
    pf = root / "tiny.toml"
    pf.write_text(TINY)
    runs = root / "runs"
    for name, pipeline, seed in (("MT1", "tiny_mt", 0), ("MT2", "tiny_mt", 1), ("DIR", "tiny_dir", 0),
                                 ("MT3", "tiny_mt3", 0)):
        cli("train", "--pipeline-file", pf, "--pipeline", pipeline, "--data", data, "--runs-dir", runs,
            "--name", name, "--seed", str(seed), "--no-progress")
    return {"root": root, "data": data, "runs": runs}


def test_evaluate_prints_plots_and_records_each_task(world, capsys):
    capsys.readouterr()
    cli("evaluate", "MT1", "--runs-dir", world["runs"])
    text = capsys.readouterr().out
    for needle in ("task energy (energy in log10 E", "per band of true log10 E", "task event_type (classification",
                   "ROC AUC (track)", "task vertex (vertex", "median distance to the truth"):
        assert needle in text, needle
    ev = json.loads((world["runs"] / "MT1" / "run.json").read_text())["evaluation"]
    tasks = ev["tasks"]
    assert list(tasks) == ["energy", "event_type", "vertex"]
    n = ev["n_events"]
    assert tasks["energy"]["figures"]["n_events"] == n  # every simulated event has a true energy
    lo, hi = tasks["energy"]["score_ci95"]
    assert lo <= tasks["energy"]["score"] <= hi and tasks["energy"]["label"] == "log10 E res"
    assert 0 <= tasks["event_type"]["score"] <= 1 and sum(map(sum, tasks["event_type"]["figures"]["confusion"])) == n
    assert tasks["vertex"]["score"] > 0
    for png in ("energy_energy.png", "event_type_roc.png", "vertex_vertex.png", "kappa_calibration.png"):
        assert (world["runs"] / "MT1" / "plots" / png).stat().st_size > 1000, png
    assert {"energy_energy.png", "event_type_roc.png", "vertex_vertex.png"} <= set(ev["plots"])
    capsys.readouterr()
    cli("runs", "--runs-dir", world["runs"], "MT1")
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| MT1 |"))
    assert "; energy: log10 E res " in row and "; event_type: AUC " in row and "; vertex: median distance " in row


def test_three_class_event_type_gets_one_vs_rest_figures(world):
    cli("evaluate", "MT3", "--runs-dir", world["runs"], "--no-plots")
    f = json.loads((world["runs"] / "MT3" / "run.json").read_text())["evaluation"]["tasks"]["event_type"]["figures"]
    assert f["classes"] == ["through_going_track", "starting_track", "cascade"]
    assert set(f["per_class"]) == set(f["classes"]) and np.array(f["confusion"]).shape == (3, 3)


def test_direction_only_evaluation_is_unchanged(world, capsys):
    capsys.readouterr()
    cli("evaluate", "DIR", "--runs-dir", world["runs"])
    assert "task " not in capsys.readouterr().out
    ev = json.loads((world["runs"] / "DIR" / "run.json").read_text())["evaluation"]
    assert "tasks" not in ev
    assert ev["plots"] == ["resolution_vs_zenith.png", "resolution_vs_pulses.png", "resolution_vs_energy.png",
                           "resolution_by_event_type.png", "kappa_calibration.png", "learning_curve.png"]


def test_ensemble_prediction_combines_the_task_columns(world):
    import polars as pl

    out = {}
    for runs in (["MT1"], ["MT2"], ["MT1", "MT2"]):
        path = world["root"] / f"sub_{'_'.join(runs)}.csv"
        cli("predict", *runs, "--runs-dir", world["runs"], "--data", world["data"], "--split", "test", "--out", path)
        out[tuple(runs)] = pl.read_csv(path)
    a, b, both = out[("MT1",)], out[("MT2",)], out[("MT1", "MT2")]
    assert both.columns[:3] == ["event_id", "azimuth", "zenith"] and both.columns == a.columns
    assert "energy_sigma" in both.columns and "p_track" in both.columns and "vertex_sigma" in both.columns
    seen = a["energy"].is_not_nan().to_numpy()  # the fallback events have no task prediction
    w1, w2 = 1 / a["energy_sigma"].to_numpy() ** 2, 1 / b["energy_sigma"].to_numpy() ** 2
    expect = (w1 * a["energy"].to_numpy() + w2 * b["energy"].to_numpy()) / (w1 + w2)
    np.testing.assert_allclose(both["energy"].to_numpy()[seen], expect[seen], rtol=1e-5)
    np.testing.assert_allclose(both["p_track"].to_numpy()[seen],
                               0.5 * (a["p_track"].to_numpy() + b["p_track"].to_numpy())[seen], rtol=1e-5)
