"""Sensor-level aggregation (issue 26): the `sensors` selection, sensor tokens with every pulse
packed (icezoo.data.sensors), the `sensor_agg` embedder, and SENSOR_AGG training end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icezoo.core import IcezooError
from icezoo.data.io import list_batches, read_chunk
from icezoo.data.loader import make_loader
from icezoo.data.sensors import pad_sensor_events, prepare_sensors
from icezoo.plugins.embedders.aggregate import SensorAggregation
from icezoo.plugins.features import KaggleNorm
from icezoo.plugins.selection import Sensors, TimeOrder
from icezoo.testing import synthetic_chunk
from tinyzoo import cli

FEATS = [KaggleNorm(KaggleNorm.Config())]

TINY_SENSORS = """
[pipelines.tiny_sensors]
description = "tiny sensor aggregation"
features = [{ name = "kaggle_norm" }]
selection = { name = "sensors" }
embedder = { name = "sensor_agg", dim = 16 }
backbone = { name = "transformer", depth = 1, heads = 2 }
pooler = ["mean", "max"]
head = { name = "direction_kappa" }
loss = [{ name = "vmf3d" }]
train = { batch_size = 32, epochs = 1, lr = 3e-3 }

[pipelines.tiny_sensors_relbias]
parent = "tiny_sensors"
description = "tiny sensor aggregation, per-sensor transformer, relative-bias backbone"
embedder = { name = "sensor_agg", dim = 16, encoder = "transformer", heads = 2 }
backbone = { name = "relbias_transformer", heads = 2, biased_depth = 1, depth = 0, bias_dim = 4 }
"""


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("sensoragg")
    data = simulate(root / "data", 300, events_per_batch=100, seed=3)
    pf = root / "tiny.toml"
    pf.write_text(TINY_SENSORS)
    return {"root": root, "data": data, "pf": pf}


def _event_pulses(batch, e):
    """(sensor, charge) of every packed pulse of event e, sorted (the sensor read from its token)."""
    p = batch.pulses
    at = p.event == e
    sensor = batch.sensor_id[p.event[at], p.slot[at]].numpy()
    return sorted(zip(sensor.tolist(), p.charge[at].numpy().tolist()))


def test_every_pulse_of_an_event_with_thousands_of_pulses_reaches_a_sensor_token():
    lengths = [5000, 2, 37, 1]
    chunk = synthetic_chunk(lengths, seed=3, sensors=400)  # ~12 pulses per sensor in the big event
    batch = pad_sensor_events(prepare_sensors(chunk, Sensors(Sensors.Config()), FEATS, np.random.default_rng(0)),
                              slice(None))
    p = batch.pulses
    assert p.num_pulses == sum(lengths) and p.num_events == 4
    for e, (a, b) in enumerate(zip(chunk.offsets[:-1], chunk.offsets[1:])):
        want = sorted(zip(chunk.sensor_id[a:b].astype(int).tolist(), chunk.charge[a:b].astype(np.float32).tolist()))
        assert _event_pulses(batch, e) == want  # the same pulses, none dropped, none invented
        assert p.charge[p.event == e].double().sum().item() == pytest.approx(chunk.charge[a:b].sum(), rel=1e-6)
        assert int(batch.mask[e].sum()) == len(np.unique(chunk.sensor_id[a:b]))  # one token per hit sensor
        t = batch.xyzt[e, batch.mask[e], 3]
        assert t[0] == 0 and (t[1:] >= t[:-1]).all()  # tokens in order of their first pulse
    assert (p.dt >= 0).all()
    token = p.token(batch.mask.shape[1])
    first = torch.ones_like(token, dtype=torch.bool)
    first[1:] = token[1:] != token[:-1]
    assert (p.dt[first] == 0).all() and (p.dt[~first] >= 0).all()
    assert batch.mask.reshape(-1)[token].all()  # every pulse sits on a real token
    assert (batch.sensor_id[~batch.mask] == 5160).all()
    # the embedder pools every pulse: its token counts add up to the event's pulses
    emb = SensorAggregation(SensorAggregation.Config(dim=8), FEATS[0].out_dim).eval()
    out = emb(batch.features, batch)
    assert out.shape == (4, batch.mask.shape[1], 8) and torch.isfinite(out).all()
    assert (out[~batch.mask] == 0).all()


def test_max_sensors_keeps_the_brightest_or_earliest_whole_sensors():
    chunk = synthetic_chunk([60, 40], seed=1, sensors=8)
    for order in ("brightest", "earliest"):
        out = Sensors(Sensors.Config(max_sensors=3, order=order)).select(chunk, np.random.default_rng(0))
        for e in range(2):
            a, b = chunk.offsets[e], chunk.offsets[e + 1]
            sid, q, t = chunk.sensor_id[a:b].astype(int), chunk.charge[a:b], chunk.time[a:b]
            kept = set(out.sensor_id[out.offsets[e]:out.offsets[e + 1]].astype(int).tolist())
            score = {s: (q[sid == s].sum() if order == "brightest" else -t[sid == s].min()) for s in set(sid.tolist())}
            assert kept == set(sorted(score, key=lambda s: -score[s])[:3])
            assert out.lengths[e] == np.isin(sid, list(kept)).sum()  # whole sensors


def test_sensor_batches_select_and_cast_their_pulses():
    chunk = synthetic_chunk([30, 5, 12], seed=2, sensors=20)
    batch = pad_sensor_events(prepare_sensors(chunk, Sensors(Sensors.Config()), FEATS, np.random.default_rng(0)),
                              slice(None))
    sub = batch.select([2, 0])
    assert sub.pulses.num_events == 2 and sub.pulses.num_pulses == 42
    assert _event_pulses(sub, 0) == _event_pulses(batch, 2) and _event_pulses(sub, 1) == _event_pulses(batch, 0)
    wide = batch.to("cpu", torch.float64)
    assert wide.pulses.features.dtype == torch.float64 and wide.pulses.event.dtype == torch.int64
    with pytest.raises(ValueError, match="selected twice"):
        batch.select([1, 1])


def test_the_loader_feeds_every_pulse_of_every_event(sim):
    data = sim["data"]
    sel = Sensors(Sensors.Config())
    ids = list_batches(data, "train")
    charge = {}
    for b in ids:
        c = read_chunk(data, "train", b)
        for e, eid in enumerate(c.event_id):
            charge[int(eid)] = c.charge[c.offsets[e]:c.offsets[e + 1]].sum()
    seen = 0
    for batch in make_loader(data, "train", ids, sel, FEATS, 16, shuffle=True, seed=0):
        p = batch.pulses
        assert torch.equal(torch.bincount(p.event, minlength=batch.num_events), batch.n_pulses)
        got = torch.zeros(batch.num_events, dtype=torch.float64).index_add_(0, p.event, p.charge.double())
        want = torch.tensor([charge[int(i)] for i in batch.event_id], dtype=torch.float64)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
        seen += batch.num_events
    assert seen >= 290 and max(charge, key=lambda i: charge[i]) is not None
    # a pulse-level selection is untouched: no packed pulses, padded to its cap
    plain = next(iter(make_loader(data, "train", ids, TimeOrder(TimeOrder.Config(max_pulses=8)), FEATS, 16)))
    assert plain.pulses is None and plain.features.shape[1] <= 8


def test_a_sensor_selection_is_refused_by_the_pulse_path():
    from icezoo.data.io import chunk_to_batch

    with pytest.raises(IcezooError, match="prepare_sensors"):
        chunk_to_batch(synthetic_chunk([5, 3], seed=0), Sensors(Sensors.Config()), FEATS, np.random.default_rng(0))


def test_sensor_agg_needs_a_sensor_selection(sim):
    from icezoo.core.pipelines import pipeline_config
    from icezoo.zoo import build, registry

    config = pipeline_config("tiny_sensors", str(sim["pf"]), reg=registry())
    with pytest.raises(IcezooError, match="sensor_agg needs sensor_tokens"):
        build(config.with_overrides({"selection.name": "time_order"}))


@pytest.fixture(scope="module")
def trained(sim):
    runs = sim["root"] / "runs"
    for pipeline in ("tiny_sensors", "tiny_sensors_relbias"):
        cli("train", "--pipeline-file", sim["pf"], "--pipeline", pipeline, "--data", sim["data"], "--runs-dir", runs,
            "--name", pipeline.upper(), "--no-progress", "--epochs", "1")
    return runs


@pytest.mark.parametrize("pipeline", ["tiny_sensors", "tiny_sensors_relbias"])
def test_a_tiny_sensor_aggregation_pipeline_trains_and_evaluates(trained, sim, pipeline):
    run = trained / pipeline.upper()
    assert (run / "run.json").is_file() and any((run / "checkpoints").iterdir())
    cli("evaluate", run, "--data", sim["data"], "--no-plots")  # the evaluation loader makes sensor tokens too


def test_brightest_pairs_two_runs_on_their_brightest_events(trained, capsys):
    from icezoo.engine.bright import compare_brightest

    a, b = trained / "TINY_SENSORS", trained / "TINY_SENSORS_RELBIAS"
    r = compare_brightest(str(a), str(b), 0.1, trained)
    n = r["all"]["events"]
    assert r["brightest"]["events"] == int(np.ceil(0.1 * n)) and n >= 90
    assert r["all"]["diff"] == pytest.approx(r["all"]["mean_a"] - r["all"]["mean_b"])
    assert r["pulse_cap"] == {"a": None, "b": None}
    same = compare_brightest(str(a), str(a), 0.1, trained)
    assert same["brightest"]["diff"] == 0 and same["brightest"]["ci95"] == [0.0, 0.0]
    cli("evaluate", a, b, "--runs-dir", trained, "--brightest", "0.1")
    assert "the brightest 10%" in capsys.readouterr().out
    cli("evaluate", a, "--runs-dir", trained, "--brightest", "0.1", expect=2)
