"""A chunk -> selection and features over the whole chunk (:func:`prepare`) -> padded
:class:`~icezoo.core.Batch` objects (:func:`pad_events`: one row gather per array)."""

from __future__ import annotations

import numpy as np

from icezoo.core.batch import Batch, PulseChunk, angles_to_vector
from icezoo.core.errors import IcezooError
from icezoo.data.raw import LazyChunk


class Prepared:
    """A chunk after selection and feature extraction, ready to be cut into padded batches.

    Row-major, one row per selected pulse plus a last all-zero row that padded slots read:
    ``feats`` [rows + 1, F] float32 (the pulse features), ``xyzt`` [rows + 1, 4] float32 (x, y, z in
    m and t - t0 in ns), ``sensor`` [rows + 1] int64 ending with PAD_SENSOR; ``event_feats`` [E, Fe]
    float32. A padded batch is then one row gather per array (``np.take(..., axis=0)``).
    """

    __slots__ = ("chunk", "feats", "xyzt", "sensor", "event_feats")

    def __init__(self, chunk, feats, xyzt, sensor, event_feats):
        self.chunk, self.feats, self.xyzt, self.sensor, self.event_feats = chunk, feats, xyzt, sensor, event_feats


#: rows per slice when prepare turns feature columns into rows (a slice of every array fits in L2)
_ROWS_PER_SLICE = 32768


def _buffer(buffers: dict | None, key: str, shape: tuple, dtype) -> np.ndarray:
    """An uninitialised array of ``shape``, reusing ``buffers[key]``'s memory when it is big enough
    (fresh large arrays cost page faults on first touch)."""
    if buffers is None:
        return np.empty(shape, dtype=dtype)
    size = int(np.prod(shape))
    buf = buffers.get(key)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = buffers[key] = np.empty(max(size, int(size * 1.25)), dtype=dtype)
    return buf[:size].reshape(shape)


def extract_features(sel: PulseChunk, chunk: PulseChunk, features) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every extractor's float32 columns over the selected pulses ``sel`` of ``chunk``: (per-pulse
    arrays [N, F_i], event-level arrays [E, F_j]), each shape checked (one line naming the extractor)."""
    n = int(sel.offsets[-1])
    pulse_cols, event_cols = [], []
    for f in features:
        out = np.asarray(f.extract(sel, chunk), dtype=np.float32)
        want = chunk.num_events if f.event_level else n
        if out.ndim != 2 or out.shape != (want, f.out_dim):
            raise IcezooError(f"features {f.name}: returned shape {out.shape}, expected {(want, f.out_dim)}")
        (event_cols if f.event_level else pulse_cols).append(out)
    return pulse_cols, event_cols


def prepare(chunk: PulseChunk, selection, features, rng: np.random.Generator, max_pulses: int | None = None,
            buffers: dict | None = None) -> Prepared:
    """Select pulses and extract every feature over the whole chunk at once (vectorised).

    ``buffers``: a dict the caller keeps between calls to reuse the output arrays' memory; the
    previous call's Prepared must then no longer be used (a loader pads all of a block's batches,
    which copy, before it prepares the next block)."""
    if "sensor_tokens" in selection.declared_properties(selection.config):  # whole sensors: tokens, not pulses
        raise IcezooError(f"selection {selection.name} keeps whole sensors: prepare its chunks with "
                          "icezoo.data.sensors.prepare_sensors (the loaders do), not pulse by pulse")
    max_len = int(max_pulses if max_pulses is not None else selection.max_pulses)
    sel = selection.select(chunk, rng)
    if sel.num_events != chunk.num_events:
        raise IcezooError(f"selection {selection.name}: returned {sel.num_events} events for {chunk.num_events}")
    lengths = sel.lengths
    if lengths.max(initial=0) > max_len:  # a selection wider than max_pulses: keep the earliest
        rank = np.arange(int(sel.offsets[-1])) - np.repeat(sel.offsets[:-1], lengths)
        counts = np.minimum(lengths, max_len)
        offsets = np.zeros_like(sel.offsets)
        np.cumsum(counts, out=offsets[1:])
        sel = sel.take(np.flatnonzero(rank < max_len), offsets)
        lengths = sel.lengths
    n = int(sel.offsets[-1])
    pulse_cols, event_cols = extract_features(sel, chunk, features)
    # row-major with a zero row at the end: pad_events gathers whole rows (one take per array)
    F = sum(c.shape[1] for c in pulse_cols)
    feats = _buffer(buffers, "feats", (n + 1, F), np.float32)
    feats[n] = 0.0
    xyzt = _buffer(buffers, "xyzt", (n + 1, 4), np.float32)
    xyzt[n] = 0.0
    if isinstance(sel, LazyChunk):  # float32 x, y, z of each sensor as whole rows: the same values as sel.x cast
        table = np.zeros((len(sel.sensor_xyz[0]), 4), dtype=np.float32)
        for i, g in enumerate(sel.sensor_xyz):
            table[:, i] = g
        np.take(table, sel.sensor_index, axis=0, out=xyzt[:n])
        xyz = None
    else:
        xyz = (sel.x, sel.y, sel.z)
    t0 = np.zeros(sel.num_events)
    nonempty = lengths > 0
    t0[nonempty] = sel.time[sel.offsets[:-1][nonempty]]
    dt = sel.time - np.repeat(t0, lengths)
    # columns -> rows in slices that stay in cache while every column of the slice is written
    for a0 in range(0, n, _ROWS_PER_SLICE):
        s = slice(a0, min(n, a0 + _ROWS_PER_SLICE))
        a = 0
        for c in pulse_cols:
            for j in range(c.shape[1]):  # one strided 1-D copy per column (a 2-D one loops over short rows)
                feats[s, a + j] = c[s, j]
            a += c.shape[1]
        if xyz is not None:
            for i in range(3):
                xyzt[s, i] = xyz[i][s]
        xyzt[s, 3] = dt[s]
    sensor = _buffer(buffers, "sensor", (n + 1,), np.int64)
    sensor[:n] = sel.sensor_id
    sensor[n] = chunk.pad_sensor  # PAD_SENSOR on IceCube-86; the detector's sensor count elsewhere
    event_feats = np.concatenate(event_cols, axis=1) if event_cols else np.zeros((chunk.num_events, 0), np.float32)
    return Prepared(sel, feats, xyzt, sensor, event_feats)


def pad_events(prep: Prepared, events, width: int | None = None) -> Batch:
    """Padded Batch of the given events of a prepared chunk (an index array or a slice), in that order.

    One index grid [B * L] maps every padded slot to its source row (or the zero row), and each
    row-major array is gathered with it at once: numpy, no Python loop over events.
    """
    import torch

    sel = prep.chunk
    if isinstance(events, slice):
        events = np.arange(sel.num_events)[events]
    ev = np.asarray(events, dtype=np.int64)
    starts = sel.offsets[ev]
    lengths = sel.offsets[ev + 1] - starts
    b = len(ev)
    L = int(width if width is not None else max(int(lengths.max(initial=0)), 1))
    dest0 = np.cumsum(lengths) - lengths
    rows = np.arange(int(dest0[-1] + lengths[-1]) if b else 0, dtype=np.int64)
    grid = np.full(b * L, len(prep.sensor) - 1, dtype=np.int64)
    grid[rows + np.repeat(np.arange(b, dtype=np.int64) * L - dest0, lengths)] = rows + np.repeat(starts - dest0, lengths)
    F = prep.feats.shape[1]
    target = None
    if sel.azimuth is not None:
        target = torch.from_numpy(angles_to_vector(sel.azimuth[ev], sel.zenith[ev]).astype(np.float32))
    return Batch(
        features=torch.from_numpy(np.take(prep.feats, grid, axis=0).reshape(b, L, F)),
        mask=torch.from_numpy(np.arange(L)[None, :] < lengths[:, None]),
        xyzt=torch.from_numpy(np.take(prep.xyzt, grid, axis=0).reshape(b, L, 4)),
        sensor_id=torch.from_numpy(np.take(prep.sensor, grid).reshape(b, L)),
        event_features=torch.from_numpy(prep.event_feats[ev]),
        n_pulses=torch.from_numpy(sel.n_pulses[ev].astype(np.int64)),
        event_id=torch.from_numpy(sel.event_id[ev].astype(np.int64)),
        target=target,
    )


def chunk_to_batch(chunk: PulseChunk, selection, features, rng: np.random.Generator, max_pulses: int | None = None) -> Batch:
    """Select, extract features and pad every event of ``chunk`` into one Batch.

    The width is the longest selected event (at most ``max_pulses``, default the selection's);
    ``xyzt`` holds metres and ns relative to each event's first selected pulse; ``target`` is the
    unit vector of (azimuth, zenith) when the chunk has truth. Events with fewer than 2 pulses are
    kept here (an event with none is all padding); loaders skip and count them for training.
    """
    prep = prepare(chunk, selection, features, rng, max_pulses)
    return pad_events(prep, slice(None))
