"""Readout: single-PE charges, DOM launches unfolded into pulses (HLC / SLC; legacy: 10 ns PE
grouping), local coincidence, the SMT8 / SMT3 triggers, dark noise with bursts, afterpulses and the
Kaggle charge quantisation."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from icezoo.core.detector import N_SENSORS
from icezoo.data.simulator.constants import (
    AFTERPULSE_DELAY_NS, AFTERPULSE_PROB, AFTERPULSE_SPREAD_NS, ATWD_MERGE_NS, ATWD_NS, BURST_GAP_NS, BURST_SIZES,
    CHARGE_QUANTUM, CHARGE_SATURATION, FADC_MERGE_NS, HLC_WINDOW_NS, LAUNCH_NS, PULSE_MERGE_NS, SLC_STAMP_NS,
    SMT3_HITS, SMT3_WINDOW_NS, SMT_HITS, SMT_WINDOW_NS, SPE_PEAK, SPE_TAIL_FRACTION, SPE_TAIL_SCALE, SPE_WIDTH,
)
from icezoo.data.simulator.detector import detector
from icezoo.data.simulator.keys import T_BITS, run_starts, segment_cumsum, unpack_keys
from icezoo.data.simulator.light import thin


def spe_charges(rng: np.random.Generator, n: int) -> np.ndarray:
    """Single-photo-electron charges: Gaussian peak at 1 PE plus an exponential low tail (float32)."""
    q = rng.standard_normal(n, dtype=np.float32)
    q *= np.float32(SPE_WIDTH)
    q += np.float32(SPE_PEAK)
    tail = np.flatnonzero(rng.random(n, dtype=np.float32) < np.float32(SPE_TAIL_FRACTION))
    q[tail] = rng.standard_exponential(len(tail), dtype=np.float32) * np.float32(SPE_TAIL_SCALE)
    return np.maximum(q, np.float32(0.0), out=q)


def quantise(q: np.ndarray, soft: bool = True) -> np.ndarray:
    """Charges as Kaggle stores them: multiples of 0.025 PE, at least 0.025, saturating at
    CHARGE_SATURATION (soft: q_s tanh(q / q_s), linear for small pulses; else a hard clip)."""
    q = np.asarray(q, dtype=np.float64)
    q = CHARGE_SATURATION * np.tanh(q / CHARGE_SATURATION) if soft else np.minimum(q, CHARGE_SATURATION)
    return np.round(np.maximum(np.round(q / CHARGE_QUANTUM), 1.0) * CHARGE_QUANTUM, 3)


def _hlc(ev: np.ndarray, sen: np.ndarray, t: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Hard local coincidence per pulse: a pulse on a DOM within 2 positions on the same string
    within +-1 us. ``key`` = packed (event, sensor, time), sorted ascending."""
    dom = sen % 60
    hlc = np.zeros(len(t), dtype=bool)
    n = len(key)
    if n == 0:
        return hlc
    # a pulse's own key plus the offset to the neighbour DOM, minus the window: the first pulse of
    # the neighbour at or after t - 1 us is a coincidence when it is not later than t + 1 us
    probe = key - HLC_WINDOW_NS
    padded = np.append(key, np.iinfo(np.int64).max)
    for off in (-2, -1, 1, 2):
        shift = off << T_BITS
        lo = np.searchsorted(key, probe + shift, side="left")
        hit = padded[lo] <= key + (shift + HLC_WINDOW_NS)
        hit &= (dom + off >= 0) & (dom + off < 60)
        hlc |= hit
    return hlc


def readout_pulses(key, q, tag, launch: bool, need_doms: int | None = None, units_only: bool = False,
             unpacked: tuple | None = None) -> dict:
    """Photo-electrons, as sorted packed (event, sensor, time) keys with their charges and tags ->
    pulses in the same order with their HLC flag.

    ``launch``: each DOM launches on a PE and records LAUNCH_NS; the next PE after that opens the next
    launch. A launch is HLC when a DOM within 2 on the string launched within +-1 us. HLC launches are
    unfolded into pulses of ATWD_MERGE_NS (first ATWD_NS) and FADC_MERGE_NS bins; an SLC launch is one
    pulse, the charge of its first SLC_STAMP_NS (later PEs of the launch are not read out).
    Otherwise (the legacy readout) PEs in the same PULSE_MERGE_NS bin from the DOM's first PE form
    a pulse and HLC is decided per pulse. HLC is only computed in events with at least ``need_doms``
    hit DOMs (fewer cannot trigger). A pulse's tag is its first PE's. ``units_only``: the launches
    (legacy: pulses) with their HLC flag and no charges, all the trigger needs. ``unpacked``: the
    caller's ``unpack_keys(key)``, when it has it."""
    ev, sen, t = unpacked if unpacked is not None else unpack_keys(key)
    n = len(key)
    es = key >> T_BITS
    new_dom = run_starts(es)
    if launch:
        start = new_dom.copy()
        t_unit = np.zeros(0, dtype=np.int64)  # (replaced in the first pass when there are PEs)
        pending, es_p, t_p, head = None, es, t, new_dom  # the PEs not yet in a launch (None: all)
        while len(t_p):
            heads = np.flatnonzero(head)
            tl = np.repeat(t_p[heads], np.diff(heads, append=len(t_p)))  # each PE's DOM's first pending
            if pending is None:  # every PE's launch time so far; those outside are set again below
                start[heads] = True
                t_unit = tl
            else:
                start[pending[heads]] = True
                t_unit[pending] = tl
            out = np.flatnonzero(t_p >= tl + LAUNCH_NS)
            pending, es_p, t_p = out if pending is None else pending[out], es_p[out], t_p[out]
            head = run_starts(es_p)
    else:
        first = np.maximum.accumulate(np.where(new_dom, np.arange(n), 0)) if n else np.zeros(0, np.int64)
        bins = (t - t[first]) // PULSE_MERGE_NS if n else np.zeros(0, np.int64)
        start = new_dom.copy()
        start[1:] |= bins[1:] != bins[:-1]
    # local coincidence per unit (launch, or legacy pulse)
    u_idx = np.flatnonzero(start)
    u_ev = ev[u_idx]
    u_hlc = np.zeros(len(u_idx), dtype=bool)
    if need_doms is None:
        may = np.arange(len(u_idx))
    else:
        doms_per_event = np.bincount(ev[np.flatnonzero(new_dom)], minlength=int(ev.max()) + 1 if n else 0)
        may = np.flatnonzero(doms_per_event[u_ev] >= need_doms) if n else np.zeros(0, np.int64)
    u_key = key[u_idx]
    u_hlc[may] = _hlc(u_ev[may], sen[u_idx][may], t[u_idx][may], u_key[may])
    if units_only:
        return {"ev": u_ev, "sen": sen[u_idx], "t": t[u_idx], "hlc": u_hlc, "key": u_key}
    if launch:
        unit_of = np.cumsum(start) - 1
        hlc_pe = u_hlc[unit_of]
        dt = t - t_unit  # in [0, LAUNCH_NS)
        bins = _launch_bins()[dt]
        keep = hlc_pe | (dt < SLC_STAMP_NS)
        bins *= hlc_pe
        k = np.flatnonzero(keep)
        key, q, tag, bins, start, hlc_pe = key[k], q[k], tag[k], bins[k], start[k], hlc_pe[k]
        new_pulse = start
        new_pulse[1:] |= bins[1:] != bins[:-1]
        p = np.flatnonzero(new_pulse)
        hlc = hlc_pe[p]
        first_pe = k[p]  # each pulse's first PE in the unfiltered input
    else:
        p = u_idx
        hlc = u_hlc
        first_pe = p
    return {"ev": ev[first_pe], "sen": sen[first_pe], "t": t[first_pe],
            "q": np.add.reduceat(q, p) if len(p) else np.zeros(0), "tag": tag[p], "hlc": hlc, "key": key[p]}


@lru_cache(maxsize=1)
def _launch_bins() -> np.ndarray:
    """The digitiser bin of a PE by its delay after the launch (0 to LAUNCH_NS - 1 ns): ATWD_MERGE_NS
    bins over the first ATWD_NS, FADC_MERGE_NS bins after (a table: one lookup per PE)."""
    dt = np.arange(LAUNCH_NS)
    atwd_bins = ATWD_NS // ATWD_MERGE_NS + 1
    return np.where(dt < ATWD_NS, dt // ATWD_MERGE_NS, atwd_bins + (dt - ATWD_NS) // FADC_MERGE_NS).astype(np.int16)


def _smt_windows(ev, t, hits: int, window: int):
    """Sliding windows of ``hits`` consecutive hits (per event, time ordered) within ``window`` ns:
    (event, window start, window end) of each."""
    o = np.lexsort((t, ev))
    ev, t = ev[o], t[o]
    k = hits - 1
    if len(ev) <= k:
        return (np.zeros(0, dtype=np.int64),) * 3
    win = np.flatnonzero((ev[k:] == ev[:-k]) & (t[k:] - t[:-k] <= window))
    return ev[win], t[win], t[win + k]


def trigger(pulses: dict, deepcore: bool):
    """SMT8 (and SMT3 on the DeepCore fiducial DOMs) on the first HLC pulse of each DOM: per
    triggered event its index, the start of its first and the end of its last trigger window, and
    the trigger bits (1: SMT8, 2: SMT3)."""
    det = detector()
    h = np.flatnonzero(pulses["hlc"])
    hk = pulses["key"][h] >> T_BITS
    h = h[np.flatnonzero(run_starts(hk))]
    hit_ev, hit_t, hit_sen = pulses["ev"][h], pulses["t"][h], pulses["sen"][h]
    parts = [(*_smt_windows(hit_ev, hit_t, SMT_HITS, SMT_WINDOW_NS), 1)]
    if deepcore:
        f = np.flatnonzero(det.deepcore_fiducial[hit_sen])
        parts.append((*_smt_windows(hit_ev[f], hit_t[f], SMT3_HITS, SMT3_WINDOW_NS), 2))
    w_ev = np.concatenate([p[0] for p in parts])
    w_start = np.concatenate([p[1] for p in parts])
    w_end = np.concatenate([p[2] for p in parts])
    w_bit = np.concatenate([np.full(len(p[0]), p[3], dtype=np.int64) for p in parts])
    o = np.argsort(w_ev, kind="stable")
    w_ev, w_start, w_end, w_bit = w_ev[o], w_start[o], w_end[o], w_bit[o]
    trig_ev, first = np.unique(w_ev, return_index=True)
    if not len(trig_ev):
        return trig_ev, trig_ev, trig_ev, trig_ev
    t_start = np.minimum.reduceat(w_start, first)
    t_end = np.maximum.reduceat(w_end, first)
    bits = np.bitwise_or.reduceat(w_bit, first)
    return trig_ev, t_start, t_end, bits


def _dom_draws(rng, cdf: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), N_SENSORS - 1).astype(np.int64)


def noise_hits(rng, win_lo: np.ndarray, win_hi: np.ndarray, bursts: bool = True):
    """Dark-noise hits (event, sensor, time) over the readout windows [win_lo, win_hi].

    With ``bursts``: uncorrelated Poisson hits at 250 Hz (scaled 780/560 on high-QE DOMs) plus
    correlated bursts of 3-4 hits on one DOM, the burst starts a Poisson process that carries the rest
    of the 560 / 780 Hz, the hits of a burst separated by exponential gaps (mean BURST_GAP_NS); bursts
    that start before the window reach into it. Without: all 560 / 780 Hz as Poisson hits."""
    det = detector()
    length = (win_hi - win_lo).astype(np.float64)
    rate = det.noise_uncorrelated if bursts else det.noise_rate
    n = rng.poisson(rate.sum() * length)
    ev = np.repeat(np.arange(len(win_lo)), n)
    sen = _dom_draws(rng, np.cumsum(rate) / rate.sum(), len(ev))
    t = win_lo[ev] + np.floor(rng.random(len(ev)) * (length[ev] + 1)).astype(np.int64)
    if not bursts:
        return ev, sen, t
    pad = 20.0 * BURST_GAP_NS
    nb = rng.poisson(det.burst_rate.sum() * (length + pad))
    b_ev = np.repeat(np.arange(len(win_lo)), nb)
    b_sen = _dom_draws(rng, np.cumsum(det.burst_rate) / det.burst_rate.sum(), len(b_ev))
    b_t0 = win_lo[b_ev] - pad + rng.random(len(b_ev)) * (length[b_ev] + pad)
    size = rng.choice(np.asarray(BURST_SIZES), len(b_ev))
    owner = np.repeat(np.arange(len(b_ev)), size)
    first = run_starts(owner)
    gaps = np.where(first, 0.0, rng.exponential(BURST_GAP_NS, len(owner)))
    h_t = np.floor(b_t0[owner] + segment_cumsum(gaps, first)).astype(np.int64)
    h_ev = b_ev[owner]
    inside = np.flatnonzero((h_t >= win_lo[h_ev]) & (h_t <= win_hi[h_ev]))
    return (np.concatenate([ev, h_ev[inside]]), np.concatenate([sen, b_sen[owner[inside]]]),
            np.concatenate([t, h_t[inside]]))


def afterpulse_times(rng, t: np.ndarray, n_pe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Afterpulses of PE samples at times t carrying n_pe photo-electrons each: Poisson(0.06 n_pe)
    per sample, delayed by a Gaussian 6 +- 2 us (at least 100 ns). Returns (sample index, time)."""
    k, some = thin(rng, (AFTERPULSE_PROB * n_pe).astype(np.float32))  # Poisson, cheap where mostly 0
    src = np.repeat(some, k)
    delay = np.maximum(rng.normal(AFTERPULSE_DELAY_NS, AFTERPULSE_SPREAD_NS, len(src)), 100.0)
    return src, t[src] + np.rint(delay).astype(np.int64)
