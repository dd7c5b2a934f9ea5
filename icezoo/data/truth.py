"""Truth columns for the tasks: one vocabulary over the simulator's truth and GraphNeT's.

A task names the columns it needs (``Task.columns``); the loader hands them over as float arrays,
one value per event (NaN where an event has none), in ``Batch.truth``. A name is either a numeric
column of the source's truth as it is (``energy``, ``inelasticity``, ``track_length``, ``pid``, ...),
or one of the derived columns below, built from what each source writes:

==============  ===================================================================================
name            from
==============  ===================================================================================
energy          the neutrino energy in GeV: ``energy`` (simulator and GraphNeT)
vertex_x/y/z    the interaction vertex in detector metres: the simulator's ``vertex_x/y/z``, GraphNeT's
                ``position_x/y/z``
track           1 for a track, 0 for a cascade: the simulator's ``event_type`` (through_going_track and
                starting_track are tracks); GraphNeT's ``pid`` and ``interaction_type`` (a track is a
                nu_mu charged-current interaction, ``|pid| == 14`` and ``interaction_type == 1``, as
                GraphNeT's own track label, or a muon, ``|pid| == 13``, which GraphNeT's label would
                call a cascade; every other neutrino is a cascade; any other code, e.g. a converter's
                -1 fill value, is no label: NaN, left out of the loss)
event_class     the simulator's three classes as 0, 1, 2 (:data:`EVENT_CLASSES` order)
==============  ===================================================================================
"""

from __future__ import annotations

import numpy as np

from icezoo.core.errors import IcezooError

#: the simulator's event types, in the order of the ``event_class`` column (icezoo.data.simulator)
EVENT_CLASSES = ("through_going_track", "starting_track", "cascade")
#: |PDG code| of the neutrinos (nu_e, nu_mu, nu_tau)
NEUTRINOS = (12, 14, 16)
#: the simulator's event types that are tracks
TRACK_TYPES = ("through_going_track", "starting_track")
#: derived column -> the source columns it is built from, one tuple per way (the first that is present wins)
DERIVED: dict[str, tuple[tuple[str, ...], ...]] = {
    "vertex_x": (("vertex_x",), ("position_x",)),
    "vertex_y": (("vertex_y",), ("position_y",)),
    "vertex_z": (("vertex_z",), ("position_z",)),
    "track": (("event_type",), ("pid", "interaction_type")),
    "event_class": (("event_type",),),
}


def available(columns) -> list[str]:
    """The task columns a source whose truth has ``columns`` can give (its own, and the derived ones)."""
    have = set(columns) - {"event_id", "batch_id"}
    derived = {name for name, ways in DERIVED.items() if any(set(way) <= have for way in ways)}
    return sorted(have | derived)


def _derive(name: str, raw: dict[str, np.ndarray]) -> np.ndarray:
    way = next(way for way in DERIVED[name] if set(way) <= set(raw))
    if way == ("event_type",):
        kind = np.asarray(raw["event_type"]).astype(str)
        if name == "track":
            return np.where(np.isin(kind, EVENT_CLASSES), np.isin(kind, TRACK_TYPES).astype(np.float64), np.nan)
        codes = np.full(len(kind), np.nan)
        for i, label in enumerate(EVENT_CLASSES):
            codes[kind == label] = i
        return codes
    if way == ("pid", "interaction_type"):
        pid = np.abs(np.asarray(raw["pid"], dtype=np.float64))
        itype = np.asarray(raw["interaction_type"], dtype=np.float64)
        track = ((pid == 14) & (itype == 1)) | (pid == 13)
        known = np.isin(pid, NEUTRINOS) | (pid == 13)  # a fill value (-1, 0) or another particle: no label
        return np.where(known, track.astype(np.float64), np.nan)
    return np.asarray(raw[way[0]], dtype=np.float64)


def task_truth(raw: dict[str, np.ndarray], names, where: str = "truth") -> dict[str, np.ndarray]:
    """``{name: float64 [E]}`` for the task columns ``names`` from a source's truth columns ``raw``
    (arrays of one length); a column that cannot be made is one line naming it and what exists."""
    out = {}
    for name in names:
        if name in raw and name not in DERIVED:
            values = np.asarray(raw[name])
            if not np.issubdtype(values.dtype, np.number) and values.dtype != bool:
                raise IcezooError(f"{where}: truth column '{name}' is not numeric ({values.dtype}); a task takes "
                                  f"numbers (the simulator's event_type is the task columns 'track' and 'event_class')")
            out[name] = values.astype(np.float64)
        elif name in available(raw):
            out[name] = _derive(name, raw)
        else:
            raise IcezooError(f"{where}: no truth column '{name}' (truth columns: {', '.join(available(raw)) or 'none'})")
    return out


def align(truth: dict[str, np.ndarray], event_id: np.ndarray) -> dict[str, np.ndarray]:
    """The columns of ``truth`` (a source's, with ``event_id``) for the events ``event_id``, in that
    order; NaN (None for text) where an event has no truth row."""
    ids = np.asarray(truth["event_id"], dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids[order], event_id)
    pos = np.minimum(pos, max(len(ids) - 1, 0))
    found = (ids[order][pos] == event_id) if len(ids) else np.zeros(len(event_id), bool)
    rows = order[pos] if len(ids) else np.zeros(len(event_id), np.int64)
    out = {}
    for name, values in truth.items():
        values = np.asarray(values)
        if np.issubdtype(values.dtype, np.number):
            col = values[rows].astype(np.float64) if len(ids) else np.full(len(event_id), np.nan)
            col[~found] = np.nan
        else:
            col = values[rows].astype(object) if len(ids) else np.full(len(event_id), None, dtype=object)
            col[~found] = None
        out[name] = col
    return out
