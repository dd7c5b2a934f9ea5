"""LineFit baselines: the direction convention on hand-built events, exactness on a perfect track,
vectorised == per event, delay cleaning, and improved LineFit beating plain LineFit on simulation."""

from __future__ import annotations

import numpy as np
import pytest

from icezoo.core.batch import PulseChunk, angles_to_vector, angular_error, vector_to_angles
from icezoo.recon import linefit, linefit_improved
from icezoo.recon.linefit import _delay_clean
from icezoo.resources import geometry_csv

GEO = np.loadtxt(geometry_csv(), delimiter=",", skiprows=1)


def _chunk(events: list[tuple[list[int], list[float]]], truth=None) -> PulseChunk:
    """A PulseChunk from [(sensor_ids, times), ...] with real DOM positions."""
    sid = np.concatenate([np.asarray(s, dtype=np.int64) for s, _ in events])
    t = np.concatenate([np.asarray(tt, dtype=np.float64) for _, tt in events])
    lengths = np.array([len(s) for s, _ in events])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    az = zen = None
    if truth is not None:
        az, zen = np.asarray(truth[0], float), np.asarray(truth[1], float)
    return PulseChunk(sensor_id=sid, time=t, charge=np.ones(len(t)), auxiliary=np.zeros(len(t), bool),
                      x=GEO[sid, 1], y=GEO[sid, 2], z=GEO[sid, 3], offsets=offsets,
                      event_id=np.arange(len(events), dtype=np.int64), n_pulses=lengths, azimuth=az, zenith=zen)


def test_downward_moving_pulses_give_zenith_below_half_pi():
    # string 36 (sensor 35*60 + dom): pulses walk down the string over time -> a down-going particle,
    # which came from above: zenith < pi/2
    doms = 35 * 60 + np.arange(10, 30)
    times = 10000 + np.arange(20) * 17.0 / 0.2998
    chunk = _chunk([(doms, times)])
    for fit in (linefit, linefit_improved):
        _, zen = vector_to_angles(fit(chunk))
        assert zen[0] < np.pi / 2 - 1.0, fit.__name__
    _, zen = vector_to_angles(linefit(_chunk([(doms, times[::-1])])))
    assert zen[0] > np.pi / 2 + 1.0


def test_perfect_track_is_recovered_exactly():
    rng = np.random.default_rng(0)
    u = angles_to_vector(np.array([1.1]), np.array([2.0]))[0]
    v = -u * 0.3  # m/ns along the travel direction
    sensors = rng.choice(5160, 60, replace=False)
    pos = GEO[sensors, 1:4]
    # time at which a particle on the line through the origin passes each DOM's projection
    times = 10000 + pos @ v / (v @ v)
    # put the DOMs exactly on the line: replace positions by their projections
    chunk = _chunk([(sensors, times)])
    proj = (times - 10000)[:, None] * v[None, :]
    chunk.x, chunk.y, chunk.z = proj[:, 0], proj[:, 1], proj[:, 2]
    assert angular_error(linefit(chunk), u[None])[0] < 1e-6


def test_vectorised_equals_per_event(tmp_path):
    from icezoo.data.simulator import make_config, simulate_events

    ev = simulate_events(make_config(), 60, seed=9)
    counts = ev["counts"]
    sid = ev["sensor_id"].astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    chunk = PulseChunk(sensor_id=sid, time=ev["time"].astype(float), charge=ev["charge"], auxiliary=ev["auxiliary"],
                       x=GEO[sid, 1], y=GEO[sid, 2], z=GEO[sid, 3], offsets=offsets,
                       event_id=np.arange(60), n_pulses=counts, azimuth=ev["azimuth"], zenith=ev["zenith"])
    for fit in (linefit, linefit_improved):
        all_at_once = fit(chunk)
        one_by_one = np.concatenate([fit(chunk.events([i])) for i in range(0, 60, 7)])
        np.testing.assert_allclose(all_at_once[::7], one_by_one, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(all_at_once, axis=1), 1.0)


def test_degenerate_events_fall_back():
    chunk = _chunk([([100], [10000.0]), ([100, 101], [10000.0, 10000.0]), ([5, 6, 7], [1.0, 2.0, 3.0])])
    for fit in (linefit, linefit_improved):
        u = fit(chunk)
        assert np.isfinite(u).all()
        np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0)


def test_delay_cleaning_drops_late_pulse_near_an_early_hit():
    # DOMs 100 and 101 are 17 m apart: a pulse on 101 at +2000 ns is delayed; one at +500 ns is not;
    # DOM 3000 is far away (its own first pulse is the reference): kept
    sensor = np.array([100, 101, 101, 3000])
    t = np.array([0.0, 500.0, 2000.0, 2500.0])
    keep = _delay_clean(np.zeros(4, dtype=np.int64), sensor, t, 1)
    assert keep.tolist() == [True, True, False, True]


@pytest.fixture(scope="module")
def sim_chunk(tmp_path_factory):
    from icezoo.data.simulator import make_config, simulate_events

    ev = simulate_events(make_config(), 1500, seed=21)
    counts = ev["counts"]
    sid = ev["sensor_id"].astype(np.int64)
    return PulseChunk(sensor_id=sid, time=ev["time"].astype(float), charge=ev["charge"], auxiliary=ev["auxiliary"],
                      x=GEO[sid, 1], y=GEO[sid, 2], z=GEO[sid, 3], offsets=np.concatenate([[0], np.cumsum(counts)]),
                      event_id=np.arange(len(counts)), n_pulses=counts, azimuth=ev["azimuth"], zenith=ev["zenith"])


def test_improved_beats_plain(sim_chunk):
    truth = angles_to_vector(sim_chunk.azimuth, sim_chunk.zenith)
    plain = angular_error(linefit(sim_chunk), truth).mean()
    improved = angular_error(linefit_improved(sim_chunk), truth).mean()
    assert improved < plain - 0.03, (plain, improved)
