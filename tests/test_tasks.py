"""Tasks beside the direction (issue 23): truth columns from the simulator and GraphNeT, the loader's
Batch.truth, composition and its one-line errors, training, predict columns, MULTITASK_V0, and a
direction-only pipeline unchanged (same training, same predictions, old checkpoints load)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tinyzoo import cli, tiny_pipeline  # noqa: E402

from icezoo.core.errors import IcezooError  # noqa: E402

TASKS = """
[pipelines.tiny_mt]
parent = "tiny"
description = "tiny with energy, event type and vertex"
features = [{ name = "kaggle_norm" }, { name = "pulse_count" }]
tasks = [{ name = "energy", hidden = 16 }, { name = "event_type", hidden = 16, weight = 0.5 },
         { name = "vertex", hidden = 16 }]

[pipelines.tiny_no_tasks]
parent = "tiny"
description = "tiny with an explicitly empty task list"
tasks = []

[pipelines.tiny_missing]
parent = "tiny"
description = "a regression on a column the data lacks"
tasks = [{ name = "regression", column = "bjorken_y" }]

[pipelines.tiny_unknown]
parent = "tiny"
description = "an unknown task"
tasks = [{ name = "enrgy" }]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny simulated set (4 training files of 100 events, a 100-event test split) and pipelines."""
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("tasks")
    data = simulate(root / "data", 400, events_per_batch=100, seed=3, test=True, test_events=100)
    pf = root / "tiny.toml"
    pf.write_text(tiny_pipeline("tiny", epochs=1) + TASKS)
    return {"root": root, "data": data, "pf": pf, "runs": root / "runs"}


def _train(world, pipeline, name, *extra, expect=0):
    cli("train", "--pipeline-file", world["pf"], "--pipeline", pipeline, "--data", world["data"], "--runs-dir",
        world["runs"], "--name", name, "--no-progress", "--seed", "5", *extra, expect=expect)
    return world["runs"] / name


def _config(world, name):
    from icezoo.core.pipelines import pipeline_config
    from icezoo.zoo import registry

    return pipeline_config(name, world["pf"], reg=registry())


# ------------------------------------------------------------------------------- truth columns
def test_truth_columns_of_graphnet_and_the_simulator():
    from icezoo.data.truth import available, task_truth

    graphnet = {"event_id": np.arange(7), "energy": np.array([10.0, 100, 1e3, 1e4, 5.0, 2.0, -1]),
                "pid": np.array([14, -14, 12, 14, 16, -13, -1]), "interaction_type": np.array([1, 1, 1, 2, 1, 0, -1]),
                "position_x": np.arange(7.0), "position_y": np.zeros(7), "position_z": -np.ones(7)}
    got = task_truth(graphnet, ["track", "vertex_x", "vertex_z", "energy"])
    # a track is a nu_mu CC (|pid| 14, interaction_type 1) or a muon; NC and the other flavours are
    # cascades; a fill value is no label
    assert got["track"][:6].tolist() == [1, 1, 0, 0, 0, 1] and np.isnan(got["track"][6])
    assert got["vertex_x"].tolist() == list(range(7)) and got["vertex_z"].tolist() == [-1] * 7
    assert "event_class" not in available(graphnet)
    sim = {"event_type": np.array(["through_going_track", "starting_track", "cascade", "cascade"]),
           "vertex_x": np.ones(4), "energy": np.ones(4)}
    got = task_truth(sim, ["track", "event_class"])
    assert got["track"].tolist() == [1, 1, 0, 0] and got["event_class"].tolist() == [0, 1, 2, 2]
    with pytest.raises(IcezooError, match=r"no truth column 'pid' \(truth columns: energy, event_class"):
        task_truth(sim, ["pid"])
    with pytest.raises(IcezooError, match="not numeric"):
        task_truth(sim, ["event_type"])


def test_loader_carries_the_tasks_truth_only_when_asked(world):
    import polars as pl

    from icezoo.data.loader import make_loader
    from icezoo.zoo import build

    model = build(_config(world, "tiny_mt"))
    assert model.truth_columns() == ("energy", "track", "vertex_x", "vertex_y", "vertex_z")
    truth = pl.read_parquet(world["data"] / "train_truth.parquet")
    by_id = {int(e): i for i, e in enumerate(truth["event_id"].to_list())}
    loader = make_loader(world["data"], "train", [1, 2], model.selection, model.features, 32, seed=1,
                         truth_columns=model.truth_columns())
    seen = 0
    for batch in loader:
        rows = [by_id[int(e)] for e in batch.event_id]
        assert batch.truth["energy"].dtype == torch.float32
        np.testing.assert_allclose(batch.truth["energy"].numpy(), truth["energy"].to_numpy()[rows], rtol=1e-6)
        np.testing.assert_allclose(batch.truth["vertex_y"].numpy(), truth["vertex_y"].to_numpy()[rows], rtol=1e-5,
                                   atol=1e-3)
        tracks = np.isin(truth["event_type"].to_numpy()[rows], ["through_going_track", "starting_track"])
        assert batch.truth["track"].numpy().tolist() == tracks.astype(float).tolist()
        seen += batch.num_events
    assert seen > 100
    plain = make_loader(world["data"], "train", [1], model.selection, model.features, 32, seed=1)
    assert all(b.truth is None for b in plain)


def test_batch_moves_and_selects_its_truth():
    from icezoo.core.synthetic import synthetic_batch

    batch = synthetic_batch(4, [3, 2, 5], seed=0)
    batch.truth = {"energy": torch.tensor([1.0, 2.0, 3.0])}
    assert batch.select([2, 0]).truth["energy"].tolist() == [3.0, 1.0]
    assert batch.to("cpu", torch.float64).truth["energy"].dtype == torch.float64
    assert batch.with_(truth=None).to("cpu").truth is None


# ----------------------------------------------------------------------------------- composing
def test_a_pipeline_without_tasks_is_what_it_was():
    from icezoo.core.pipelines import pipeline_config, pipeline_from_table
    from icezoo.zoo import build, registry

    config = pipeline_config("default", reg=registry())
    assert "tasks" not in config.to_table()  # saved tables and checkpoints of direction-only pipelines unchanged
    model = build(config)
    assert len(model.tasks) == 0 and model.truth_columns() == ()
    assert not any(k.startswith("tasks.") for k in model.state_dict())
    same = pipeline_from_table("default", {**config.to_table(), "tasks": []})
    assert same.to_table() == config.to_table()


def test_task_errors_are_one_line(world, capsys):
    _train(world, "tiny_unknown", "unknown", expect=2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown task 'enrgy'" in err and "did you mean" in err
    _train(world, "tiny_missing", "missing", expect=2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "task 'bjorken_y' needs truth column 'bjorken_y'" in err and "truth columns: " in err and "energy" in err
    assert not (world["runs"] / "missing").exists()  # refused before the run directory exists
    cli("compose", "--task", "direction", "--task", "energy", "--task", "nonesuch", expect=2)
    assert "unknown task 'nonesuch'" in capsys.readouterr().err


def test_two_tasks_of_one_name_or_column_are_refused():
    from icezoo.core.pipelines import pipeline_config, pipeline_from_table
    from icezoo.zoo import build, registry

    table = pipeline_config("default", reg=registry()).to_table()
    twice = pipeline_from_table("twice", {**table, "tasks": [{"name": "energy"}, {"name": "regression",
                                                                                 "column": "energy"}]})
    with pytest.raises(IcezooError, match=r"tasks.1: a second task named 'energy' \(tasks.0 is one\)"):
        build(twice)
    clash = pipeline_from_table("clash", {**table, "tasks": [{"name": "vertex"}, {"name": "regression",
                                                                                 "column": "vertex_x"}]})
    with pytest.raises(IcezooError, match="writes a column 'vertex_x', which task 'vertex' writes already"):
        build(clash)


def test_compose_task_flags(capsys):
    cli("compose", "--task", "direction", "--task", "energy", "--task", "event_type", "--events", "3")
    out = capsys.readouterr().out
    assert "energy" in out and "event_type" in out and "gradients finite: True" in out


# -------------------------------------------------------------------------------- learning
def test_energy_learns_the_total_charge():
    """Energy proportional to the events' total charge: the energy loss falls well below its start."""
    from icezoo.core.pipelines import pipeline_from_table
    from icezoo.core.synthetic import synthetic_batch
    from icezoo.zoo import build

    table = {"features": [{"name": "kaggle_norm"}], "embedder": {"name": "linear", "dim": 16},
             "backbone": {"name": "transformer", "depth": 1, "heads": 2}, "pooler": ["mean", "max"],
             "tasks": [{"name": "energy", "hidden": 16}]}
    torch.manual_seed(0)
    model = build(pipeline_from_table("toy", table))
    rng = np.random.default_rng(0)
    batch = synthetic_batch(model.feature_dim, rng.integers(2, 24, 48).tolist(), seed=0)
    charge = batch.features[..., 4]  # kaggle_norm's charge column (log10 charge / 3)
    total = (10 ** (3 * charge) * batch.mask).sum(1)
    batch.truth = {"energy": (100.0 * total).float()}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        opt.zero_grad()
        pred, outs = model.forward_tasks(batch)
        total_loss, terms = model.task_loss(outs, batch)
        total_loss.backward()
        opt.step()
        losses.append(float(terms["energy"].detach()))
    assert all(math.isfinite(v) for v in losses)
    assert np.median(losses[-10:]) < losses[0] - 1.0, (losses[0], losses[-10:])


def test_a_task_loss_leaves_out_events_without_truth():
    from icezoo.plugins.tasks import Energy

    task = Energy(Energy.Config(hidden=4), 3)
    out = torch.randn(4, 2, requires_grad=True)
    full = task.loss(out[:2], {"energy": torch.tensor([10.0, 1e4])})
    part = task.loss(out, {"energy": torch.tensor([10.0, 1e4, float("nan"), -1.0])})
    assert torch.allclose(full, part)
    part.backward()
    assert torch.isfinite(out.grad).all() and (out.grad[2:] == 0).all()
    none = task.loss(out, {"energy": torch.full((4,), float("nan"))})
    assert float(none.detach()) == 0.0


# ------------------------------------------------------------------- training and predicting
@pytest.fixture(scope="module")
def multitask_run(world):
    return _train(world, "tiny_mt", "mt")


def test_training_logs_each_task_loss(multitask_run):
    log = (multitask_run / "train.log").read_text()
    step_lines = [line for line in log.splitlines() if " step " in line and " energy " in line]
    assert step_lines and all(" event_type " in line and " vertex " in line for line in step_lines)
    assert "(tasks: energy " in log  # the epoch line: each task's mean training loss
    history = json.loads((multitask_run / "metrics.json").read_text())
    epochs = history["history"] if isinstance(history, dict) else history
    assert set(epochs[-1]["task_losses"]) == {"energy", "event_type", "vertex"}
    assert all(math.isfinite(v) for v in epochs[-1]["task_losses"].values())


def test_predict_writes_the_task_columns_in_range(world, multitask_run):
    out = world["root"] / "mt.csv"
    cli("predict", multitask_run, "--data", world["data"], "--out", out)
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["event_id", "azimuth", "zenith", "energy", "energy_sigma", "p_track", "vertex_x",
                             "vertex_y", "vertex_z", "vertex_sigma"]
    model_rows = [r for r in rows if r["energy"] != "nan"]
    assert len(model_rows) >= 0.9 * len(rows)
    for r in model_rows:
        assert 0.0 <= float(r["p_track"]) <= 1.0
        assert float(r["energy_sigma"]) > 0 and float(r["vertex_sigma"]) > 0
        assert 0 < float(r["energy"]) < 9 and abs(float(r["vertex_x"])) < 1e4


def test_direction_only_training_and_predictions_unchanged(world):
    """``tasks = []`` written out trains and predicts bit for bit as the pipeline that never names tasks
    (the same parameters, in the same order, from the same seed; the same loss computation)."""
    from icezoo.core.checkpoint import load_checkpoint

    runs = [_train(world, name, f"d_{name}") for name in ("tiny", "tiny_no_tasks")]
    states = [load_checkpoint(r / "checkpoints" / "last.pt")["state_dict"] for r in runs]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    outs = []
    for r in runs:
        out = world["root"] / f"{r.name}.csv"
        cli("predict", r, "--data", world["data"], "--out", out)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0].splitlines()[0] == b"event_id,azimuth,zenith"  # still exactly a Kaggle submission


def test_a_checkpoint_without_task_keys_loads(world, tmp_path):
    """A checkpoint written before tasks existed: its table has no 'tasks' and its state dict no task keys."""
    from icezoo.core.checkpoint import save_checkpoint
    from icezoo.engine.checkpoints import model_from_checkpoint
    from icezoo.zoo import build

    config = _config(world, "tiny")
    model = build(config)
    table = {"name": "tiny", **config.to_table()}
    assert "tasks" not in table
    path = tmp_path / "old.pt"
    save_checkpoint(path, table, {k: v.clone() for k, v in model.state_dict().items()}, provenance={})
    _, loaded, _ = model_from_checkpoint(path)
    assert len(loaded.tasks) == 0
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_multitask_v0_composes_and_trains_a_few_steps(world):
    """The registry's MULTITASK_V0 at test size: composes, trains 4 steps on the simulated set, and
    predicts every task's columns."""
    run = _train_registered(world, "MULTITASK_V0", "mtv0")
    log = (run / "train.log").read_text()
    assert "done: 4 steps" in log and " energy " in log
    out = world["root"] / "mtv0.csv"
    cli("predict", run, "--data", world["data"], "--out", out)
    header = out.read_text().splitlines()[0].split(",")
    assert header[:3] == ["event_id", "azimuth", "zenith"] and "p_track" in header and "vertex_sigma" in header


def _train_registered(world, pipeline, name):
    cli("train", "--pipeline", pipeline, "--data", world["data"], "--runs-dir", world["runs"], "--name", name,
        "--no-progress", "--set", "embedder.dim=16", "--set", "backbone.depth=1", "--set", "backbone.heads=2",
        "--set", "train.max_steps=4", "--set", "tasks.0.hidden=8", "--set", "tasks.1.hidden=8",
        "--set", "tasks.2.hidden=8", "--max-pulses", "24")
    return world["runs"] / name


def test_a_graphnet_file_gives_the_tasks_truth(world, tmp_path):
    """GraphNeT's truth (energy, pid, interaction_type, position_x/y/z) reaches Batch.truth in the task
    vocabulary: a track is a nu_mu CC; the vertex is position_*; a missing column is one line."""
    import polars as pl
    from graphnet_files import from_kaggle, write_sqlite

    from icezoo.data.io import list_batches
    from icezoo.data.loader import make_loader
    from icezoo.engine.loaders import check_truth
    from icezoo.zoo import build

    pulses, truth = from_kaggle(world["data"])
    sim = pl.read_parquet(world["data"] / "train_truth.parquet").sort("event_id")
    kind = sim["event_type"].to_numpy()[np.searchsorted(sim["event_id"].to_numpy(), truth["event_no"])]
    is_track = np.isin(kind, ["through_going_track", "starting_track"])
    truth["pid"] = np.where(is_track, -14.0, 12.0)  # a cascade here: a nu_e CC
    truth["interaction_type"] = np.ones(len(is_track))
    db = write_sqlite(tmp_path / "sim.db", {"pulses": pulses, "truth": truth})
    model = build(_config(world, "tiny_mt"))
    check_truth(model, db, "train", [1])
    seen = 0
    ids = list_batches(db, "train")
    for batch in make_loader(db, "train", ids, model.selection, model.features, 64, seed=0,
                             truth_columns=model.truth_columns()):
        rows = np.searchsorted(truth["event_no"], batch.event_id.numpy())
        assert batch.truth["track"].numpy().tolist() == is_track[rows].astype(float).tolist()
        np.testing.assert_allclose(batch.truth["vertex_x"].numpy(), truth["position_x"][rows], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(batch.truth["energy"].numpy(), truth["energy"][rows], rtol=1e-6)
        seen += batch.num_events
    assert seen > 0.9 * len(truth["event_no"])
    bare = write_sqlite(tmp_path / "bare.db", {"pulses": pulses, "truth": {k: truth[k] for k in
                                                                          ("event_no", "azimuth", "zenith")}})
    with pytest.raises(IcezooError, match=r"task 'energy' needs truth column 'energy'.*\(truth columns: none\)"):
        check_truth(model, bare, "train", [1])
