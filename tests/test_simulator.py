"""The simulator: calibration against the Kaggle figures (fixed bounds, issue 4), the exact Kaggle
layout and dtypes, determinism, atomic writes, knobs and the physics it promises."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from icezoo.core.batch import angles_to_vector, angular_error
from icezoo.core.errors import IcezooError
from icezoo.data import kaggle_layout, simulator
from icezoo.data.simulator import SimulatorConfig, make_config, simulate

CALIBRATION_EVENTS = 5000


def _pulses(root: Path, split: str = "train") -> pl.DataFrame:
    files = sorted((root / split).glob("batch_*.parquet"), key=lambda p: int(p.stem.split("_")[1]))
    return pl.concat([pl.read_parquet(f).with_columns(pl.lit(int(f.stem.split("_")[1])).alias("batch")) for f in files])


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> dict:
    """5,000 events with default knobs (written once per module) plus what the tests measure."""
    root = simulate(tmp_path_factory.mktemp("calib") / "sim", CALIBRATION_EVENTS, events_per_batch=2500, seed=0)
    pulses = _pulses(root)
    meta = pl.read_parquet(root / "train_meta.parquet")
    truth = pl.read_parquet(root / "train_truth.parquet")
    return {"root": root, "pulses": pulses, "meta": meta, "truth": truth}


def _chunk(root: Path):
    """All train events as one PulseChunk (plain polars read; the reader has its own tests)."""
    from icezoo.core.batch import PulseChunk

    pulses = _pulses(root)
    meta = pl.read_parquet(root / "train_meta.parquet")
    geo = np.loadtxt(root / "sensor_geometry.csv", delimiter=",", skiprows=1)
    counts = (meta["last_pulse_index"] - meta["first_pulse_index"] + 1).to_numpy()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    sid = pulses["sensor_id"].to_numpy().astype(np.int64)
    return PulseChunk(sensor_id=sid, time=pulses["time"].to_numpy().astype(np.float64),
                      charge=pulses["charge"].to_numpy(), auxiliary=pulses["auxiliary"].to_numpy(),
                      x=geo[sid, 1], y=geo[sid, 2], z=geo[sid, 3], offsets=offsets,
                      event_id=meta["event_id"].to_numpy(), n_pulses=counts,
                      azimuth=meta["azimuth"].to_numpy(), zenith=meta["zenith"].to_numpy())


# ---------------------------------------------------------------- calibration (fixed bounds)
def test_calibration_pulses_per_event(calib):
    counts = calib["pulses"].group_by("event_id").len()["len"].to_numpy()
    assert len(counts) == CALIBRATION_EVENTS
    q = np.percentile(counts, [25, 50, 75])
    for got, want in zip(q, (48, 63, 89)):
        assert abs(got - want) <= 0.25 * want, (q, "quartiles must be within +-25% of 48/63/89")
    above = float(np.mean(counts > 1000))
    assert 0.003 <= above <= 0.03, above


def test_calibration_charge_and_first_time(calib):
    pulses = calib["pulses"]
    assert abs(float(pulses["charge"].median()) - 1.075) <= 0.2 * 1.075
    first = pulses.group_by("event_id").agg(pl.col("time").min())["time"].to_numpy()
    assert abs(float(np.median(first)) - 6129) <= 500


def test_calibration_plain_linefit(calib):
    from icezoo.recon import linefit

    chunk = _chunk(calib["root"])
    err = angular_error(linefit(chunk), angles_to_vector(chunk.azimuth, chunk.zenith))
    assert 1.0 <= float(err.mean()) <= 1.4, float(err.mean())


# ---------------------------------------------------------------- layout and dtypes
def test_layout_schema_and_dtypes(tmp_path):
    root = simulate(tmp_path / "d", 120, events_per_batch=50, seed=3, test=True, test_events=30)
    names = sorted(p.name for p in root.iterdir())
    assert names == ["sensor_geometry.csv", "simulator_config.json", "test", "test_meta.parquet",
                     "test_truth.parquet", "train", "train_meta.parquet", "train_truth.parquet"]
    assert sorted(p.name for p in (root / "train").iterdir()) == ["batch_1.parquet", "batch_2.parquet", "batch_3.parquet"]
    assert (root / "sensor_geometry.csv").read_bytes() == simulator._resource("sensor_geometry.csv").read_bytes()
    batch = pq.read_table(root / "train" / "batch_1.parquet")
    assert {f.name: str(f.type) for f in batch.schema} == {
        "sensor_id": "int16", "time": "int64", "charge": "double", "auxiliary": "bool", "event_id": "int64"}
    pandas_meta = json.loads(batch.schema.metadata[b"pandas"])
    assert pandas_meta["index_columns"] == ["event_id"]  # pandas.read_parquet restores it as the index
    df = pl.read_parquet(root / "train" / "batch_1.parquet")
    assert set(df.columns) == {"event_id", "sensor_id", "time", "charge", "auxiliary"}
    meta = pl.read_parquet(root / "train_meta.parquet")
    assert dict(meta.schema) == {"batch_id": pl.Int64, "event_id": pl.Int64, "first_pulse_index": pl.Int64,
                                 "last_pulse_index": pl.Int64, "azimuth": pl.Float64, "zenith": pl.Float64}
    test_meta = pl.read_parquet(root / "test_meta.parquet")
    assert test_meta.columns == ["batch_id", "event_id", "first_pulse_index", "last_pulse_index"]
    assert len(test_meta) == 30 and test_meta["event_id"].min() > meta["event_id"].max()
    # meta indices are rows of the batch file, last inclusive; pulses contiguous and time ordered
    for b in (1, 2, 3):
        part = meta.filter(pl.col("batch_id") == b)
        df = pl.read_parquet(root / "train" / f"batch_{b}.parquet")
        assert part["first_pulse_index"][0] == 0 and part["last_pulse_index"][-1] == len(df) - 1
        ev = df["event_id"].to_numpy()
        for row in part.iter_rows(named=True):
            sl = slice(row["first_pulse_index"], row["last_pulse_index"] + 1)
            assert (ev[sl] == row["event_id"]).all()
            assert (np.diff(df["time"].to_numpy()[sl]) >= 0).all()
    k = df["charge"].to_numpy() / 0.025
    assert (np.abs(k - np.rint(k)) < 1e-6).all() and k.min() >= 1 - 1e-6  # quantised to 0.025 PE
    assert df["sensor_id"].min() >= 0 and df["sensor_id"].max() < 5160
    truth = pl.read_parquet(root / "train_truth.parquet")
    assert {"event_id", "energy", "event_type", "vertex_x", "vertex_y", "vertex_z"} <= set(truth.columns)
    assert truth["event_id"].to_list() == meta["event_id"].to_list()
    assert len(pl.read_parquet(root / "test_truth.parquet")) == 30


def test_write_batch_roundtrip(tmp_path):
    path = tmp_path / "b.parquet"
    kaggle_layout.write_batch(path, [7, 7, 9], [1, 2, 5159], [6000, 6010, 9000], [1.0, 0.5, 2.25], [True, False, True])
    df = pl.read_parquet(path)
    assert df["event_id"].to_list() == [7, 7, 9] and df["sensor_id"].dtype == pl.Int16
    assert df["auxiliary"].to_list() == [True, False, True]


# ---------------------------------------------------------------- determinism and atomic writes
def test_same_seed_same_bytes(tmp_path):
    a = simulate(tmp_path / "a", 150, events_per_batch=100, seed=11, test=True, test_events=20)
    b = simulate(tmp_path / "b", 150, events_per_batch=100, seed=11, test=True, test_events=20)
    c = simulate(tmp_path / "c", 150, events_per_batch=100, seed=12)
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "train/batch_1.parquet").read_bytes() != (c / "train/batch_1.parquet").read_bytes()


def test_atomic_write(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(kaggle_layout, "write_meta", boom)
    with pytest.raises(RuntimeError):
        simulate(tmp_path / "out", 20, seed=0)
    assert os.listdir(tmp_path) == []  # neither the dataset nor a temporary directory is left
    monkeypatch.undo()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(IcezooError, match="already exists"):
        simulate(tmp_path / "full", 10)
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"


# ---------------------------------------------------------------- knobs
def test_config_knobs():
    with pytest.raises(IcezooError, match="bogus"):
        make_config(bogus=1)
    with pytest.raises(IcezooError, match="energy_min"):
        make_config(energy_min=1e5, energy_max=1e3)
    cfg = SimulatorConfig()
    assert cfg.type_fractions.sum() == pytest.approx(1.0)
    # the defaults docs/simulator.md and `icezoo simulate --help` state
    assert (cfg.energy_min, cfg.energy_max, cfg.spectral_index) == (100.0, 1e7, 1.9)
    assert (cfg.frac_through_going, cfg.frac_starting, cfg.frac_cascade) == (0.5, 0.2, 0.3)
    assert (cfg.noise, cfg.max_pulses, cfg.downgoing_excess, cfg.yield_scale) == (True, None, 0.0, 1.0)
    assert SimulatorConfig.model_json_schema()["additionalProperties"] is False


def test_event_type_mix_and_directions_exact():
    cfg = make_config(frac_through_going=0.2, frac_starting=0.3, frac_cascade=0.5, downgoing_excess=0.4)
    ev = simulator.simulate_events(cfg, 400, seed=5)
    assert np.bincount(ev["event_type"], minlength=3).tolist() == [80, 120, 200]
    down = float(np.mean(np.cos(ev["zenith"]) > 0))
    assert down == pytest.approx(0.5 + 0.4 / 2, abs=0.01)


def test_noise_off_and_max_pulses():
    quiet = simulator.simulate_events(make_config(noise=False), 200, seed=2)
    noisy = simulator.simulate_events(make_config(), 200, seed=2)
    assert not quiet["noise"].any() and noisy["noise"].mean() > 0.2
    assert np.median(quiet["counts"]) < np.median(noisy["counts"]) - 20
    capped = simulator.simulate_events(make_config(max_pulses=40), 200, seed=2)
    assert capped["counts"].max() <= 40


def test_high_qe_doms():
    det = simulator.detector()
    sid = np.arange(5160)
    hqe = det.qe == 1.35
    assert hqe.sum() == 400
    assert ((sid[hqe] // 60 >= 78) & (sid[hqe] % 60 >= 10)).all()
    assert (det.noise_rate[hqe] == 780e-9).all() and (det.noise_rate[~hqe] == 560e-9).all()


# ---------------------------------------------------------------- physics promises
def test_cascades_have_learnable_direction(calib):
    """Cascade light is peaked forward (Cherenkov angle around the shower axis): the HLC-charge
    centre of gravity seen from the true vertex points along the travel direction, clearly better
    than chance (pi/2)."""
    chunk = _chunk(calib["root"])
    truth = calib["truth"]
    cas = truth["event_type"].to_numpy() == "cascade"
    idx = chunk.event_index
    w = chunk.charge * ~chunk.auxiliary
    n = chunk.num_events
    sw = np.maximum(np.bincount(idx, w, n), 1e-9)
    cog = np.stack([np.bincount(idx, w * c, n) for c in (chunk.x, chunk.y, chunk.z)], 1) / sw[:, None]
    vertex = truth.select(["vertex_x", "vertex_y", "vertex_z"]).to_numpy()
    err = angular_error(vertex[cas] - cog[cas], angles_to_vector(chunk.azimuth[cas], chunk.zenith[cas]))
    assert float(np.nanmean(err)) < 1.47


def test_trigger_and_hlc(calib):
    """Every written event passed SMT8: at least 8 HLC (auxiliary=False) DOMs; noise is mostly SLC."""
    pulses = calib["pulses"]
    hlc_doms = pulses.filter(~pl.col("auxiliary")).group_by("event_id").agg(pl.col("sensor_id").n_unique())
    assert len(hlc_doms) == CALIBRATION_EVENTS and hlc_doms["sensor_id"].min() >= 8
    ev = simulator.simulate_events(make_config(), 100, seed=4)
    assert ev["auxiliary"][ev["noise"]].mean() > 0.95


def test_segment_bounds_dominate_every_dom(monkeypatch):
    """The faint-segment sampling is exact only if a segment's bound is at least the per-DOM
    thinning bound of each of its DOMs: check every DOM of every segment on a few hundred events
    of each type (a starting-track mix covers finite tracks and the hadronic cascades)."""
    real = simulator._sample_counts
    seen = {"doms": 0, "faint": 0}

    def checked(rng, seg, bmax, bound_fn):
        ev, sen = simulator._expand_segments(seg)
        bound = bound_fn(ev, sen)
        assert (bound <= np.repeat(bmax, seg["n"])).all()
        seen["doms"] += len(ev)
        seen["faint"] += int(seg["n"][bmax < simulator.FAINT_SEGMENT_PE].sum())
        return real(rng, seg, bmax, bound_fn)

    monkeypatch.setattr(simulator, "_sample_counts", checked)
    simulator.simulate_events(make_config(), 300, seed=7)
    simulator.simulate_events(make_config(frac_through_going=0, frac_starting=1, frac_cascade=0), 100, seed=7)
    assert seen["doms"] > 100_000 and seen["faint"] > 0.5 * seen["doms"]


def test_photo_electron_sampling_is_exact(monkeypatch):
    """Hit DOMs per source, averaged over repeated draws, match the exact expectation
    sum(1 - exp(-mu)) over all candidate DOMs (thinning and faint-segment sampling add no bias)."""
    rng = np.random.default_rng(5)
    cfg = make_config()
    m = 200
    az, ze, u, energy = simulator._draw_truth(rng, cfg, m, np.repeat(np.arange(20), m // 20))
    pos, vdir = simulator._vertices(rng, cfg, m), -u
    e_mu = 0.7 * energy
    photons = energy * simulator.CASCADE_M_PER_GEV * simulator.MUON_PHOTONS_PER_M

    def sources(r):
        return (simulator._track_sources(r, pos, vdir, e_mu, np.zeros(m), simulator.muon_range(e_mu), 1.0),
                simulator._cascade_sources(r, pos, vdir, photons))

    reps = 40
    hits = np.array([[(s[2] > 0).sum() for s in sources(np.random.default_rng(100 + r))] for r in range(reps)])
    mean, err = hits.mean(0), hits.std(0, ddof=1) / np.sqrt(reps)
    # the exact expectation: every candidate DOM of every segment, mu computed as in the simulator
    kept = {}

    def every_dom(rng_, seg, bmax, bound_fn):
        ev, sen = simulator._expand_segments(seg)
        bound = bound_fn(ev, sen)
        on = np.flatnonzero(bound > 0)  # off the track: never sampled
        return ev[on], sen[on], np.ones(len(on), dtype=np.int64), bound[on]

    def record(rng_, n_b, mu, bound):
        kept.setdefault("mu", []).append(mu.astype(np.float64))
        return n_b

    monkeypatch.setattr(simulator, "_sample_counts", every_dom)
    monkeypatch.setattr(simulator, "_thinned_counts", record)
    sources(None)
    exact = np.array([(1.0 - np.exp(-mu)).sum() for mu in kept["mu"]])
    assert (np.abs(mean - exact) < 4 * err).all(), (mean, err, exact)


# ---------------------------------------------------------------- command line
def test_cli_simulate_and_linefit(tmp_path, capsys):
    from icezoo.cli.main import main

    out = tmp_path / "sim"
    main(["simulate", "--events", "60", "--out", str(out), "--test", "--test-events", "20", "--seed", "2"])
    assert (out / "train_meta.parquet").is_file() and (out / "test_meta.parquet").is_file()
    main(["linefit", "--data", str(out)])
    assert "mean angular error" in capsys.readouterr().out
    pred = tmp_path / "pred.csv"
    main(["linefit", "--data", str(out), "--split", "test", "--improved", "--out", str(pred)])
    lines = pred.read_text().splitlines()
    assert lines[0] == "event_id,azimuth,zenith" and len(lines) == 21
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # errors: one line, exit code 2
    with pytest.raises(SystemExit) as exc:
        main(["linefit", "--data", str(out), "--out", str(tmp_path)])
    assert exc.value.code == 2 and "is a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--events", "5", "--out", str(out)])
    assert exc.value.code == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--events", "5", "--out", str(tmp_path / "x"), "--energy-min", "-1"])
    assert exc.value.code == 2 and "energy_min" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--events", "5", "--out", str(tmp_path / "x"), "--test", "--test-events", "0"])
    assert exc.value.code == 2 and "--test-events must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
