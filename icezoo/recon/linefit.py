"""LineFit baselines: the classical first-guess direction, vectorised over a whole PulseChunk.

Plain LineFit (least squares of r = r0 + v t over all pulses of an event):

    v = (<r t> - <r><t>) / (<t^2> - <t>^2),   r0 = <r> - v <t>,   u = -v / |v|

``u`` points to where the neutrino came from (the Kaggle convention): pulses that move downward over
time give v_z < 0, hence u_z > 0 and zenith < pi/2.

Improved LineFit (IceCube, "Improvement in fast particle track reconstruction with robust
statistics", NIM A 736 (2014) 143; the figures as in docs/simulator.md):

1. delay cleaning: drop a pulse later than 778 ns after the earliest hit of any DOM within 156 m
   (the pulse's own DOM included);
2. Huber fit: minimise sum rho(|r0 + v t - r|) with rho quadratic below 153 m and linear above,
   solved by iteratively reweighted least squares (weights min(1, 153 m / residual));
3. debiasing: drop pulses whose residual to the Huber fit is above 116 m;
4. plain LineFit on the remaining pulses.

An event whose fit is degenerate (fewer than 2 pulses, all pulses at one time) falls back to the
previous stage's result and, for plain LineFit, to straight down-going (0, 0, 1).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from icezoo.core.detector import N_SENSORS
from icezoo.resources import geometry_csv

DELAY_NS = 778.0
DELAY_RADIUS_M = 156.0
HUBER_M = 153.0
HUBER_ITERATIONS = 10
RESIDUAL_CUT_M = 116.0
FALLBACK = np.array([0.0, 0.0, 1.0])


def _weighted_fit(idx: np.ndarray, n_events: int, r: np.ndarray, t: np.ndarray, w: np.ndarray):
    """Weighted least-squares line r = r0 + v t per event. Returns v [E,3], r0 [E,3], ok [E]."""
    sw = np.bincount(idx, weights=w, minlength=n_events)
    safe = np.where(sw > 0, sw, 1.0)
    mt = np.bincount(idx, weights=w * t, minlength=n_events) / safe
    var = np.bincount(idx, weights=w * t * t, minlength=n_events) / safe - mt**2
    npulse = np.bincount(idx, weights=(w > 0).astype(np.float64), minlength=n_events)
    ok = (npulse >= 2) & (var > 1e-9 * np.maximum(mt**2, 1.0))
    var_safe = np.where(ok, var, 1.0)
    v = np.empty((n_events, 3))
    r0 = np.empty((n_events, 3))
    for k in range(3):
        mr = np.bincount(idx, weights=w * r[:, k], minlength=n_events) / safe
        mrt = np.bincount(idx, weights=w * r[:, k] * t, minlength=n_events) / safe
        v[:, k] = (mrt - mr * mt) / var_safe
        r0[:, k] = mr - v[:, k] * mt
    ok &= np.linalg.norm(v, axis=1) > 0
    return v, r0, ok


def _direction(v: np.ndarray, ok: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """u = -v/|v| where ok, else the fallback direction(s)."""
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    u = -v / np.where(norm > 0, norm, 1.0)
    return np.where(ok[:, None], u, fallback)


def _prepare(chunk):
    """Event index, positions [P,3] and times relative to each event's first pulse (precision)."""
    idx = chunk.event_index
    offsets = np.asarray(chunk.offsets, dtype=np.int64)
    t = np.asarray(chunk.time, dtype=np.float64)
    lengths = np.diff(offsets)
    first = np.repeat(offsets[:-1], lengths)
    t = t - (t[first] if len(t) else 0.0)
    r = np.stack([np.asarray(chunk.x, np.float64), np.asarray(chunk.y, np.float64), np.asarray(chunk.z, np.float64)], 1)
    return idx, r, t


def linefit(chunk) -> np.ndarray:
    """Plain LineFit on all pulses: unit vectors [E,3] pointing to where the neutrino came from."""
    idx, r, t = _prepare(chunk)
    n = chunk.num_events
    v, _, ok = _weighted_fit(idx, n, r, t, np.ones(len(t)))
    return _direction(v, ok, FALLBACK)


@lru_cache(maxsize=1)
def _neighbours() -> tuple[np.ndarray, np.ndarray]:
    """CSR (ptr [5161], idx) of the sensor ids within DELAY_RADIUS_M of each DOM, itself included."""
    geo = np.loadtxt(geometry_csv(), delimiter=",", skiprows=1)
    x, y, z = (geo[:, k].astype(np.float32) for k in (1, 2, 3))
    rows, cols = [], []
    for a in range(0, len(x), 1024):  # row blocks keep the pairwise table small
        d2 = (x[a:a + 1024, None] - x) ** 2
        d2 += (y[a:a + 1024, None] - y) ** 2
        d2 += (z[a:a + 1024, None] - z) ** 2
        rr, cc = np.nonzero(d2 <= DELAY_RADIUS_M**2)
        rows.append(rr + a)
        cols.append(cc)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    ptr = np.zeros(len(x) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(x)), out=ptr[1:])
    return ptr, cols.astype(np.int64)


def _delay_clean(idx: np.ndarray, sensor: np.ndarray, t: np.ndarray, n_events: int, group: int = 1024) -> np.ndarray:
    """Keep-mask of delay cleaning: a pulse is dropped when it comes more than DELAY_NS after the
    earliest hit of some DOM within DELAY_RADIUS_M (vectorised over groups of events)."""
    ptr, nbr = _neighbours()
    keep = np.ones(len(t), dtype=bool)
    first = np.full((group, N_SENSORS), np.inf)
    bounds = np.searchsorted(idx, np.arange(0, n_events + group, group))
    for g, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if a == b:
            continue
        e = idx[a:b] - g * group
        s = sensor[a:b]
        uk, inv = np.unique(e * N_SENSORS + s, return_inverse=True)
        ue, us = uk // N_SENSORS, uk % N_SENSORS
        first_u = np.full(len(uk), np.inf)
        np.minimum.at(first_u, inv, t[a:b])
        first[ue, us] = first_u  # dense per-group table of each hit DOM's earliest pulse
        deg = ptr[us + 1] - ptr[us]
        starts = np.cumsum(deg) - deg
        flat = np.repeat(ptr[us] - starts, deg) + np.arange(int(deg.sum()))
        earliest = np.minimum.reduceat(first[np.repeat(ue, deg), nbr[flat]], starts)
        first[ue, us] = np.inf  # reset for the next group
        keep[a:b] = t[a:b] - earliest[inv] <= DELAY_NS
    return keep


def linefit_improved(chunk) -> np.ndarray:
    """Improved LineFit (delay cleaning, Huber fit, residual cut, refit): unit vectors [E,3]."""
    idx, r, t = _prepare(chunk)
    n = chunk.num_events
    sensor = np.asarray(chunk.sensor_id, dtype=np.int64)
    v, _, ok = _weighted_fit(idx, n, r, t, np.ones(len(t)))
    u = _direction(v, ok, FALLBACK)

    w = _delay_clean(idx, sensor, t, n).astype(np.float64)
    v, r0, ok_c = _weighted_fit(idx, n, r, t, w)
    u = _direction(v, ok_c, u)
    for _ in range(HUBER_ITERATIONS):
        res = np.linalg.norm(r0[idx] + v[idx] * t[:, None] - r, axis=1)
        hw = w * np.minimum(1.0, HUBER_M / np.maximum(res, 1e-9))
        v_new, r0_new, ok_h = _weighted_fit(idx, n, r, t, hw)
        keep = ok_h & ok_c
        v = np.where(keep[:, None], v_new, v)
        r0 = np.where(keep[:, None], r0_new, r0)
    u = _direction(v, ok_c, u)  # the Huber fit, where the cleaned fit was valid
    res = np.linalg.norm(r0[idx] + v[idx] * t[:, None] - r, axis=1)
    final_w = w * (res <= RESIDUAL_CUT_M)
    v, _, ok_f = _weighted_fit(idx, n, r, t, final_w)
    return _direction(v, ok_f & ok_c, u)


def read_dataset_chunks(data_dir, split: str = "train", batch_ids=None):
    """Yield (batch_id, PulseChunk) for the batch files of a Kaggle-layout split, through the
    data package's reader (icezoo.data.io)."""
    from icezoo.data import io

    ids = io.list_batches(data_dir, split) if batch_ids is None else list(batch_ids)
    geometry = io.load_geometry(data_dir)
    for b in ids:
        yield b, io.read_chunk(data_dir, split, b, geometry=geometry)
