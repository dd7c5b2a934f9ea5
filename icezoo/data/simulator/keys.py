"""Packed (event, sensor, time) sort keys and helpers on sorted runs, shared by the light, readout
and event-assembly stages of the simulator."""

from __future__ import annotations

import numpy as np

from icezoo.core.detector import N_SENSORS

TIME_OFFSET = 1 << 23  # relative times are packed as non-negative 24-bit integers in sort keys
T_BITS = 24


def pack_keys(ev, sen, t):
    """One sortable int64 per (event, sensor, time): (event * N_SENSORS + sensor) << T_BITS, plus the
    time shifted by TIME_OFFSET (times within +-2^23 ns)."""
    return ((ev.astype(np.int64) * N_SENSORS + sen) << T_BITS) + (t + TIME_OFFSET)


def unpack_keys(key: np.ndarray):
    """(event, sensor, time) of packed keys (the inverse of ``pack_keys``)."""
    ev, sen = np.divmod(key >> T_BITS, N_SENSORS)
    return ev, sen, (key & ((1 << T_BITS) - 1)) - TIME_OFFSET


def merge_sorted(key_a, key_b, *pairs):
    """Merge two sorted key arrays (ties: a first) and, alike, the (a, b) value pairs."""
    pos_b = np.searchsorted(key_a, key_b, side="right") + np.arange(len(key_b))
    free = np.ones(len(key_a) + len(key_b), dtype=bool)
    free[pos_b] = False
    pos_a = np.flatnonzero(free)  # a fills the rest, in order (cheaper than searching b for each a)
    out = []
    for a, b in ((key_a, key_b), *pairs):
        m = np.empty(len(a) + len(b), dtype=np.result_type(a, b))
        m[pos_a] = a
        m[pos_b] = b
        out.append(m)
    return out


def run_starts(x: np.ndarray) -> np.ndarray:
    """Where a run of equal values starts in ``x`` (sorted or grouped): True at 0 and wherever the value changes."""
    new = np.ones(len(x), dtype=bool)
    new[1:] = x[1:] != x[:-1]
    return new


def segment_cumsum(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting where ``first`` is True (x sorted by segment)."""
    cs = np.cumsum(x)
    start = np.flatnonzero(first)
    base = (cs[start] - x[start])[np.cumsum(first) - 1]
    return cs - base
