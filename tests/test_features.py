"""Feature extractors: values on hand-built pulses, shapes, and that registry pipelines resolve them."""

from __future__ import annotations

import numpy as np
import pytest

from icezoo.core import PulseChunk
from icezoo.data.io import load_geometry
from icezoo.core.errors import IcezooError
from icezoo.plugins.features import (QE, CenterOfGravity, IceProperties, KaggleNorm, MinMaxNorm, PulseCount, Rank,
                                     SensorType, TimeWeight, detector_bounds, ice_at_z)
from icezoo.plugins.selection import TimeOrder

GEO = load_geometry()


def chunk_of(sensors_per_event, times=None, charge=None, aux=None):
    lengths = np.array([len(s) for s in sensors_per_event])
    sid = np.concatenate(sensors_per_event).astype(np.int64)
    n = len(sid)
    times = np.arange(n, dtype=float) * 10.0 + 6000.0 if times is None else np.asarray(times, dtype=float)
    return PulseChunk(sensor_id=sid.astype(np.int16), time=times,
                      charge=np.ones(n) if charge is None else np.asarray(charge, dtype=float),
                      auxiliary=np.zeros(n, bool) if aux is None else np.asarray(aux, bool),
                      x=GEO[sid, 0], y=GEO[sid, 1], z=GEO[sid, 2], offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
                      event_id=np.arange(len(lengths), dtype=np.int64), n_pulses=lengths.astype(np.int64))


def make(cls, **params):
    return cls(cls.Config(**params))


def test_kaggle_norm_values():
    c = chunk_of([[0, 4000]], times=[10000.0, 40000.0], charge=[1000.0, 0.0], aux=[True, False])
    out = make(KaggleNorm).extract(c, c)
    assert out.shape == (2, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [GEO[0, 0] / 500, GEO[0, 1] / 500, GEO[0, 2] / 500, 0.0, 1.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out[1, 3:], [1.0, -1.0, -0.5], rtol=1e-6)  # charge floored at 1e-3


def test_minmax_norm_ranges_and_charge_modes():
    lo, hi = detector_bounds()
    assert lo[2] == pytest.approx(-512.82, abs=0.1) and hi[2] == pytest.approx(524.56, abs=0.1)
    all_sensors = np.arange(5160)
    c = chunk_of([all_sensors[:2580], all_sensors[2580:]], charge=np.full(5160, 100.0))
    out = make(MinMaxNorm, charge="raw").extract(c, c)
    assert out[:, :3].min() >= 0 and out[:, :3].max() <= 1 and np.isclose(out[:, :3].max(axis=0), 1).all()
    # time: 0 at each event's first pulse, 1 at its last
    assert out[0, 3] == 0 and out[2579, 3] == 1 and out[2580, 3] == 0 and out[-1, 3] == 1
    assert (out[:, 4] == 100).all()
    assert (make(MinMaxNorm, charge="log10").extract(c, c)[:, 4] == 2).all()
    one = chunk_of([[5]], times=[7000.0])
    assert make(MinMaxNorm).extract(one, one)[0, 3] == 0  # a single time: 0, not NaN


def test_time_weight_decays_from_the_first_pulse():
    c = chunk_of([[1, 2, 3], [4, 5]], times=[6000, 9000, 12000, 100, 100])
    out = make(TimeWeight).extract(c, c)[:, 0]
    np.testing.assert_allclose(out, [1, np.exp(-1), np.exp(-2), 1, 1], rtol=1e-6)


def test_qe_on_deepcore_high_qe_doms():
    s80 = 60 * 79  # string 80, DOM 1
    c = chunk_of([[0, s80 + 5, s80 + 10, s80 + 59, 60 * 77 + 40]])
    out = make(QE).extract(c, c)[:, 0]
    assert out.tolist() == [1.0, 1.0, pytest.approx(1.35), pytest.approx(1.35), 1.0]
    assert out.dtype == np.float32


def test_sensor_type_one_hot_and_pmt_direction():
    from dataclasses import replace

    c = chunk_of([[0, 1, 2], [3, 4]])
    # IceCube-86 without the columns (the Kaggle layout): IceCube DOMs, PMTs facing down
    out = make(SensorType).extract(c, c)
    assert out.shape == (5, 7) and out.dtype == np.float32
    assert (out == [1, 0, 0, 0, 0, 0, -1]).all()
    # Upgrade rows: mDOM, D-Egg with the source's directions; a PDOM and an IceCube DOM given a zero or NaN
    # direction fall back to facing down; an unknown code (a WOM) gets no type and zeros
    d = np.array([[0.6, 0.0, 0.8], [0.0, 0.0, 1.0], [0, 0, 0], [np.nan] * 3, [0, 0, 0]], dtype=np.float32)
    up = replace(c, dom_type=np.array([130, 120, 110, 20, 140], dtype=np.int16), pmt_dir=d, pad_sensor=10**6)
    out = make(SensorType).extract(up, up)
    assert np.array_equal(out, np.array([[0, 0, 0, 1, 0.6, 0.0, 0.8], [0, 0, 1, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0, -1],
                                         [1, 0, 0, 0, 0, 0, -1], [0, 0, 0, 0, 0, 0, 0]], dtype=np.float32))
    # the columns follow the pulses through selection (take) and event subsets
    sub = up.events(np.array([1]))
    assert np.array_equal(make(SensorType).extract(sub, sub), out[3:])
    # sensors beyond IceCube-86 without dom_type: a one-line refusal, never a guess
    with pytest.raises(IcezooError, match="no dom_type"):
        make(SensorType).extract(replace(c, pad_sensor=10**6), c)


def test_ice_properties_follow_the_depth():
    scat, absorp = ice_at_z(np.array([1948.07 - 2050.0, 1948.07 - 2300.0]))
    assert scat[0] < 10 < 60 < scat[1] and absorp[0] < 30 < 200 < absorp[1]  # dust layer vs clear ice
    dusty = int(np.argmin(np.abs(GEO[:60, 2] - (1948.07 - 2050.0))))
    clear = int(np.argmin(np.abs(GEO[:60, 2] - (1948.07 - 2300.0))))
    c = chunk_of([[dusty, clear]])
    one = make(IceProperties).extract(c, c)
    two = make(IceProperties, absorption=True).extract(c, c)
    assert one.shape == (2, 1) and two.shape == (2, 2)
    assert make(IceProperties).out_dim == 1 and make(IceProperties, absorption=True).out_dim == 2
    assert one[0, 0] < one[1, 0] and two[0, 1] < two[1, 1]
    np.testing.assert_allclose(two[:, 0], one[:, 0])
    s, a = ice_at_z(GEO[[dusty, clear], 2])
    np.testing.assert_allclose(two[:, 0], s / 100, rtol=1e-5)
    np.testing.assert_allclose(two[:, 1], a / 300, rtol=1e-5)


def test_rank_counts_within_each_event():
    c = chunk_of([[1, 2, 3], [4, 5]])
    assert (make(Rank, scale=1.0).extract(c, c)[:, 0] == [0, 1, 2, 0, 1]).all()
    assert make(Rank).extract(c, c)[2, 0] == pytest.approx(2 / 128)


def test_event_level_features_see_every_pulse():
    sensors = [[0, 4000, 5159], [100]]
    c_all = chunk_of(sensors, charge=[1.0, 3.0, 0.0, 2.0], aux=[True, False, False, True])
    sel = TimeOrder(TimeOrder.Config(max_pulses=1)).select(c_all, np.random.default_rng(0))
    cog = make(CenterOfGravity)
    assert cog.event_level and cog.out_dim == 3
    out = cog.extract(sel, c_all)
    expect = (1 * GEO[0] + 3 * GEO[4000]) / 4 / 500
    np.testing.assert_allclose(out[0], expect, rtol=1e-5)
    np.testing.assert_allclose(out[1], GEO[100] / 500, rtol=1e-5)
    pc = make(PulseCount).extract(sel, c_all)
    assert pc.shape == (2, 2) and make(PulseCount).event_level
    np.testing.assert_allclose(pc[:, 0], [np.log10(3) / 3, 0.0], atol=1e-7)
    np.testing.assert_allclose(pc[:, 1], [np.log10(3) / 3, np.log10(1) / 3], atol=1e-7)


def test_registry_pipelines_resolve_the_data_components():
    from icezoo.core.pipelines import load_pipeline
    from icezoo.zoo import make_registry

    reg = make_registry(autoload=False)
    for kind, name in [("selection", "time_order"), ("selection", "aux_first"), ("selection", "light_speed"),
                       ("features", "kaggle_norm"), ("features", "minmax_norm"), ("features", "time_weight"),
                       ("features", "qe"), ("features", "ice_properties"), ("features", "rank"),
                       ("features", "center_of_gravity"), ("features", "pulse_count")]:
        assert reg.get(kind, name).cls.name == name
    # every pipeline's selection and feature params validate against the components' Configs
    for pipeline in ("default", "BASELINE_HF_V4", "BASELINE_EMBED_V0", "BASELINE_EMBED_V2", "BASELINE_HF_V9"):
        cfg = load_pipeline(reg, pipeline)
        spec = reg.get("selection", cfg.selection.name)
        spec.cls.Config.model_validate(cfg.selection.params)
        for ref in cfg.features:
            reg.get("features", ref.name).cls.Config.model_validate(ref.params)


def test_sensor_table_fast_paths_match_the_per_pulse_formulas(tmp_path):
    """kaggle_norm, qe and ice_properties on a loader's LazyChunk (per-sensor tables) give the same
    values as on an eager chunk, also with a geometry of more sensors than IceCube-86 (qe 1.0 there)."""
    from icezoo.data.io import read_raw, write_toy_dataset

    data = write_toy_dataset(tmp_path / "d", n_files=1, events_per_file=50, seed=2, mean_pulses=20)
    geo = np.vstack([load_geometry(), [[10.0, -20.0, -300.0], [0.0, 0.0, 100.0]]])  # ids 5160, 5161
    raw = read_raw(data, "train", 1, geometry=geo)
    raw.sensor_id = raw.sensor_id.copy()
    raw.sensor_id[:7] = [5160, 5161, 5100, 0, 5159, 5161, 1234]
    events = np.arange(50)[::-1]
    lazy, eager = raw.gather_lazy(events), raw.gather(events)
    for f in (make(KaggleNorm), make(QE), make(IceProperties, absorption=True), make(IceProperties)):
        a, b = f.extract(lazy, lazy), f.extract(eager, eager)
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert make(QE).extract(lazy, lazy)[np.flatnonzero(lazy.sensor_id >= 5160), 0].tolist() == [1.0] * int((lazy.sensor_id >= 5160).sum())
