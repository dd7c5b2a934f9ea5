"""The simulator: calibration against the Kaggle figures (fixed bounds, issues 4 and 11), the exact
Kaggle layout and dtypes, determinism, atomic writes, knobs and the physics it promises (issue 11:
kinematics, stochastic losses, layered-ice timing, SMT3, noise bursts and afterpulses, DOM
efficiencies, the launch readout)."""

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
from icezoo.data.simulator import SimulatorConfig, candidates, events, keys, kinematics, light, make_config, readout, simulate
from icezoo.resources import geometry_csv

CALIBRATION_EVENTS = 3000


def _pulses(root: Path, split: str = "train") -> pl.DataFrame:
    files = sorted((root / split).glob("batch_*.parquet"), key=lambda p: int(p.stem.split("_")[1]))
    return pl.concat([pl.read_parquet(f).with_columns(pl.lit(int(f.stem.split("_")[1])).alias("batch")) for f in files])


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> dict:
    """3,000 events with default knobs (written once per module) plus what the tests measure."""
    root = simulate(tmp_path_factory.mktemp("calib") / "sim", CALIBRATION_EVENTS, events_per_batch=1500, seed=0)
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
# Bounds are never loosened once set: issue 4 (quartiles +-25%, 0.3-3% above 1000 pulses, charge
# median +-20%, first-pulse median +-500 ns, LineFit [1.0, 1.4]); issue 11 tightened and added
# (mean +-15%, quartiles +-20%, charge quartiles +-15%, charge mean +-25%, minimum below 15).
def test_calibration_pulses_per_event(calib):
    counts = calib["pulses"].group_by("event_id").len()["len"].to_numpy()
    assert len(counts) == CALIBRATION_EVENTS
    assert abs(counts.mean() - 164) <= 0.15 * 164, counts.mean()
    q = np.percentile(counts, [25, 50, 75])
    for got, want in zip(q, (48, 63, 89)):
        assert abs(got - want) <= 0.20 * want, (q, "quartiles must be within +-20% of 48/63/89")
    above = float(np.mean(counts > 1000))
    assert 0.003 <= above <= 0.03, above


@pytest.mark.slow
def test_calibration_smallest_event():
    """Kaggle's smallest event (5 pulses) is the minimum over 132M events; a 3,000-event sample cannot
    show the tail that reaches it, because every event carries ~24.6 noise pulses (physics.md's
    rates over its readout window; its physics pulses go down to 3). The bound is checked at the
    scale of one Kaggle batch file, 200,000 events (default knobs, seed 0: smallest 13; seeds 1 and
    123 gave 15 and 14, i.e. about one event below 15 per file; docs/simulator.md)."""
    ev = simulator.simulate_events(make_config(), 200_000, seed=0)
    counts = ev["counts"]
    assert counts.min() < 15, counts.min()
    noise = np.add.reduceat(ev["noise"].astype(np.int64), np.cumsum(counts) - counts)
    assert (counts - noise).min() <= 5  # SMT3 events trigger on a handful of physics pulses
    assert 20 <= noise.mean() <= 30, noise.mean()


def test_calibration_charge_and_first_time(calib):
    charge = calib["pulses"]["charge"].to_numpy()
    q = np.percentile(charge, [25, 50, 75])
    for got, want in zip(q, (0.775, 1.075, 1.775)):
        assert abs(got - want) <= 0.15 * want, (q, "charge quartiles must be within +-15% of 0.775/1.075/1.775")
    assert abs(charge.mean() - 3.9) <= 0.25 * 3.9, charge.mean()
    first = calib["pulses"].group_by("event_id").agg(pl.col("time").min())["time"].to_numpy()
    assert abs(float(np.median(first)) - 6129) <= 500


def test_calibration_plain_linefit(calib):
    """Plain LineFit against Kaggle's ~1.21. Issue 4 bounded the mean to [1.0, 1.4] when the mix was
    hand-set at 70% tracks; with issue 23's physics mix (61% cascades, on which LineFit is near
    chance) the same physics gives 1.43-1.45, so the upper bound of the mean is 1.5 now (the mix moved
    it, not the per-event physics: docs/simulator.md, "Event-type mix"). What the old bound held fixed
    is held per type instead: tracks clearly better than cascades, through-going ones below 1.2."""
    from icezoo.recon import linefit

    chunk = _chunk(calib["root"])
    err = angular_error(linefit(chunk), angles_to_vector(chunk.azimuth, chunk.zenith))
    assert 1.0 <= float(err.mean()) <= 1.5, float(err.mean())
    kind = dict(zip(calib["truth"]["event_id"].to_list(), calib["truth"]["event_type"].to_list()))
    kind = np.array([kind[int(e)] for e in chunk.event_id])
    per = {t: float(err[kind == t].mean()) for t in simulator.EVENT_TYPES}
    assert per["through_going_track"] < 1.2 and per["through_going_track"] < per["starting_track"] < per["cascade"], per


# ---------------------------------------------------------------- layout and dtypes
def test_layout_schema_and_dtypes(tmp_path):
    root = simulate(tmp_path / "d", 120, events_per_batch=50, seed=3, test=True, test_events=30)
    names = sorted(p.name for p in root.iterdir())
    assert names == ["sensor_geometry.csv", "simulator_config.json", "test", "test_meta.parquet",
                     "test_truth.parquet", "train", "train_meta.parquet", "train_truth.parquet"]
    assert sorted(p.name for p in (root / "train").iterdir()) == ["batch_1.parquet", "batch_2.parquet", "batch_3.parquet"]
    assert (root / "sensor_geometry.csv").read_bytes() == geometry_csv().read_bytes()
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



def test_atomic_directory_builds_beside_and_renames(tmp_path):
    """The one build-then-rename helper of the simulator and the default dataset: the target appears
    complete (mode 0755) or not at all; ``replace`` swaps an existing one; without it a target that
    filled up meanwhile makes the rename fail, and no temporary directory is left in any case."""
    from icezoo.core.atomic import atomic_directory

    target = tmp_path / "set"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            assert tmp.parent == tmp_path and tmp.is_dir() and not target.exists()
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1" and (target.stat().st_mode & 0o777) == 0o755
    with atomic_directory(target, replace=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(os.listdir(target)) == ["b.txt"]
    with pytest.raises(OSError):
        with atomic_directory(target) as tmp:
            (tmp / "c.txt").write_text("3")
    assert sorted(os.listdir(target)) == ["b.txt"] and os.listdir(tmp_path) == ["set"]


def test_default_dataset_keeps_a_concurrent_build(tmp_path, monkeypatch):
    """Two processes building the same default dataset: the one that renames second keeps the
    first one's set and leaves no temporary directory; any other failure still propagates."""
    from icezoo.engine import default_data

    final = tmp_path / "datasets" / "sim-x"

    def racing(out, *args, **kwargs):  # the other builder finishes while this one simulates
        final.mkdir(parents=True)
        (final / default_data.SPLIT_FILE).write_text("{}")
        (Path(out) / "train").mkdir()

    monkeypatch.setattr(simulator, "simulate", racing)
    assert default_data.make_dataset(final, 100, 100, 100, seed=0, log=None) == final
    assert (final / default_data.SPLIT_FILE).read_text() == "{}" and not (final / "train").exists()
    assert os.listdir(final.parent) == ["sim-x"]

    def failing(out, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(simulator, "simulate", failing)
    with pytest.raises(OSError, match="No space"):
        default_data.make_dataset(tmp_path / "datasets" / "sim-y", 100, 100, 100, seed=0, log=None)
    assert os.listdir(final.parent) == ["sim-x"]

# ---------------------------------------------------------------- knobs
def test_config_knobs():
    with pytest.raises(IcezooError, match="bogus"):
        make_config(bogus=1)
    with pytest.raises(IcezooError, match="energy_min"):
        make_config(energy_min=1e5, energy_max=1e3)
    cfg = SimulatorConfig()
    assert cfg.type_fractions.sum() == pytest.approx(1.0)
    # the defaults docs/simulator.md and `icezoo simulate --help` state
    # issue 23: the spectrum recalibrated for the physics mix (was 3e6, 1.57 with the hand-set mix)
    assert (cfg.energy_min, cfg.energy_max, cfg.spectral_index) == (10.0, 1e7, 1.71)
    assert (cfg.spectral_break, cfg.spectral_index_low) == (100.0, -1.0)
    # issue 23: the physics mix (docs/simulator.md, "Event-type mix"), was the hand-set 0.5 / 0.2 / 0.3
    assert (cfg.frac_through_going, cfg.frac_starting, cfg.frac_cascade) == (0.13, 0.26, 0.61)
    assert (cfg.noise, cfg.max_pulses, cfg.downgoing_excess, cfg.yield_scale) == (True, None, 0.0, 1.0)
    assert (cfg.kinematics, cfg.stochastic, cfg.layered_timing, cfg.deepcore_trigger, cfg.noise_bursts,
            cfg.afterpulses, cfg.launch_readout, cfg.dom_efficiency_spread) == (True,) * 7 + (0.1,)
    legacy = make_config(**simulator.LEGACY_KNOBS)
    assert legacy.type_fractions.tolist() == pytest.approx([0.5, 0.2, 0.3])  # the November 2026 mix
    assert not (legacy.kinematics or legacy.stochastic or legacy.layered_timing or legacy.deepcore_trigger
                or legacy.noise_bursts or legacy.afterpulses or legacy.launch_readout)
    assert SimulatorConfig.model_json_schema()["additionalProperties"] is False


def test_physics_mix_follows_from_its_inputs():
    """The default mix is the arithmetic of docs/simulator.md from the constants (flavours 1:1:1,
    sigma_NC/sigma_CC, tau -> mu branching, through-going per contained): recomputed here by hand, and
    each input moves it the way the physics says."""
    from icezoo.data.simulator import config, constants

    def mix(r, b, k, nc_share=False):
        cc, nc = 1 / (1 + r), r / (1 + r)
        cascade, starting = cc + 3 * nc + cc * (1 - b), cc * (1 + b)
        rates = np.array([k * starting, starting, cascade])
        return 3 * nc / cascade if nc_share else rates / rates.sum()

    want = mix(0.31, 0.174, 0.5)
    assert want.round(2).tolist() == [0.13, 0.26, 0.61]
    assert list(simulator.DEFAULT_MIX.values()) == want.round(2).tolist()
    assert constants.NC_FRACTION_CASCADES == pytest.approx(mix(0.31, 0.174, 0.5, nc_share=True)) == pytest.approx(0.3374, abs=1e-4)
    assert mix(0.4, 0.174, 0.5)[2] > want[2] > mix(0.31, 0.3, 0.5)[2]  # more NC: more cascades; more tau->mu: fewer
    assert mix(0.31, 0.174, 1.0)[0] > want[0]  # a deeper interaction volume: more through-going muons
    assert config.MIXES["legacy"] == {"frac_through_going": 0.5, "frac_starting": 0.2, "frac_cascade": 0.3}
    with pytest.raises(IcezooError, match="unknown event-type mix 'bogus'"):
        simulator.mix_knobs("bogus")


def test_default_dataset_keys_by_version_and_mix(tmp_path, monkeypatch):
    """The cached default set's directory names the simulator version (a bump never reuses a stale
    cache) and, for the legacy mix (ICEZOO_SIM_MIX=legacy), the mix; the mix reaches the simulator."""
    from icezoo.engine import default_data

    seen = []

    def fake(out, n, **kwargs):
        seen.append({k: v for k, v in kwargs.items() if k.startswith("frac_")})
        (Path(out) / "train").mkdir()

    monkeypatch.setattr(simulator, "simulate", fake)
    monkeypatch.delenv("ICEZOO_SIM_MIX", raising=False)
    a = default_data.default_dataset(100, 100, 100, seed=0, root=tmp_path, log=None)
    monkeypatch.setenv("ICEZOO_SIM_MIX", "legacy")
    b = default_data.default_dataset(100, 100, 100, seed=0, root=tmp_path, log=None)
    assert a.path.name == f"sim-{simulator.SIMULATOR_VERSION}-seed0-n100+100-b100"
    assert b.path.name == a.path.name + "-mixlegacy"
    assert seen == [simulator.MIXES["physics"], simulator.MIXES["legacy"]]
    info = json.loads((b.path / default_data.SPLIT_FILE).read_text())
    assert info["event_mix"] == {"through_going_track": 0.5, "starting_track": 0.2, "cascade": 0.3}
    monkeypatch.setenv("ICEZOO_SIM_MIX", "bogus")
    with pytest.raises(IcezooError, match="ICEZOO_SIM_MIX: unknown event-type mix 'bogus'"):
        default_data.default_dataset(100, 100, 100, seed=0, root=tmp_path, log=None)


def test_event_type_mix_and_directions_exact():
    cfg = make_config(frac_through_going=0.2, frac_starting=0.3, frac_cascade=0.5, downgoing_excess=0.4)
    ev = simulator.simulate_events(cfg, 400, seed=5)
    assert np.bincount(ev["event_type"], minlength=3).tolist() == [80, 120, 200]
    down = float(np.mean(np.cos(ev["zenith"]) > 0))
    assert down == pytest.approx(0.5 + 0.4 / 2, abs=0.01)


def test_noise_off_and_max_pulses():
    quiet = simulator.simulate_events(make_config(noise=False), 200, seed=2)
    noisy = simulator.simulate_events(make_config(), 200, seed=2)
    # noise pulses per event at the [P] rates (~24); a share of all pulses (> 0.2 before issue 23)
    # would depend on how bright the event-type mix is
    assert not quiet["noise"].any() and 15 <= noisy["noise"].sum() / 200 <= 35
    assert np.median(quiet["counts"]) < np.median(noisy["counts"]) - 15
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
    """Every written event passed SMT8 (at least 8 HLC DOMs) or SMT3 (3 HLC DeepCore fiducial DOMs);
    both occur, SMT3 alone with fewer than 8 HLC DOMs; noise is mostly SLC. (The trigger sees the
    physics launches; a noise hit or afterpulse that opens a DOM's launch just before its light can
    take away its local coincidence, in a few events per thousand: checked noise-free below.)"""
    pulses = calib["pulses"].join(calib["truth"].select(["event_id", "trigger"]), on="event_id")
    fid = simulator.detector().deepcore_fiducial
    hlc = pulses.filter(~pl.col("auxiliary")).with_columns(
        pl.col("sensor_id").map_elements(lambda s: bool(fid[s]), return_dtype=pl.Boolean).alias("fid"))
    per = hlc.group_by("event_id").agg(pl.col("sensor_id").n_unique().alias("doms"),
                                       pl.col("sensor_id").filter(pl.col("fid")).n_unique().alias("fid_doms"))
    # an event whose every launch lost its HLC flag to noise (seen once in 3,000: an SMT3 event with
    # 8 physics pulses) has no HLC pulse: it counts with 0 DOMs
    per = calib["truth"].select(["event_id", "trigger"]).join(per, on="event_id", how="left").fill_null(0)
    assert len(per) == CALIBRATION_EVENTS
    smt8 = (per["trigger"].to_numpy() & 1) > 0
    assert (per["doms"].to_numpy()[smt8] >= 8).mean() > 0.99
    # SMT3-only events have 3-4 HLC DOMs, so one flag lost to noise breaks them: 2 of 156 with issue
    # 23's mix (the bound was 0.99 on ~110 events); the noise-free check below is exact for both
    assert (per["fid_doms"].to_numpy()[~smt8] >= 3).mean() > 0.98
    assert (~smt8).sum() > 0.01 * CALIBRATION_EVENTS and (per["doms"].to_numpy()[~smt8] < 8).any()
    quiet = simulator.simulate_events(make_config(noise=False, afterpulses=False), 300, seed=4)
    starts = np.cumsum(quiet["counts"]) - quiet["counts"]
    for i in np.flatnonzero(quiet["trigger"]):
        sl = slice(starts[i], starts[i] + quiet["counts"][i])
        hit = np.unique(quiet["sensor_id"][sl][~quiet["auxiliary"][sl]])
        assert len(hit) >= 8 if quiet["trigger"][i] & 1 else fid[hit].sum() >= 3
    assert (quiet["trigger"] == 2).any()  # the exact check saw SMT3-only events
    ev = simulator.simulate_events(make_config(), 100, seed=4)
    assert ev["auxiliary"][ev["noise"]].mean() > 0.95


def test_segment_bounds_dominate_every_dom(monkeypatch):
    """The faint-segment sampling is exact only if a segment's bound is at least the per-DOM
    thinning bound of each of its DOMs: check every DOM of every segment on a few hundred events
    of each type (a starting-track mix covers finite tracks and the hadronic cascades)."""
    real = light.sample_counts
    seen = {"doms": 0, "faint": 0}

    def checked(rng, seg, bmax, bound_fn):
        ev, sen = candidates.expand_segments(seg)
        bound = bound_fn(ev, sen)
        assert (bound <= np.repeat(bmax, seg["n"])).all()
        seen["doms"] += len(ev)
        seen["faint"] += int(seg["n"][bmax < simulator.FAINT_SEGMENT_PE].sum())
        return real(rng, seg, bmax, bound_fn)

    monkeypatch.setattr(light, "sample_counts", checked)
    simulator.simulate_events(make_config(), 300, seed=7)
    simulator.simulate_events(make_config(frac_through_going=0, frac_starting=1, frac_cascade=0), 100, seed=7)
    assert seen["doms"] > 100_000 and seen["faint"] > 0.5 * seen["doms"]


def test_photo_electron_sampling_is_exact(monkeypatch):
    """Hit DOMs per source, averaged over repeated draws, match the exact expectation
    sum(1 - exp(-mu)) over all candidate DOMs (thinning and faint-segment sampling add no bias)."""
    rng = np.random.default_rng(5)
    cfg = make_config()
    m = 200
    az, ze, u, energy = candidates.draw_truth(rng, cfg, m, np.repeat(np.arange(20), m // 20))
    pos, vdir = candidates.draw_vertices(rng, cfg, m), -u
    e_mu = 0.7 * energy
    photons = energy * simulator.CASCADE_M_PER_GEV * simulator.MUON_PHOTONS_PER_M

    def sources(r):
        return (light.track_sources(r, pos, vdir, e_mu, np.zeros(m), simulator.muon_range(e_mu), 1.0),
                light.cascade_sources(r, pos, vdir, photons))

    reps = 40
    hits = np.array([[(s[2] > 0).sum() for s in sources(np.random.default_rng(100 + r))] for r in range(reps)])
    mean, err = hits.mean(0), hits.std(0, ddof=1) / np.sqrt(reps)
    # the exact expectation: every candidate DOM of every segment, mu computed as in the simulator
    kept = {}

    def every_dom(rng_, seg, bmax, bound_fn):
        ev, sen = candidates.expand_segments(seg)
        bound = bound_fn(ev, sen)
        on = np.flatnonzero(bound > 0)  # off the track: never sampled
        return ev[on], sen[on], np.ones(len(on), dtype=np.int64), bound[on]

    def record(rng_, n_b, mu, bound):
        kept.setdefault("mu", []).append(mu.astype(np.float64))
        return n_b

    monkeypatch.setattr(light, "sample_counts", every_dom)
    monkeypatch.setattr(light, "thinned_counts", record)
    sources(None)
    exact = np.array([(1.0 - np.exp(-mu)).sum() for mu in kept["mu"]])
    assert (np.abs(mean - exact) < 4 * err).all(), (mean, err, exact)


# ---------------------------------------------------------------- issue 11: the physics added
def test_opening_angle_follows_the_formula():
    """The CC muon / cascade axis leaves at the kinematic angle: its median per energy band matches
    0.7 deg (E/TeV)^-0.7, deflections are exact, and written events carry it (zero without kinematics)."""
    rng = np.random.default_rng(0)
    for e in (30.0, 300.0, 3e3, 3e4):
        theta = kinematics.kinematic_angles(rng, np.full(20000, e))
        want = np.radians(0.7) * (e / 1000.0) ** -0.7
        assert np.median(theta) == pytest.approx(want, rel=0.03), e
    u = angles_to_vector(rng.uniform(0, 2 * np.pi, 500), np.arccos(rng.uniform(-1, 1, 500)))
    theta = rng.uniform(0, 1, 500)
    v = kinematics.deflect(u, theta, rng.uniform(0, 2 * np.pi, 500))
    assert np.allclose(np.einsum("ij,ij->i", u, v), np.cos(theta)) and np.allclose(np.linalg.norm(v, axis=1), 1)
    cfg = make_config(frac_through_going=0, frac_starting=1, frac_cascade=0, noise=False)
    ev = simulator.simulate_events(cfg, 150, seed=3)
    ratio = ev["opening_angle"] / simulator.kinematic_median_angle(ev["energy"])
    assert 0.7 < np.median(ratio) < 1.4
    # visible energy: the muon takes (1 - y), the hadronic cascade 0.88 y of the neutrino's energy
    assert np.allclose(ev["muon_energy"] + ev["cascade_energy"] / simulator.HADRONIC_FACTOR, ev["energy"])
    off = simulator.simulate_events(make_config(kinematics=False, frac_through_going=0, frac_starting=0,
                                                frac_cascade=1, noise=False), 50, seed=3)
    assert (off["opening_angle"] == 0).all() and np.allclose(off["cascade_energy"], off["energy"])


def test_cascade_visible_energy_and_nc_share():
    """Cascade events: CC (all energy visible, hadronic part at 0.88) or NC (only 0.88 y E), 1/3 NC."""
    rng = np.random.default_rng(1)
    cfg = make_config(frac_through_going=0, frac_starting=0, frac_cascade=1)
    zbin = np.repeat(np.arange(20), 100)
    chunk = events.simulate_chunk(rng, cfg, 2, zbin)
    frac = chunk["cascade_energy"] / chunk["energy"]
    y = chunk["inelasticity"]
    cc = np.isclose(frac, 1.0 - y + simulator.HADRONIC_FACTOR * y)
    nc = np.isclose(frac, simulator.HADRONIC_FACTOR * y)
    assert (cc | nc).all() and nc.any() and cc.any()


def test_stochastic_loss_spectrum_and_range():
    """Losses above v_min follow dN/dv ~ 1/v (log v uniform), come at b ln(1/v_min) per metre, the
    energy falls along the track and the mean stopping distance is the mean range."""
    rng = np.random.default_rng(2)
    n = 40000
    e0 = np.full(n, 1e5)
    owner, s, lost, stop, v_min = simulator.stochastic_losses(rng, e0, np.zeros(n), np.full(n, 20.0))
    v = lost / (e0[owner] - simulator.MUON_LOSS_A * s)  # ~ the fraction (little energy is lost before)
    x = np.log(v) / np.log(v_min[0])  # uniform on (0, 1] for a 1/v spectrum
    hist = np.histogram(x, bins=10, range=(0, 1))[0]
    assert abs(hist - hist.mean()).max() < 5 * np.sqrt(hist.mean()), hist
    rate = len(owner) / (n * 20.0)
    assert rate == pytest.approx(simulator.MUON_LOSS_B * np.log(1 / v_min[0]), rel=0.05)
    # long tracks: energies before successive losses fall, the stop follows the mean range
    e0 = np.full(3000, 2000.0)
    owner, s, lost, stop, _ = simulator.stochastic_losses(rng, e0, np.zeros(3000), np.full(3000, 1e5))
    same = owner[1:] == owner[:-1]
    assert (s[1:][same] >= s[:-1][same]).all() and (stop >= 0).all()
    assert (lost[1:][same] > 0).all()
    # the vectorised composition against a step-by-step muon: same stopping-distance distribution
    v_min, a = 0.5 / 2000.0, simulator.MUON_LOSS_A
    rate, b_c = simulator.MUON_LOSS_B * np.log(1 / v_min), simulator.MUON_LOSS_B * v_min
    ref = []
    for _ in range(600):
        e, x = 2000.0, 0.0
        while True:
            gap = rng.exponential(1 / rate)
            e_next = simulator.muon_energy_after(np.array([e]), np.array([gap]), b_c)[0]
            if e_next <= 0:
                ref.append(x + np.log1p(e * b_c / a) / b_c)
                break
            x += gap
            e = e_next * (1 - v_min ** (1 - rng.random()))
    ref = np.array(ref)
    assert abs(stop.mean() - ref.mean()) < 4 * np.hypot(stop.std() / np.sqrt(len(stop)), ref.std() / np.sqrt(len(ref)))
    assert stop.std() > 0.1 * stop.mean()  # the range fluctuates: stochastic, not continuous
    assert 0.8 < stop.mean() / simulator.muon_range(np.array([2000.0]))[0] < 1.0  # straggling shortens it
    off = simulator.simulate_events(make_config(stochastic=False, frac_through_going=0, frac_starting=1,
                                                frac_cascade=0, noise=False), 50, seed=1)
    assert np.allclose(off["track_length"], simulator.muon_range(off["muon_energy"]))


def test_layered_timing_dust_is_late():
    """The Pandel delay scales with the local ice: light through the dust layer (depth ~2050 m) is
    later than through clear deep ice (~2300 m); bulk timing is the same at both depths."""
    det = simulator.detector()
    dist = np.full(4, 40.0, dtype=np.float32)
    cos_eta = np.zeros(4, dtype=np.float32)
    z_dust, z_clear = np.float32(simulator.SURFACE_Z - 2050), np.float32(simulator.SURFACE_Z - 2300)
    z = np.array([z_dust, z_dust, z_clear, z_clear], dtype=np.float32)
    sen = np.zeros(4, dtype=np.int64)
    for layered in (True, False):
        ctx = light.LightContext(simulator.dom_response(0, 0.0), layered)
        _, _, shape, scale = light.light_terms(dist, cos_eta, z, z, sen, ctx)
        mean = shape * scale
        if layered:
            assert mean[0] > 1.5 * mean[2]
        else:
            assert mean[0] == pytest.approx(mean[2])
    assert det.scat_ref == pytest.approx(32.4, abs=0.1)


def test_smt3_triggers_events_with_few_pulses():
    """Low-energy cascades in DeepCore trigger SMT3 with few hit DOMs; without the DeepCore trigger
    the same candidates trigger less and every written event has >= 8 HLC DOMs."""
    det = simulator.detector()
    assert det.deepcore_fiducial.sum() == 8 * 50 + 7 * 22
    cfg = make_config(frac_through_going=0, frac_starting=0, frac_cascade=1, energy_min=10, energy_max=60,
                      noise=False)
    rng = np.random.default_rng(4)
    zbin = np.repeat(np.arange(20), 200)
    on = events.simulate_chunk(rng, cfg, 2, zbin)
    off = events.simulate_chunk(np.random.default_rng(4), cfg.model_copy(update={"deepcore_trigger": False}), 2, zbin)
    assert len(on["candidate"]) > 2 * len(off["candidate"])
    assert (on["trigger"] == 2).any()
    few = on["counts"][on["trigger"] == 2]
    assert few.min() < 8


def test_noise_rates_bursts_and_afterpulses():
    """Dark noise keeps the 560 / 780 Hz of physics.md; with bursts the hits cluster on a DOM (3-4
    within a few us), without them they are Poisson. Afterpulses: 0.06 per PE, 6 +- 2 us later."""
    det = simulator.detector()
    lo = np.arange(200, dtype=np.int64) * 10**6
    hi = lo + 100_000  # 200 windows of 100 us
    for bursts in (True, False):
        ev, sen, t = simulator.noise_hits(np.random.default_rng(5), lo, hi, bursts)
        expect = det.noise_rate.sum() * 200 * 100_000
        assert len(ev) == pytest.approx(expect, rel=0.03)
        o = np.lexsort((t, sen, ev))
        close = (ev[o][1:] == ev[o][:-1]) & (sen[o][1:] == sen[o][:-1]) & (np.diff(t[o]) < 10_000)
        if bursts:
            # burst hits are (560 - 250) / 560 of all; (3.5 - 1) / 3.5 of them follow one within 10 us
            assert close.sum() == pytest.approx(310 / 560 * 2.5 / 3.5 * len(ev), rel=0.05)
        else:
            assert close.sum() < 0.01 * len(ev)
    rng = np.random.default_rng(6)
    n_pe = rng.integers(1, 20, 50_000).astype(float)
    src, t_ap = simulator.afterpulse_times(rng, np.zeros(50_000, dtype=np.int64), n_pe)
    assert len(src) == pytest.approx(0.06 * n_pe.sum(), rel=0.03)
    assert t_ap.mean() == pytest.approx(6000, rel=0.02) and t_ap.std() == pytest.approx(2000, rel=0.05)
    ev = simulator.simulate_events(make_config(), 100, seed=8)
    assert ev["afterpulse"].any()
    assert not simulator.simulate_events(make_config(afterpulses=False), 50, seed=8)["afterpulse"].any()


def test_dom_efficiency_fixed_per_dom_and_seed():
    a, b, c = simulator.dom_response(3, 0.1), simulator.dom_response(3, 0.1), simulator.dom_response(4, 0.1)
    assert a.efficiency.std() == pytest.approx(0.1, rel=0.1) and np.array_equal(a.efficiency, b.efficiency)
    assert not np.array_equal(a.efficiency, c.efficiency)
    assert (simulator.dom_response(3, 0.0).efficiency == 1).all()
    det = simulator.detector()
    assert np.allclose(a.qe32, det.qe * a.efficiency, rtol=1e-6)
    assert (a.band_pref >= det.band_max(a.dom_pref32) - 1e-12).all()


def test_launch_readout():
    """An HLC launch is unfolded into ATWD (50 ns) and FADC (75 ns) bins; an isolated (SLC) launch
    is one pulse of its first 75 ns; a PE after the launch's 6.4 us opens a new launch."""
    ev = np.zeros(9, dtype=np.int64)
    sen = np.array([10, 10, 10, 10, 11, 30, 30, 30, 30], dtype=np.int64)
    t = np.array([0, 5, 60, 600, 100, 1000, 1050, 1200, 9000], dtype=np.int64)
    q = np.ones(9)
    key = keys.pack_keys(ev, sen, t)
    assert (np.diff(key) > 0).all()
    out = readout.readout_pulses(key, q, np.zeros(9, np.int8), launch=True)
    got = list(zip(out["sen"].tolist(), out["t"].tolist(), out["q"].tolist(), out["hlc"].tolist()))
    assert got == [(10, 0, 2.0, True), (10, 60, 1.0, True), (10, 600, 1.0, True), (11, 100, 1.0, True),
                   (30, 1000, 2.0, False), (30, 9000, 1.0, False)]
    legacy = readout.readout_pulses(key, q, np.zeros(9, np.int8), launch=False)
    assert len(legacy["t"]) == 8  # 10 ns grouping: only 0 and 5 merge
    # sorted merging of the physics PEs with noise and afterpulses keeps the key order
    k, v = keys.merge_sorted(np.array([1, 3, 3, 7]), np.array([0, 3, 8]), (np.arange(4), np.arange(10, 13)))
    assert k.tolist() == [0, 1, 3, 3, 3, 7, 8] and v.tolist() == [10, 0, 1, 2, 11, 3, 12]


def test_cli_knobs_reach_the_config(tmp_path):
    from icezoo.cli.main import main

    main(["simulate", "--events", "20", "--out", str(tmp_path / "a"), "--no-stochastic", "--no-bursts",
          "--dom-efficiency-spread", "0", "--seed", "1"])
    cfg = json.loads((tmp_path / "a" / "simulator_config.json").read_text())
    assert (cfg["stochastic"], cfg["noise_bursts"], cfg["dom_efficiency_spread"], cfg["kinematics"]) == (False, False, 0.0, True)
    main(["simulate", "--events", "20", "--out", str(tmp_path / "b"), "--legacy", "--deepcore", "--seed", "1"])
    cfg = json.loads((tmp_path / "b" / "simulator_config.json").read_text())
    assert cfg["deepcore_trigger"] and not cfg["kinematics"] and cfg["energy_min"] == 100.0
    assert (cfg["frac_through_going"], cfg["frac_starting"], cfg["frac_cascade"]) == (0.5, 0.2, 0.3)
    # --mix: the legacy mix one flag away on today's physics; an explicit --frac-* still applies after it
    main(["simulate", "--events", "20", "--out", str(tmp_path / "c"), "--mix", "legacy", "--frac-cascade", "0.4"])
    cfg = json.loads((tmp_path / "c" / "simulator_config.json").read_text())
    assert (cfg["frac_through_going"], cfg["frac_starting"], cfg["frac_cascade"], cfg["kinematics"]) == (0.5, 0.2, 0.4, True)
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--events", "20", "--out", str(tmp_path / "d"), "--mix", "bogus"])
    assert exc.value.code == 2 and not (tmp_path / "d").exists()


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


def test_a_track_through_a_string_axis_keeps_its_nearest_segment():
    """Tracks crossing a string's axis exactly: the closest-approach distance is >= 0 (rounding made it
    a hair negative, its square root NaN, and the nearest, brightest segment was silently dropped)."""
    det = simulator.detector()
    rng = np.random.default_rng(0)
    n = 2000
    st = rng.integers(0, len(det.string_x), n)
    cz, phi = rng.uniform(-1, 1, n), rng.uniform(0, 2 * np.pi, n)
    v = np.stack([np.sqrt(1 - cz**2) * np.cos(phi), np.sqrt(1 - cz**2) * np.sin(phi), cz], 1)
    crossing = np.stack([det.string_x[st], det.string_y[st], rng.uniform(-400, 400, n)], 1)
    pos = crossing - v * rng.uniform(-300, 300, n)[:, None]
    seg = candidates.track_candidates(pos, v, np.full((n, len(simulator.BAND_EDGES) - 1), 200.0))
    assert np.all(seg["d2"] >= 0)
    assert set(zip(range(n), st.tolist())) <= set(zip(seg["ev"].tolist(), seg["st"].tolist()))
    d_lo, _, _ = light.segment_bound_terms(seg, light.light_context().resp)
    assert np.all(np.isfinite(d_lo))  # a NaN bound put the segment in neither the bright nor the faint set


def test_keep_freed_memory_takes_on_glibc():
    """The allocator setting behind the simulator's and predict's speed (docs/performance.md) takes
    where glibc is the C library, once per process (cached), and the simulator calls it."""
    import platform

    from icezoo.core import memory

    took = memory.keep_freed_memory()
    assert isinstance(took, bool)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert took
    assert memory.keep_freed_memory.cache_info().currsize == 1
    assert events.keep_freed_memory is memory.keep_freed_memory  # what simulate_events calls


def test_fast_paths_equal_their_plain_formulas(monkeypatch):
    """The speed paths (docs/performance.md, "Simulator") give exactly what the plain formulas give:
    the PE sort = a stable argsort of the packed keys (ties in row order; also through its fallback),
    the Poisson inverse CDF = the textbook per-row loop, the HLC screen = a brute-force neighbour count."""
    rng = np.random.default_rng(11)
    n_rows = 400
    ev = rng.integers(0, 30, n_rows)
    sen = rng.integers(0, 40, n_rows)  # few distinct (event, sensor) pairs: many rows share one
    n_s = rng.integers(1, 6, n_rows)
    rep = np.repeat(np.arange(n_rows), n_s)
    t = rng.integers(-50, 50, len(rep))  # coarse times: many exact ties across and within rows
    weight = rng.random(n_rows).astype(np.float32) + 0.5
    key = keys.pack_keys(ev, sen, 0)[rep] + t
    order = np.argsort(key, kind="stable")
    want = key[order], weight[rep[order]]
    got = events.sorted_pe_keys(ev, sen, rep, t, weight)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    monkeypatch.setattr(events, "T_BITS", 60)  # too many bits for the codes: the plain path
    monkeypatch.setattr(events, "pack_keys", lambda e, s, t_: ((e.astype(np.int64) * 5160 + s) << 24) + t_ + (1 << 23))
    got = events.sorted_pe_keys(ev, sen, rep, t, weight)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    monkeypatch.undo()

    bound = np.concatenate([rng.random(3000) * 8.0, rng.random(50) * 30 + 8.0]).astype(np.float32)
    n_b, sel = light.thin(np.random.default_rng(3), bound)
    u = np.random.default_rng(3).random(len(bound), dtype=np.float32)
    selected = set(sel.tolist())
    for i, (b, ui) in enumerate(zip(bound.astype(np.float64), u)):
        if b >= 8.0:
            continue
        term = cdf = float(np.exp(-np.float32(b)))
        k = 0
        while ui >= cdf and k < 100:  # the smallest k with CDF(k) > u
            k += 1
            term = term * b / k
            cdf += term
        assert (k == 0) == (i not in selected) and (k == 0 or n_b[np.searchsorted(sel, i)] == k)
    assert abs(n_b[bound[sel] >= 8.0].mean() - bound[bound >= 8.0].mean()) < 2.0

    ev = rng.integers(0, 40, 3000)
    sen = rng.integers(0, 5160, 3000) // 20 * 20 + rng.integers(0, 6, 3000)  # clusters on few strings
    ok = events.may_trigger(ev, sen, 40, deepcore=True)
    fid = simulator.detector().deepcore_fiducial
    for e in range(40):
        doms = set(sen[ev == e].tolist())
        hlc = [s for s in doms if any((s + o) in doms and 0 <= s % 60 + o < 60 for o in (-2, -1, 1, 2))]
        want = len(hlc) >= simulator.SMT_HITS or sum(bool(fid[s]) for s in hlc) >= simulator.SMT3_HITS
        assert ok[e] == want, e
