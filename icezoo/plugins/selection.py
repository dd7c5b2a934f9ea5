"""Pulse selection to ``max_pulses`` per event (the log's "max_events" / "max_len" / "rows").

Every selection is vectorised over a whole chunk, keeps the pulses of each event in time order,
leaves events of at most ``max_pulses`` pulses untouched, and is deterministic for a given rng.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from icezoo.core import PulseChunk, Selection
from icezoo.core.detector import C_ICE, C_VACUUM

#: ``max_pulses`` of a selection without a pulse cap (what the loader reads for its buckets)
UNCAPPED = 2**62

def keep_rows(chunk: PulseChunk, keep: np.ndarray) -> PulseChunk:
    """Restrict a chunk to the pulses where ``keep`` is True (order within events unchanged)."""
    rows = np.flatnonzero(keep)
    counts = np.bincount(chunk.event_index[rows], minlength=chunk.num_events)
    offsets = np.zeros(chunk.num_events + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return chunk.take(rows, offsets)


def rank_in_event(chunk: PulseChunk) -> np.ndarray:
    """Position of each pulse within its event (0 for the first)."""
    return np.arange(len(chunk.time)) - np.repeat(chunk.offsets[:-1], chunk.lengths)


class TimeOrder(Selection):
    """The first max_pulses pulses in time (plain truncation, EXP_00-EXP_11)."""

    name = "time_order"

    def select(self, chunk: PulseChunk, rng: np.random.Generator) -> PulseChunk:
        if chunk.lengths.max(initial=0) <= self.max_pulses:
            return chunk
        return keep_rows(chunk, rank_in_event(chunk) < self.max_pulses)


class AuxFirst(Selection):
    """Auxiliary-first: keep the auxiliary=False pulses, fill up at random (2nd-place solution, EXP_101).

    For an event with more than ``max_pulses`` pulses: every auxiliary=False (HLC) pulse is kept
    when there are at most ``max_pulses`` of them and the remaining slots go to auxiliary=True pulses
    drawn uniformly at random; with more HLC pulses than slots, ``max_pulses`` of them are drawn at
    random. The kept pulses stay in time order. Deterministic for a given rng.
    """

    name = "aux_first"

    def select(self, chunk: PulseChunk, rng: np.random.Generator) -> PulseChunk:
        k = self.max_pulses
        lengths = chunk.lengths
        long_ev = np.flatnonzero(lengths > k)
        if len(long_ev) == 0:
            return chunk
        # rows of the long events, and their event (0..len(long_ev)-1)
        ln = lengths[long_ev]
        ev = np.repeat(np.arange(len(long_ev)), ln)
        rows = np.arange(len(ev), dtype=np.int64) + np.repeat(chunk.offsets[long_ev] - (np.cumsum(ln) - ln), ln)
        aux = chunk.column("auxiliary", rows)  # a loader's lazy chunk gathers only these rows
        m = ln - np.add.reduceat(aux, np.cumsum(ln) - ln, dtype=np.int64)  # HLC pulses per event
        hlc_only = m >= k  # draw k of the HLC pulses; else keep every HLC pulse and draw k-m auxiliary ones
        in_pool = aux != hlc_only[ev]
        need = np.where(hlc_only, k, k - m)
        pool_rows = np.flatnonzero(in_pool)
        chosen = draw_per_event(ev[pool_rows], need, np.where(hlc_only, m, ln - m), rng)
        keep = np.ones(int(chunk.offsets[-1]), dtype=bool)
        keep[rows] = ~aux & ~hlc_only[ev]
        keep[rows[pool_rows[chosen]]] = True
        new_lengths = np.minimum(lengths, k)
        offsets = np.zeros_like(chunk.offsets)
        np.cumsum(new_lengths, out=offsets[1:])
        return chunk.take(np.flatnonzero(keep), offsets)


def draw_per_event(ev: np.ndarray, need: np.ndarray, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices into ``ev`` (rows grouped by event, ``pool[e]`` rows for event e) of ``need[e]`` rows drawn
    uniformly without replacement from each event's rows: those with the ``need`` smallest uniform keys.

    Exact without sorting every row: keys below a low cut (``need - 3 sd``) are in for sure, keys
    above a high cut (``need + 3 sd``) out for sure, and only the band between is sorted; an event
    whose counts do not bracket ``need`` (rare) sorts all its rows.
    """
    u = rng.random(len(ev))
    sd = np.sqrt(need)
    inv = 1.0 / np.maximum(pool, 1)
    u_lo = (np.maximum(need - 3.0 * sd - 2.0, 0.0) * inv)[ev]
    u_hi = ((need + 3.0 * sd + 2.0) * inv)[ev]
    sure = u < u_lo
    band = ~sure & (u < u_hi)
    nz = pool > 0
    seg = (np.cumsum(pool) - pool)[nz]  # rows are grouped by event, pool[e] rows each
    n_sure = np.zeros(len(need), dtype=np.int64)
    n_band = np.zeros(len(need), dtype=np.int64)
    if len(seg):
        n_sure[nz] = np.add.reduceat(sure, seg, dtype=np.int64)
        n_band[nz] = np.add.reduceat(band, seg, dtype=np.int64)
    rest = need - n_sure
    bad = (rest < 0) | (n_band < rest)
    if bad.any():
        bad_rows = bad[ev]
        sure &= ~bad_rows
        band |= bad_rows
        n_band[bad], rest[bad] = pool[bad], need[bad]
    cand = np.flatnonzero(band)
    order = cand[np.argsort(ev[cand] + u[cand])]  # event index + key in [0, 1): grouped by event, key order
    starts = np.cumsum(n_band) - n_band
    rank = np.arange(len(order)) - np.repeat(starts, n_band)
    return np.concatenate([np.flatnonzero(sure), order[rank < np.repeat(rest, n_band)]])


class LightSpeed(Selection):
    """Light-speed causality filter for events over max_pulses, then time-order truncation (EXP_12/13).

    For an event with more than ``max_pulses`` pulses:

    * reference pulse: the earliest auxiliary=False (HLC) pulse, or the earliest pulse when the event
      has none;
    * a pulse at distance ``d`` (m) from the reference DOM and time difference ``dt`` (ns) is causal
      when ``d <= c * |dt| + tolerance``, with ``c`` = 0.2210 m/ns (group speed in ice, ``speed="ice"``)
      or 0.2998 m/ns (``speed="vacuum"``) and ``tolerance`` in metres (default 10 m: DOM timing
      jitter of a few ns and the DOM's own size). Light from one track cannot connect DOMs faster
      than that, so a violating pulse is noise (or another particle) with respect to the reference;
    * non-causal pulses are dropped, then the first ``max_pulses`` causal pulses in time are kept.

    Events of at most ``max_pulses`` pulses are kept whole (the log filtered only long events);
    ``always = true`` filters every event. No randomness: the rng is unused.
    """

    name = "light_speed"

    class Config(Selection.Config):
        speed: Literal["ice", "vacuum"] = "ice"
        tolerance: float = Field(10.0, ge=0.0, description="metres of slack on the causality bound")
        always: bool = False

    def select(self, chunk: PulseChunk, rng: np.random.Generator) -> PulseChunk:
        lengths = chunk.lengths
        target = np.ones(chunk.num_events, dtype=bool) if self.config.always else lengths > self.max_pulses
        target &= lengths > 0
        if not target.any():
            return chunk
        c = C_ICE if self.config.speed == "ice" else C_VACUUM
        rows = np.flatnonzero(np.repeat(target, lengths))
        ev = chunk.event_index[rows]
        ref = reference_rows(chunk, target)  # one row per event (-1 where not targeted)
        r = ref[ev]
        dx = chunk.x[rows] - chunk.x[r]
        dy = chunk.y[rows] - chunk.y[r]
        dz = chunk.z[rows] - chunk.z[r]
        dist = np.sqrt(dx * dx + dy * dy + dz * dz)
        dt = np.abs(chunk.time[rows] - chunk.time[r])
        causal = dist <= c * dt + self.config.tolerance
        keep = np.ones(int(chunk.offsets[-1]), dtype=bool)
        keep[rows] = causal
        out = keep_rows(chunk, keep)
        if out.lengths.max(initial=0) > self.max_pulses:
            out = keep_rows(out, rank_in_event(out) < self.max_pulses)
        return out


def reference_rows(chunk: PulseChunk, which: np.ndarray) -> np.ndarray:
    """Row of the earliest auxiliary=False pulse of each event in ``which`` (earliest pulse if none); -1 elsewhere."""
    ref = np.full(chunk.num_events, -1, dtype=np.int64)
    idx = np.flatnonzero(which)
    if len(idx) == 0:
        return ref
    hlc = np.flatnonzero(~chunk.auxiliary)
    hlc_ev = chunk.event_index[hlc] if len(hlc) else np.zeros(0, dtype=np.int64)
    # the first HLC row of every event: first occurrence of each event in hlc_ev
    pos = np.searchsorted(hlc_ev, idx, side="left")
    found = (pos < len(hlc)) & (hlc_ev[np.minimum(pos, max(len(hlc) - 1, 0))] == idx) if len(hlc) else np.zeros(len(idx), bool)
    ref[idx] = chunk.offsets[idx]
    ref[idx[found]] = hlc[pos[found]]
    return ref


class Sensors(Selection):
    """Whole sensors with every pulse: at most max_sensors hit sensors per event, no pulse cap (sensor-level aggregation, timinar/iceaggr 2025).

    Keeps every pulse of the kept sensors, in time order. An event with more than ``max_sensors``
    hit sensors keeps those whose first pulse is earliest (``order = "earliest"``) or whose summed
    charge is largest (``"brightest"``, ties to the earlier sensor); ``max_sensors = None`` (the
    default) keeps every hit sensor. ``max_pulses`` is None by default (no cap); a number keeps the
    first N pulses in time of what is left (a memory guard that does drop pulses). Declares
    ``sensor_tokens``: the loader hands the model one token per kept sensor and the sensors' pulses
    packed (:class:`icezoo.core.PackedPulses`), which a ``sensor_agg`` embedder encodes. No randomness.
    """

    name = "sensors"
    properties = frozenset({"sensor_tokens"})
    example_params = {"max_sensors": 3}

    class Config(Selection.Config):
        max_pulses: int | None = Field(None, ge=1, description="None: every pulse of the kept sensors")
        max_sensors: int | None = Field(None, ge=1, description="hit sensors kept per event; None: all")
        order: Literal["earliest", "brightest"] = Field("earliest", description="which sensors a cap keeps")

    @property
    def max_pulses(self) -> int:
        return UNCAPPED if self.config.max_pulses is None else self.config.max_pulses

    def select(self, chunk: PulseChunk, rng: np.random.Generator) -> PulseChunk:
        out = chunk
        if self.config.max_sensors is not None and len(chunk.time):
            keep = sensor_rank(chunk, self.config.order) < self.config.max_sensors
            if not keep.all():
                out = keep_rows(chunk, keep)
        if out.lengths.max(initial=0) > self.max_pulses:
            out = keep_rows(out, rank_in_event(out) < self.max_pulses)
        return out


def sensor_rank(chunk: PulseChunk, order: str) -> np.ndarray:
    """For every pulse, the rank (0 first) of its sensor within its event: by first-pulse time
    (``"earliest"``) or by summed charge, largest first (``"brightest"``); ties by sensor id."""
    sid = np.asarray(chunk.sensor_id, dtype=np.int64)
    ev = chunk.event_index
    key = ev * (int(sid.max(initial=0)) + 1) + sid
    uniq, inv = np.unique(key, return_inverse=True)  # groups sorted by (event, sensor)
    g_event = ev[np.unique(inv, return_index=True)[1]]
    g_time = np.full(len(uniq), np.inf)
    np.minimum.at(g_time, inv, np.asarray(chunk.time, dtype=np.float64))
    primary = g_time if order == "earliest" else -np.bincount(inv, weights=chunk.charge, minlength=len(uniq))
    secondary = np.arange(len(uniq)) if order == "earliest" else g_time
    by = np.lexsort((secondary, primary, g_event))
    counts = np.bincount(g_event, minlength=chunk.num_events)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[by] = np.arange(len(uniq)) - np.repeat(np.cumsum(counts) - counts, counts)
    return rank[inv]
