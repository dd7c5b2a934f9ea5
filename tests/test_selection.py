"""Pulse selections: time order, auxiliary-first priority, light-speed causality (hand-built events)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from icezoo.core import PulseChunk
from icezoo.data.io import load_geometry
from icezoo.plugins.selection import C_ICE, C_VACUUM, AuxFirst, LightSpeed, TimeOrder

GEO = load_geometry()


def make_chunk(events):
    """events: list of lists of (sensor_id, time, aux) or (x, y, z, time, aux) pulses, time ordered."""
    rows = []
    for e, pulses in enumerate(events):
        for p in pulses:
            if len(p) == 3:
                s, t, a = p
                x, y, z = GEO[s]
            else:
                x, y, z, t, a = p
                s = 0
            rows.append((e, s, t, a, x, y, z))
    arr = np.array(rows, dtype=float).reshape(-1, 7)
    lengths = np.array([len(p) for p in events])
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return PulseChunk(sensor_id=arr[:, 1].astype(np.int16), time=arr[:, 2], charge=np.ones(len(arr)),
                      auxiliary=arr[:, 3].astype(bool), x=arr[:, 4], y=arr[:, 5], z=arr[:, 6], offsets=offsets,
                      event_id=np.arange(len(events), dtype=np.int64), n_pulses=lengths.astype(np.int64))


def times_of(chunk, e):
    return chunk.time[chunk.offsets[e]:chunk.offsets[e + 1]].tolist()


def test_time_order_truncates_to_the_earliest():
    c = make_chunk([[(i, 100.0 * i, False) for i in range(10)], [(0, 5.0, True)]])
    out = TimeOrder(TimeOrder.Config(max_pulses=4)).select(c, np.random.default_rng(0))
    assert times_of(out, 0) == [0, 100, 200, 300] and times_of(out, 1) == [5.0]


def test_aux_first_keeps_hlc_and_fills_at_random():
    # 10 pulses, the HLC ones (aux=False) at times 100, 400, 700, 900
    aux = [True, False, True, True, False, True, True, False, True, False]
    c = make_chunk([[(i, 100.0 * i, a) for i, a in enumerate(aux)], [(1, 1.0, True), (2, 2.0, True)]])
    sel = AuxFirst(AuxFirst.Config(max_pulses=6))
    picks = set()
    for seed in range(30):
        out = sel.select(c, np.random.default_rng(seed))
        t = times_of(out, 0)
        assert len(t) == 6 and t == sorted(t)
        assert {100, 400, 700, 900} <= set(t)  # every HLC pulse kept
        picks.add(tuple(t))
        assert times_of(out, 1) == [1.0, 2.0]  # short events untouched
        again = sel.select(c, np.random.default_rng(seed))
        assert times_of(again, 0) == t  # deterministic for a given rng
    assert len(picks) > 5  # the auxiliary fill is random across seeds


def test_aux_first_with_more_hlc_than_slots_keeps_only_hlc():
    aux = [False] * 8 + [True] * 4
    c = make_chunk([[(i, float(i), a) for i, a in enumerate(aux)]])
    out = AuxFirst(AuxFirst.Config(max_pulses=5)).select(c, np.random.default_rng(3))
    assert len(times_of(out, 0)) == 5 and not out.auxiliary.any()


def test_light_speed_drops_acausal_pulses():
    c_ice = C_ICE
    # reference: the first HLC pulse at the origin, t=1000; an early auxiliary noise pulse before it
    pulses = [
        (300.0, 0.0, 0.0, 0.0, True),  # aux noise 300 m away, 1000 ns before: 221 m reachable -> acausal
        (0.0, 0.0, 0.0, 1000.0, False),  # reference
        (50.0, 0.0, 0.0, 1000.0 + 50.0 / c_ice + 5, False),  # causal (later than light)
        (0.0, 100.0, 0.0, 1100.0, True),  # 100 m in 100 ns: faster than light in ice and vacuum -> dropped
        (0.0, 0.0, 200.0, 1000.0 + 200.0 / 0.26, True),  # 200 m at 0.26 m/ns: causal only at vacuum speed
        (0.0, 20.0, 0.0, 1000.0 + 20.0 / c_ice - 30.0, False),  # 30 ns early, 6.6 m: within the 10 m tolerance
        (0.0, 0.0, -30.0, 3000.0, True),  # late, close: causal
    ]
    c = make_chunk([pulses, [(0, 1.0, True), (1, 2.0, True)]])
    out = LightSpeed(LightSpeed.Config(max_pulses=4)).select(c, np.random.default_rng(0))
    assert times_of(out, 0) == [1000.0, pytest_approx(1000.0 + 50.0 / c_ice + 5), pytest_approx(1000 + 20 / c_ice - 30),
                                3000.0]
    assert times_of(out, 1) == [1.0, 2.0]
    vac = LightSpeed(LightSpeed.Config(max_pulses=5, speed="vacuum")).select(c, np.random.default_rng(0))
    assert 1000.0 + 200.0 / 0.26 in times_of(vac, 0) and 1100.0 not in times_of(vac, 0)
    assert C_VACUUM > 0.26 > C_ICE
    # no tolerance: the 30 ns early pulse goes
    strict = LightSpeed(LightSpeed.Config(max_pulses=4, tolerance=0.0)).select(c, np.random.default_rng(0))
    assert len(times_of(strict, 0)) == 3


def test_light_speed_truncates_causal_pulses_in_time_and_leaves_short_events():
    # all causal (same DOM), 8 pulses: keeps the first 3; a short event with an acausal pulse stays whole
    c = make_chunk([[(0.0, 0.0, 0.0, 10.0 * i, False) for i in range(8)],
                    [(0.0, 0.0, 0.0, 0.0, False), (500.0, 0.0, 0.0, 1.0, True)]])
    out = LightSpeed(LightSpeed.Config(max_pulses=3)).select(c, np.random.default_rng(0))
    assert times_of(out, 0) == [0, 10, 20] and times_of(out, 1) == [0, 1]
    always = LightSpeed(LightSpeed.Config(max_pulses=3, always=True)).select(c, np.random.default_rng(0))
    assert times_of(always, 1) == [0]


def test_light_speed_reference_is_first_pulse_without_hlc():
    c = make_chunk([[(0.0, 0.0, 0.0, 0.0, True), (400.0, 0.0, 0.0, 10.0, True), (10.0, 0.0, 0.0, 100.0, True)]])
    out = LightSpeed(LightSpeed.Config(max_pulses=2)).select(c, np.random.default_rng(0))
    assert times_of(out, 0) == [0.0, 100.0]


def pytest_approx(x):
    import pytest

    return pytest.approx(x)


@st.composite
def chunks(draw):
    lengths = draw(st.lists(st.integers(1, 40), min_size=1, max_size=6))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    sid = rng.integers(0, 5160, n)
    time = np.concatenate([np.sort(rng.uniform(6000, 9000, k)) for k in lengths])
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return PulseChunk(sensor_id=sid.astype(np.int16), time=time, charge=rng.uniform(0.1, 3, n),
                      auxiliary=rng.random(n) < 0.5, x=GEO[sid, 0], y=GEO[sid, 1], z=GEO[sid, 2], offsets=offsets,
                      event_id=np.arange(len(lengths), dtype=np.int64), n_pulses=np.array(lengths, dtype=np.int64))


@settings(max_examples=40, deadline=None)
@given(chunks(), st.integers(1, 20), st.integers(0, 1000))
def test_selections_keep_subsets_in_time_order(chunk, k, seed):
    for cls in (TimeOrder, AuxFirst, LightSpeed):
        sel = cls(cls.Config(max_pulses=k))
        out = sel.select(chunk, np.random.default_rng(seed))
        assert out.num_events == chunk.num_events
        assert (out.lengths <= k).all() and (out.lengths >= 1).all()
        for e in range(chunk.num_events):
            t = times_of(out, e)
            assert t == sorted(t)
            assert set(t) <= set(times_of(chunk, e))
            if chunk.lengths[e] <= k:  # short events are never touched
                assert t == times_of(chunk, e)
            elif cls is not LightSpeed:
                assert len(t) == k
        again = sel.select(chunk, np.random.default_rng(seed))
        assert np.array_equal(again.time, out.time)
        if cls is AuxFirst:  # HLC pulses first: an event keeps min(k, #HLC) of them
            for e in range(chunk.num_events):
                a = chunk.auxiliary[chunk.offsets[e]:chunk.offsets[e + 1]]
                kept = out.auxiliary[out.offsets[e]:out.offsets[e + 1]]
                assert (~kept).sum() == min((~a).sum(), out.lengths[e])


def test_draw_per_event_is_exactly_the_smallest_keys():
    from icezoo.plugins.selection import draw_per_event

    rng = np.random.default_rng(11)
    pool = np.array([1, 5, 40, 300, 2000, 129, 7])
    need = np.array([1, 5, 3, 128, 128, 100, 0])
    ev = np.repeat(np.arange(len(pool)), pool)
    chosen = np.sort(draw_per_event(ev, need, pool, np.random.default_rng(5)))
    u = np.random.default_rng(5).random(len(ev))  # the keys draw_per_event drew
    starts = np.r_[0, np.cumsum(pool)[:-1]]
    expect = np.sort(np.concatenate([s + np.argsort(u[s:s + p])[:k] for s, p, k in zip(starts, pool, need)]))
    assert np.array_equal(chosen, expect)
    assert np.array_equal(np.bincount(ev[chosen], minlength=len(pool)), need)
    # over many draws every row of an event is equally likely (uniform without replacement)
    hits = np.zeros(40)
    for seed in range(400):
        c = draw_per_event(np.zeros(40, np.int64), np.array([10]), np.array([40]), np.random.default_rng(seed))
        hits[c] += 1
    assert hits.sum() == 4000 and hits.min() > 60 and hits.max() < 140
