"""Sensor tokens for sensor-level aggregation (timinar/iceaggr 2025): a chunk whose selection keeps
whole sensors -> one token per hit sensor plus every pulse packed (no pulse cap, no pulse padding).

:func:`prepare_sensors` selects, extracts the pipeline's features for *every* kept pulse and
groups the pulses by (event, sensor), vectorised over the chunk; :func:`pad_sensor_events` cuts a
batch out of it: the padded part is [B, S] over the hit sensors (S = most sensors of an event in the
batch, a few hundred at most), built by :func:`icezoo.data.prepare.pad_events` on the token rows, and
the pulses go flat into ``Batch.pulses`` (:class:`icezoo.core.PackedPulses`). Memory is O(pulses +
B * S) per batch, never O(B * most pulses of an event).

Tokens of an event are ordered by the time of their sensor's first pulse (ties: sensor id); a token's
pulses keep their time order. The token's ``xyzt`` is the sensor's position and its first-pulse time
relative to the event's first kept pulse; its ``features`` are those of its first pulse.
"""

from __future__ import annotations

import copy

import numpy as np

from icezoo.core.batch import Batch, PulseChunk
from icezoo.core.errors import IcezooError
from icezoo.data.prepare import Prepared, extract_features, pad_events


def sensor_level(selection) -> bool:
    """Whether a selection keeps whole sensors and asks for sensor tokens (declares ``sensor_tokens``)."""
    declared = getattr(selection, "declared_properties", None)
    return declared is not None and "sensor_tokens" in declared(selection.config)


class PreparedSensors:
    """A chunk after selection and features, grouped into sensor tokens.

    ``tokens``: a :class:`Prepared` over the tokens (one row per token, CSR by event through its
    chunk's ``offsets``, a last zero row for padding) that ``pad_events`` pads; ``pulse_offsets``
    [T + 1]: token t owns packed rows ``pulse_offsets[t]:pulse_offsets[t+1]``; ``feats`` [N, F]
    float32, ``dt`` [N] float32 (ns since the token's first pulse), ``charge`` [N] float32.
    """

    __slots__ = ("tokens", "pulse_offsets", "feats", "dt", "charge")

    def __init__(self, tokens: Prepared, pulse_offsets, feats, dt, charge):
        self.tokens, self.pulse_offsets, self.feats, self.dt, self.charge = tokens, pulse_offsets, feats, dt, charge


def _features(sel: PulseChunk, chunk: PulseChunk, features) -> tuple[np.ndarray, np.ndarray]:
    """Per-pulse features [N, F] and event features [E, Fe] (float32), checked as prepare checks them."""
    n = int(sel.offsets[-1])
    pulse_cols, event_cols = extract_features(sel, chunk, features)
    feats = np.concatenate(pulse_cols, axis=1) if pulse_cols else np.zeros((n, 0), np.float32)
    event_feats = np.concatenate(event_cols, axis=1) if event_cols else np.zeros((chunk.num_events, 0), np.float32)
    return feats, event_feats


def group_sensors(sel: PulseChunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, first, counts): the chunk's pulse rows in token order (event, first-pulse time, sensor;
    time order within a token), the row of each token's first pulse, and each token's pulse count."""
    ev = sel.event_index
    sid = np.asarray(sel.sensor_id, dtype=np.int64)
    key = ev * (int(sid.max(initial=0)) + 1) + sid
    order = np.argsort(key, kind="stable")  # grouped by (event, sensor); time order kept within a group
    k = key[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, len(k)])
    first = order[starts]
    tok = np.lexsort((sid[first], sel.time[first], ev[first]))
    counts, starts, first = counts[tok], starts[tok], first[tok]
    dest = np.cumsum(counts) - counts
    rows = order[np.repeat(starts - dest, counts) + np.arange(len(k))]
    return rows, first, counts


def prepare_sensors(chunk: PulseChunk, selection, features, rng: np.random.Generator, max_pulses: int | None = None,
                    buffers: dict | None = None) -> PreparedSensors:
    """Select (whole sensors), extract every feature for every kept pulse, group into sensor tokens.

    ``max_pulses`` and ``buffers`` are accepted for the loader's call and not used: no pulse is cut
    here (the selection's own ``max_pulses``, None by default, is the only pulse cap)."""
    sel = selection.select(chunk, rng)
    if sel.num_events != chunk.num_events:
        raise IcezooError(f"selection {selection.name}: returned {sel.num_events} events for {chunk.num_events}")
    feats, event_feats = _features(sel, chunk, features)
    rows, first, counts = group_sensors(sel)
    ev = sel.event_index[first]
    n_tok = len(first)
    tok_offsets = np.zeros(sel.num_events + 1, dtype=np.int64)
    np.cumsum(np.bincount(ev, minlength=sel.num_events), out=tok_offsets[1:])
    lengths = sel.lengths
    t0 = np.zeros(sel.num_events)
    t0[lengths > 0] = sel.time[sel.offsets[:-1][lengths > 0]]
    time = np.asarray(sel.time, dtype=np.float64)
    tok_xyzt = np.zeros((n_tok + 1, 4), dtype=np.float32)
    for i, c in enumerate((sel.x, sel.y, sel.z)):
        tok_xyzt[:n_tok, i] = c[first]
    tok_xyzt[:n_tok, 3] = time[first] - t0[ev]
    tok_feats = np.zeros((n_tok + 1, feats.shape[1]), dtype=np.float32)
    tok_feats[:n_tok] = feats[first]
    tok_sensor = np.empty(n_tok + 1, dtype=np.int64)
    tok_sensor[:n_tok] = np.asarray(sel.sensor_id, dtype=np.int64)[first]
    tok_sensor[n_tok] = chunk.pad_sensor
    tok_chunk = copy.copy(sel)  # the events' own fields (ids, counts, truth) with token offsets
    tok_chunk.offsets = tok_offsets
    tokens = Prepared(tok_chunk, tok_feats, tok_xyzt, tok_sensor, event_feats)
    pulse_offsets = np.zeros(n_tok + 1, dtype=np.int64)
    np.cumsum(counts, out=pulse_offsets[1:])
    dt = (time[rows] - np.repeat(time[first], counts)).astype(np.float32)
    return PreparedSensors(tokens, pulse_offsets, feats[rows], dt, np.asarray(sel.charge, np.float32)[rows])


def pad_sensor_events(prep: PreparedSensors, events, width: int | None = None) -> Batch:
    """The Batch of the given events (an index array or a slice): [B, S] sensor tokens padded as
    :func:`pad_events` pads pulses, and every pulse of those tokens in ``Batch.pulses``."""
    import torch

    from icezoo.core.batch import PackedPulses

    tok_chunk = prep.tokens.chunk
    if isinstance(events, slice):
        events = np.arange(tok_chunk.num_events)[events]
    ev = np.asarray(events, dtype=np.int64)
    batch = pad_events(prep.tokens, ev, width)
    starts = tok_chunk.offsets[ev]
    n_tok = tok_chunk.offsets[ev + 1] - starts
    dest = np.cumsum(n_tok) - n_tok
    trows = np.repeat(starts - dest, n_tok) + np.arange(int(n_tok.sum()))  # token rows, batch order
    slot = np.arange(len(trows)) - np.repeat(dest, n_tok)
    p0 = prep.pulse_offsets[trows]
    pc = prep.pulse_offsets[trows + 1] - p0
    pdest = np.cumsum(pc) - pc
    prows = np.repeat(p0 - pdest, pc) + np.arange(int(pc.sum()))
    pulses = PackedPulses(
        features=torch.from_numpy(prep.feats[prows]), dt=torch.from_numpy(prep.dt[prows]),
        charge=torch.from_numpy(prep.charge[prows]),
        event=torch.from_numpy(np.repeat(np.repeat(np.arange(len(ev), dtype=np.int64), n_tok), pc)),
        slot=torch.from_numpy(np.repeat(slot, pc).astype(np.int64)), num_events=len(ev))
    return batch.with_(pulses=pulses)


def chunk_to_sensor_batch(chunk: PulseChunk, selection, features, rng: np.random.Generator) -> Batch:
    """Every event of ``chunk`` as one sensor-token Batch (the sensor-level ``chunk_to_batch``)."""
    return pad_sensor_events(prepare_sensors(chunk, selection, features, rng), slice(None))
