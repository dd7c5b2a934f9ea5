"""Pulse selection to ``max_pulses`` per event (the log's "max_events" / "max_len" / "rows")."""

from __future__ import annotations

import numpy as np

from icezoo.core import PulseChunk, Selection, hookimpl


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


@hookimpl
def icezoo_components():
    return [TimeOrder]
