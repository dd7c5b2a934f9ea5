"""What GraphNeT's SQLite and Parquet files share: the schema, the column mapping to icezoo's pulses,
the event index and the chunking. :mod:`.sqlite` and :mod:`.parquet` only say how to list tables and
read rows of an ``event_no`` range.

Schema (GraphNeT's writers): one table per pulse map, one row per pulse, ``event_no, dom_x, dom_y,
dom_z`` (m), ``dom_time`` (ns), ``charge`` (PE), ``hlc`` (1 = HLC), ``string, dom_number,
pmt_number, dom_type`` (Upgrade files add ``pmt_dir_x/y/z``); a ``truth`` table, one row per event:
``event_no, azimuth, zenith, energy, pid, interaction_type, position_x/y/z, ...``. Rows of an event
need not be contiguous or time ordered: ``event_no`` is the key.

Mapping: ``time = dom_time``, ``charge = charge``, ``auxiliary = (hlc != 1)``; an IceCube-86 DOM
(``string`` 1..86, ``dom_number`` 1..60, ``dom_type`` 20 where the column exists) gets the Kaggle
``sensor_id = (string - 1) * 60 + (dom_number - 1)`` and the IceCube-86 table's position, after
checking that its ``dom_x/y/z`` agree within :data:`POSITION_TOLERANCE` (a disagreement is an error,
never a silent remap); any other sensor (one PMT: string, dom_number, pmt_number) gets
:func:`~icezoo.data.detector.upgrade_sensor_id` and its rows' own position.

Splits and batches: ``train`` is the events of the truth table (a pulse event without truth is an
error), ``test`` every event of the pulse map or the truth table (no truth needed: prediction).
Events in ``event_no`` order are cut into batches of ``default_events_per_batch(events)`` (at most
50,000; small files into 10), numbered from 1, so ``--batches`` and the validation split work as on
batch files, fixed and disjoint.
"""

from __future__ import annotations

from abc import abstractmethod
from functools import cached_property

import numpy as np

from icezoo.core.detector import DOMS_PER_STRING, N_SENSORS, N_STRINGS, PAD_SENSOR
from icezoo.core.errors import IcezooError
from icezoo.data.detector import (DOM_TYPES, ICECUBE_DOM, MAX_MODULE, MAX_PMT, MAX_STRING, N_UPGRADE_IDS, Detector,
                                  upgrade_sensor_id)
from icezoo.data.formats import DataSource
from icezoo.data.raw import RawFile
from icezoo.data.specs import default_events_per_batch

PULSE_REQUIRED = ("event_no", "dom_x", "dom_y", "dom_z", "dom_time", "charge", "hlc", "string", "dom_number")
PULSE_OPTIONAL = ("pmt_number", "dom_type", "pmt_dir_x", "pmt_dir_y", "pmt_dir_z")
PMT_DIR = ("pmt_dir_x", "pmt_dir_y", "pmt_dir_z")
TRUTH_REQUIRED = ("event_no", "azimuth", "zenith")
#: truth kept with the events where the table has them (never invented when absent)
EXTRA_TRUTH = ("energy", "pid", "interaction_type", "position_x", "position_y", "position_z", "elasticity",
               "inelasticity", "track_length", "energy_track", "energy_cascade", "sim_type", "RunID", "SubrunID",
               "EventID", "SubEventID")
#: metres between a pulse row's dom_x/y/z and the IceCube-86 table's position of its DOM
POSITION_TOLERANCE = 0.1


class GraphNetSource(DataSource):
    """GraphNeT's schema over a table store; subclasses implement :meth:`_tables`, :meth:`_index_rows`,
    :meth:`_read` and :meth:`where`."""

    chunked = True
    extra_truth, truth_required = EXTRA_TRUTH, TRUTH_REQUIRED

    # -- what a subclass provides ---------------------------------------------------------------
    @abstractmethod
    def _tables(self) -> dict[str, list[str]]:
        """Table name -> its column names."""

    @abstractmethod
    def _index_rows(self, table: str) -> tuple[np.ndarray, np.ndarray]:
        """(sorted unique event_no of ``table``, rows per event_no), without reading other columns."""

    @abstractmethod
    def _read(self, table: str, columns: list[str], lo: int | None = None, hi: int | None = None,
              distinct: bool = False) -> dict[str, np.ndarray]:
        """Rows of ``table`` with lo <= event_no <= hi (all when None), as numpy columns; ``distinct``:
        the distinct rows of those columns."""

    @abstractmethod
    def where(self, table: str) -> str:
        """How a message names a table: ``FILE: table T`` or ``DIR/T``."""

    # -- tables ---------------------------------------------------------------------------------
    @cached_property
    def pulse_table(self) -> str:
        """The pulse map: ``--pulsemap``, else the only table with pulse columns."""
        tables = self._tables()
        if self.pulsemap is not None:
            if self.pulsemap not in tables:
                raise IcezooError(f"{self.path}: no table '{self.pulsemap}' (--pulsemap; tables: {', '.join(tables)})")
            name = self.pulsemap
        else:
            found = [t for t, cols in tables.items() if "dom_time" in cols or "dom_x" in cols]
            if not found:
                raise IcezooError(f"{self.path}: no pulse table (a table with event_no, dom_x, dom_time, charge, ...;"
                                  f" tables: {', '.join(tables) or 'none'})")
            if len(found) > 1:
                raise IcezooError(f"{self.path}: several pulse tables ({', '.join(found)}): pick one with --pulsemap")
            name = found[0]
        missing = [c for c in PULSE_REQUIRED if c not in tables[name]]
        if missing:
            raise IcezooError(f"{self.where(name)}: missing column {missing[0]} (a pulse map needs "
                              f"{', '.join(PULSE_REQUIRED)})")
        return name

    @cached_property
    def truth_columns(self) -> list[str] | None:
        """Columns of the truth table (None when the file has none)."""
        cols = self._tables().get(self.truth_table)
        if cols is None:
            return None
        if "event_no" not in cols:
            raise IcezooError(f"{self.where(self.truth_table)}: missing column event_no")
        return list(cols)

    def _need_truth(self) -> list[str]:
        cols = self.truth_columns
        if cols is None:
            raise IcezooError(f"{self.path}: no truth table '{self.truth_table}' (tables: {', '.join(self._tables())});"
                              f" training and evaluation need azimuth and zenith (--truth-table NAME)")
        missing = [c for c in TRUTH_REQUIRED if c not in cols]
        if missing:
            raise IcezooError(f"{self.where(self.truth_table)}: missing column {missing[0]} (training needs "
                              f"{', '.join(TRUTH_REQUIRED)})")
        return cols

    # -- the event index and the batches --------------------------------------------------------
    @cached_property
    def _pulse_index(self) -> tuple[np.ndarray, np.ndarray]:
        return self._index_rows(self.pulse_table)

    @cached_property
    def _truth_events(self) -> np.ndarray | None:
        if self.truth_columns is None:
            return None
        ev, n = self._index_rows(self.truth_table)
        if len(n) and n.max() > 1:
            raise IcezooError(f"{self.where(self.truth_table)}: event_no {ev[np.argmax(n)]} has {n.max()} rows "
                              f"(one row per event expected)")
        return ev

    def _index(self, split: str) -> tuple[np.ndarray, np.ndarray, int]:
        """(event_no of the split in order, pulses per event, events per batch)."""
        cache = self.__dict__.setdefault("_h_index", {})
        if split in cache:
            return cache[split]
        pe, pc = self._pulse_index
        if split == "train":
            self._need_truth()
            events = self._truth_events
            lost = np.setdiff1d(pe, events, assume_unique=True)
            if len(lost):
                raise IcezooError(f"{self.where(self.pulse_table)}: event_no {lost[0]} has pulses but no row in table "
                                  f"{self.truth_table} ({len(lost)} such event(s)): training needs truth for every event")
        else:
            te = self._truth_events
            events = pe if te is None else np.union1d(pe, te)
        counts = np.zeros(len(events), dtype=np.int64)
        counts[np.searchsorted(events, pe)] = pc
        if not len(events):
            raise IcezooError(f"{self.where(self.pulse_table)}: no events")
        cache[split] = (events, counts, default_events_per_batch(len(events)))
        return cache[split]

    def _range(self, split: str, batch_id: int) -> tuple[int, int]:
        events, _, size = self._index(split)
        k = int(batch_id)
        n_batches = -(-len(events) // size)
        if not 1 <= k <= n_batches:
            raise IcezooError(f"{self.path}: no batch {k} (batches 1..{n_batches} of {size:,} events in event_no order)")
        return (k - 1) * size, min(k * size, len(events))

    def batch_ids(self, split: str) -> list[int]:
        events, _, size = self._index(split)
        return list(range(1, -(-len(events) // size) + 1))

    def check_batches(self, split: str, batch_ids) -> None:
        for b in batch_ids:
            self._range(split, b)

    def pulse_counts(self, split: str, batch_id: int) -> np.ndarray:
        s, e = self._range(split, batch_id)
        return self._index(split)[1][s:e]

    def split_events(self, split: str):
        return self._index(split)[0].astype(np.int64), self.batch_ids(split)

    def meta(self, split: str, batch_id: int) -> dict[str, np.ndarray]:
        s, e = self._range(split, batch_id)
        events, counts, _ = self._index(split)
        n = counts[s:e]
        last = np.cumsum(n) - 1
        out = {"batch_id": np.full(e - s, int(batch_id)), "event_id": events[s:e].astype(np.int64),
               "first_pulse_index": last - n + 1, "last_pulse_index": last}
        if split == "train":
            out.update(self._direction(events[s:e]))
        return out

    def _direction(self, events: np.ndarray) -> dict[str, np.ndarray]:
        """azimuth, zenith (float64) of ``events`` (sorted event_no) from the truth table, checked finite."""
        t = self._truth_rows(events, ["azimuth", "zenith"])
        for c in ("azimuth", "zenith"):
            bad = np.flatnonzero(~np.isfinite(t[c]))
            if len(bad):
                raise IcezooError(f"{self.where(self.truth_table)}: event_no {events[bad[0]]}: {c} is {t[c][bad[0]]}")
        return {"azimuth": t["azimuth"], "zenith": t["zenith"]}

    def _truth_rows(self, events: np.ndarray, columns: list[str]) -> dict[str, np.ndarray]:
        """The truth table's ``columns`` for ``events`` (sorted; NaN where an event has no truth row)."""
        rows = self._read(self.truth_table, ["event_no", *columns], int(events[0]), int(events[-1]))
        eno = rows["event_no"].astype(np.int64)
        pos = np.searchsorted(events, eno)
        ok = (pos < len(events)) & (events[np.minimum(pos, len(events) - 1)] == eno)
        out = {}
        for c in columns:
            col = np.full(len(events), np.nan)
            col[pos[ok]] = rows[c][ok]
            out[c] = col
        return out

    def truth(self, split: str, batch_ids):
        if self.truth_columns is None:
            return None
        extra = [c for c in EXTRA_TRUTH if c in self.truth_columns]
        parts = []
        for b in batch_ids:
            s, e = self._range(split, b)
            events = self._index(split)[0][s:e]
            parts.append({"event_id": events.astype(np.int64), **self._truth_rows(events, extra)})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else None

    # -- one batch ------------------------------------------------------------------------------
    def read_raw(self, split: str, batch_id: int, geometry=None) -> RawFile:
        s, e = self._range(split, batch_id)
        events = self._index(split)[0][s:e]
        table = self.pulse_table
        have = self._tables()[table]
        cols = [c for c in (*PULSE_REQUIRED, "pmt_number", "dom_type") if c in have]
        cols += list(PMT_DIR) if all(c in have for c in PMT_DIR) else []
        rows = self._read(table, cols, int(events[0]), int(events[-1]))
        eno = rows["event_no"].astype(np.int64)
        for c in ("dom_x", "dom_y", "dom_z", "dom_time", "charge", "hlc", "string", "dom_number"):
            if rows[c].dtype.kind == "f":  # integer columns cannot hold NaN
                bad = np.flatnonzero(~np.isfinite(rows[c]))
                if len(bad):
                    raise IcezooError(f"{self.where(table)}: event_no {eno[bad[0]]}: {c} is {rows[c][bad[0]]}")
        rows, eno = _event_time_order(rows, eno)
        # rows grouped by event_no: each event's first row, found from the events (E lookups, not one per row)
        offsets = np.r_[np.searchsorted(eno, events), len(eno)].astype(np.int64)
        if not np.array_equal(np.diff(offsets), self._index(split)[1][s:e]):
            raise IcezooError(f"{self.where(table)}: the rows of event_no {events[0]}..{events[-1]} changed while "
                              f"reading (the file is being written?)")
        sensor_id, geo, pad = map_sensors(self.where(table), rows, eno, geometry)
        raw = RawFile(path=self.path, sensor_id=sensor_id, time=rows["dom_time"].astype(np.float64),
                      charge=rows["charge"].astype(np.float64), auxiliary=rows["hlc"] != 1, offsets=offsets,
                      event_id=events.astype(np.int64), azimuth=None, zenith=None, geo=geo)
        raw.pad_sensor = pad
        if "dom_type" in rows:  # the optional per-pulse columns (sensor type, PMT direction)
            raw.dom_type = _as_int(rows["dom_type"]).astype(np.int16)
        if PMT_DIR[0] in rows:
            raw.pmt_dir = np.stack([rows[c] for c in PMT_DIR], axis=1).astype(np.float32)
        if split == "train":
            d = self._direction(events)
            raw.azimuth, raw.zenith = d["azimuth"], d["zenith"]
        if self.truth_columns is not None:
            extra = [c for c in EXTRA_TRUTH if c in self.truth_columns]
            raw.truth = self._truth_rows(events, extra) if extra else None
        return raw

    # -- the detector and the summary -------------------------------------------------------------
    def detector(self) -> Detector:
        cache = self.__dict__.setdefault("_h_detector", [])
        if cache:
            return cache[0]
        table = self.pulse_table
        have = self._tables()[table]
        cols = [c for c in ("string", "dom_number", "pmt_number", "dom_type") if c in have]
        rows = self._read(table, cols, distinct=True)
        ic = _icecube86_rows(rows)
        types: dict[str, int] = {}
        code = rows["dom_type"].astype(np.int64) if "dom_type" in rows else np.where(ic, ICECUBE_DOM, -1)
        for t in np.unique(code):
            sel = code == t
            key = np.unique(np.stack([rows["string"][sel], rows["dom_number"][sel]]), axis=1).shape[1] \
                if t == ICECUBE_DOM else int(sel.sum())
            types[DOM_TYPES.get(int(t), f"dom_type {int(t)}")] = int(key)
        only86 = bool(ic.all())
        det = Detector("IceCube-86" if only86 else "IceCube-86 + other sensors (e.g. the Upgrade)", types,
                       icecube86=only86, pmt_direction=all(c in have for c in PMT_DIR),
                       sensor_type="dom_type" in have)
        cache.append(det)
        return det

    def describe(self) -> list[str]:
        from icezoo.data.describe import describe_graphnet

        return describe_graphnet(self)


def _event_time_order(rows: dict[str, np.ndarray], eno: np.ndarray):
    """Rows grouped by event_no and time ordered within each event (stable: equal times keep the
    file's order); untouched when they already are (a converted Kaggle file, GraphNeT's writers)."""
    step = np.diff(eno)
    t = rows["dom_time"]
    if (step >= 0).all() and ((step > 0) | (t[1:] >= t[:-1])).all():
        return rows, eno
    order = np.lexsort((t, eno))
    return {k: v[order] for k, v in rows.items()}, eno[order]


def _as_int(values: np.ndarray) -> np.ndarray:
    return np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values.astype(np.int64)


def _icecube86_rows(rows: dict[str, np.ndarray], s=None, d=None) -> np.ndarray:
    """Which rows are IceCube-86 DOMs (string 1..86, dom_number 1..60, dom_type 20 where given)."""
    if s is None:
        s, d = _as_int(rows["string"]), _as_int(rows["dom_number"])
    ic = (s >= 1) & (s <= N_STRINGS) & (d >= 1) & (d <= DOMS_PER_STRING)
    if "dom_type" in rows:
        ic &= _as_int(rows["dom_type"]) == ICECUBE_DOM
    return ic


def map_sensors(where: str, rows: dict[str, np.ndarray], eno: np.ndarray, geometry=None):
    """(sensor_id per row, geometry columns x, y, z indexed by sensor id, the padding id).

    IceCube-86 DOMs: the Kaggle sensor_id, positions checked against the IceCube-86 table (and then
    taken from ``geometry`` when given: the test-time rotations); other sensors: their upgrade id and
    their rows' positions."""
    from icezoo.data.geometry import load_geometry

    s, d = _as_int(rows["string"]), _as_int(rows["dom_number"])
    ic = _icecube86_rows(rows, s, d)
    every = bool(ic.all())
    sid = (s - 1) * DOMS_PER_STRING + (d - 1)
    if not every:
        sid[~ic] = 0
    ref = load_geometry(None)
    off = np.zeros(len(sid))
    for i, a in enumerate("xyz"):  # per axis, 1-D: no [n, 3] copies
        np.maximum(off, np.abs(rows[f"dom_{a}"] - np.take(ref[:, i], sid)), out=off)
    if not every:
        off[~ic] = 0.0
    bad = np.flatnonzero(off > POSITION_TOLERANCE)
    if len(bad):
        r = bad[0]
        p, q = [float(rows[f"dom_{a}"][r]) for a in "xyz"], ref[sid[r]]
        raise IcezooError(f"{where}: event_no {eno[r]}: string {s[r]} dom_number {d[r]} is at "
                          f"({p[0]:.2f}, {p[1]:.2f}, {p[2]:.2f}) m but IceCube-86 sensor_id {sid[r]} is at "
                          f"({q[0]:.2f}, {q[1]:.2f}, {q[2]:.2f}) m ({off[r]:.2f} m apart; "
                          f"tolerance {POSITION_TOLERANCE} m)")
    base = load_geometry(None, geometry)
    if every:
        return sid.astype(np.int16), tuple(np.ascontiguousarray(base[:, i]) for i in range(3)), PAD_SENSOR
    other = ~ic
    pos = np.stack([rows[f"dom_{a}"].astype(np.float64, copy=False) for a in "xyz"], axis=1)
    p = _as_int(rows["pmt_number"]) if "pmt_number" in rows else np.zeros(len(s), np.int64)
    out = (s < 1) | (s > MAX_STRING) | (d < 1) | (d > MAX_MODULE) | (p < 0) | (p >= MAX_PMT)
    if (out & other).any():
        r = np.flatnonzero(out & other)[0]
        raise IcezooError(f"{where}: event_no {eno[r]}: sensor string {s[r]} dom_number {d[r]} pmt_number {p[r]} is "
                          f"outside the supported range (strings 1..{MAX_STRING}, modules 1..{MAX_MODULE}, "
                          f"PMTs 0..{MAX_PMT - 1})")
    sid[other] = upgrade_sensor_id(s[other], d[other], p[other])
    geo = np.full((N_SENSORS + N_UPGRADE_IDS, 3), np.nan)
    geo[:N_SENSORS] = base[:N_SENSORS]
    geo[sid[other]] = pos[other]
    moved = np.flatnonzero(np.abs(geo[sid[other]] - pos[other]).max(axis=1) > POSITION_TOLERANCE)
    if len(moved):
        r = np.flatnonzero(other)[moved[0]]
        raise IcezooError(f"{where}: event_no {eno[r]}: sensor string {s[r]} dom_number {d[r]} pmt_number {p[r]} "
                          f"appears at two positions")
    return sid.astype(np.int32), tuple(np.ascontiguousarray(geo[:, i]) for i in range(3)), N_SENSORS + N_UPGRADE_IDS

