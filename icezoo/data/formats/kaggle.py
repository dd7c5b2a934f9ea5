"""The Kaggle "Neutrinos in Deep Ice" layout with polars, one batch file at a time.

Layout (``DIR`` = a dataset directory, see :mod:`icezoo.data.kaggle_layout` for the writer)::

    DIR/{split}/batch_N.parquet   event_id (index, int64), sensor_id int16, time int64 ns, charge float64,
                                  auxiliary bool; the pulses of an event are contiguous
    DIR/{split}_meta.parquet      batch_id, event_id, first_pulse_index, last_pulse_index (inclusive, rows
                                  of the batch file), azimuth, zenith (train only)
    DIR/sensor_geometry.csv       sensor_id,x,y,z (optional: the shipped IceCube-86 copy is the default)
    DIR/{split}_truth.parquet     optional: truth beyond the direction (event_id and any of energy, pid, ...)

Everything after the read is vectorised numpy over the whole file. Every problem with the input is
one :class:`IcezooError` line naming the file (and the event or row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icezoo.core.batch import PulseChunk
from icezoo.core.errors import IcezooError
from icezoo.data.checks import first_line as _first_line, first_null as _first_null
from icezoo.data.formats import DataSource
from icezoo.data.geometry import load_geometry, outside_geometry
from icezoo.data.meta import (batch_path, file_counts, file_pulse_counts, list_batches, meta_path, read_meta,
                              split_events)
from icezoo.data.raw import RawFile

PULSE_COLUMNS = ("event_id", "sensor_id", "time", "charge", "auxiliary")


def check_batch_file(data_dir: str | Path, split: str, batch_id: int) -> Path:
    """The batch file exists and its parquet footer has the pulse columns with usable dtypes (no row
    is read): what ``train`` checks for every file before it makes a run directory."""
    import polars as pl

    path = batch_path(data_dir, split, batch_id)
    if not path.is_file():
        if not (Path(data_dir) / split).is_dir():
            raise IcezooError(f"{Path(data_dir) / split}: no '{split}' folder in the dataset directory")
        raise IcezooError(f"{path}: batch file not found")
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # noqa: BLE001
        raise IcezooError(f"{path}: cannot read parquet (truncated or corrupt?): {_first_line(exc)}") from None
    missing = [c for c in PULSE_COLUMNS if c not in schema]
    if missing:
        raise IcezooError(f"{path}: missing column(s) {', '.join(missing)}")
    for col, ok, want in (("event_id", "is_integer", "int64"), ("sensor_id", "is_integer", "int16"),
                          ("time", "is_numeric", "int64 ns"), ("charge", "is_numeric", "float64"),
                          ("auxiliary", None, "bool")):
        dt = schema[col]
        good = dt == pl.Boolean if ok is None else getattr(dt, ok)()
        if not good:
            raise IcezooError(f"{path}: column {col} has dtype {dt}, expected {want}")
    return path


def _read_pulses(path: Path):
    import polars as pl

    try:
        df = pl.read_parquet(path, columns=list(PULSE_COLUMNS))
    except Exception as exc:  # noqa: BLE001
        raise IcezooError(f"{path}: cannot read parquet (truncated or corrupt?): {_first_line(exc)}") from None
    null = _first_null(df, PULSE_COLUMNS)
    if null:
        raise IcezooError(f"{path}: row {null[1]}: {null[0]} is null")
    return df


def _check_ranges(mpath: Path, path: Path, batch_id: int, meta: dict, n_rows: int):
    """The meta's pulse ranges tile the file's rows: (first, last, lengths, event ids)."""
    first, last = meta["first_pulse_index"].astype(np.int64), meta["last_pulse_index"].astype(np.int64)
    meta_eid = meta["event_id"].astype(np.int64)
    if len(first) == 0:
        raise IcezooError(f"{mpath}: no events of batch {batch_id} in the meta")
    lengths = last - first + 1
    # a zero-pulse event (last_pulse_index = first_pulse_index - 1) is valid: it owns no row; loaders
    # skip it (< 2 pulses), predict gives it the no-pulse fallback, LineFit its fallback direction
    negative = np.flatnonzero(lengths < 0)
    if len(negative):
        i = negative[0]
        raise IcezooError(f"{mpath}: batch {batch_id}, event {meta_eid[i]}: last_pulse_index {last[i]} is below "
                          f"first_pulse_index {first[i]} - 1 (a zero-pulse event has last = first - 1)")
    bad = np.flatnonzero(first != np.concatenate([[0], last[:-1] + 1]))
    if len(bad):
        i = bad[0]
        raise IcezooError(f"{mpath}: batch {batch_id}, event {meta_eid[i]}: pulse indices {first[i]}..{last[i]} "
                          f"do not follow the previous event (expected first_pulse_index "
                          f"{0 if i == 0 else last[i - 1] + 1})")
    if last[-1] != n_rows - 1:
        raise IcezooError(f"{mpath}: batch {batch_id}: meta covers rows 0..{last[-1]} but {path.name} has {n_rows} rows")
    return first, last, lengths, meta_eid


def _check_event_ids(path: Path, event_id: np.ndarray, first, last, lengths, meta_eid) -> None:
    """The file's event_id is the meta's at both ends of every event and changes only between events."""
    full = np.flatnonzero(lengths > 0)
    f_first, f_last, f_eid = first[full], last[full], meta_eid[full]
    wrong = np.flatnonzero((event_id[f_first] != f_eid) | (event_id[f_last] != f_eid))
    if len(wrong):
        i = wrong[0]
        r = f_first[i] if event_id[f_first[i]] != f_eid[i] else f_last[i]
        raise IcezooError(f"{path}: row {r} has event_id {event_id[r]} but the meta puts event {f_eid[i]} there")
    changes = np.flatnonzero(event_id[1:] != event_id[:-1]) + 1
    if len(changes) != max(len(full) - 1, 0) or not np.array_equal(changes, f_first[1:]):
        odd = np.setdiff1d(changes, f_first[1:])
        r = int(odd[0]) if len(odd) else int(f_first[1])
        raise IcezooError(f"{path}: row {r} has event_id {event_id[r]}, which does not match the meta's pulse ranges")


def check_finite(path, event_id: np.ndarray, columns) -> None:
    """No NaN/inf in the float columns ``(name, values)``: one line naming the row and event."""
    for name, values in columns:
        if values.dtype.kind == "f":
            nan = np.flatnonzero(~np.isfinite(values))
            if len(nan):
                r = nan[0]
                raise IcezooError(f"{path}: row {r} (event {event_id[r]}): {name} is {values[r]}")


def check_sensors(path, event_id: np.ndarray, sensor_id: np.ndarray, geo: np.ndarray, data_dir=None,
                  geometry=None) -> None:
    """Every sensor_id has a row in the geometry table (else the csv or the batch file is named)."""
    lo, hi = (int(sensor_id.min()), int(sensor_id.max())) if len(sensor_id) else (0, 0)
    holes = np.isnan(geo[:, 0])
    if lo < 0 or hi >= len(geo) or (holes.any() and holes[sensor_id].any()):
        valid = np.zeros(len(geo) + 1, dtype=bool)
        valid[:-1] = ~holes
        sid = sensor_id.astype(np.int64)
        r = int(np.flatnonzero(~valid[np.where((sid < 0) | (sid >= len(geo)), len(geo), sid)])[0])
        outside_geometry(path, r, event_id[r], int(sid[r]), geo, data_dir, geometry)


def time_order(offsets: np.ndarray, time: np.ndarray, *columns: np.ndarray) -> list[np.ndarray]:
    """``[time, *columns]`` sorted (stably) by time within each event; untouched when already ordered."""
    lengths = np.diff(offsets)
    n_rows = len(time)
    unordered = time[1:] < time[:-1]
    starts = offsets[1:-1]
    unordered[starts[(starts > 0) & (starts < n_rows)] - 1] = False  # event boundaries (empty events own none)
    if not unordered.any():
        return [time, *columns]
    order = np.lexsort((time, np.repeat(np.arange(len(lengths)), lengths)))
    return [time[order], *(c[order] for c in columns)]


def read_raw(data_dir: str | Path, split: str, batch_id: int, geometry=None) -> RawFile:
    """Read and validate one batch file and its meta rows (see :func:`read_chunk`)."""
    path = check_batch_file(data_dir, split, batch_id)
    df = _read_pulses(path)
    meta = read_meta(data_dir, split, batch_id)
    mpath = meta_path(data_dir, split)
    first, last, lengths, meta_eid = _check_ranges(mpath, path, batch_id, meta, df.height)
    event_id = df["event_id"].to_numpy()
    _check_event_ids(path, event_id, first, last, lengths, meta_eid)
    sensor_id = df["sensor_id"].to_numpy()
    time = df["time"].to_numpy()
    charge = df["charge"].to_numpy().astype(np.float64, copy=False)
    auxiliary = df["auxiliary"].to_numpy()
    check_finite(path, event_id, (("time", time), ("charge", charge)))
    geo = load_geometry(data_dir, geometry)
    check_sensors(path, event_id, sensor_id, geo, data_dir, geometry)
    offsets = np.zeros(len(first) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # Kaggle files are time ordered within events; re-sorted (stably, by event then time) only if not
    time, sensor_id, charge, auxiliary = time_order(offsets, time, sensor_id, charge, auxiliary)
    azimuth, zenith = meta.get("azimuth"), meta.get("zenith")
    if azimuth is not None:
        bad = np.flatnonzero(~(np.isfinite(azimuth) & np.isfinite(zenith)))
        if len(bad):
            raise IcezooError(f"{mpath}: event {meta_eid[bad[0]]}: azimuth/zenith is not finite")
    columns = tuple(np.ascontiguousarray(geo[:, i]) for i in range(3))
    return RawFile(path=path, sensor_id=sensor_id, time=time, charge=charge, auxiliary=auxiliary.astype(bool, copy=False),
                   offsets=offsets, event_id=meta_eid, azimuth=azimuth, zenith=zenith, geo=columns)


def read_chunk(data_dir: str | Path, split: str, batch_id: int, geometry=None) -> PulseChunk:
    """All pulses of ``DIR/{split}/batch_{batch_id}.parquet`` with DOM positions, events as in the meta.

    Events are in meta order (by first_pulse_index) and pulses in time order within each event;
    ``azimuth``/``zenith`` are filled when the meta has them (train). ``geometry``: see
    :func:`load_geometry`. Every input problem is an IcezooError naming the file (and row/event).
    """
    return read_raw(data_dir, split, batch_id, geometry).gather()


class KaggleSource(DataSource):
    """A Kaggle-layout folder: the reader above, unchanged (batch = one batch_N.parquet file)."""

    format = "kaggle"
    summary = "Kaggle 'Neutrinos in Deep Ice' folder: {train,test}/batch_N.parquet + {split}_meta.parquet"

    @classmethod
    def detect(cls, path: Path) -> bool:
        return path.is_dir() and ((path / "train").is_dir() or (path / "test").is_dir()
                                  or any(path.glob("*_meta.parquet")))

    def batch_ids(self, split: str) -> list[int]:
        return list_batches(self.path, split)

    def check_batches(self, split: str, batch_ids) -> None:
        for b in batch_ids:
            check_batch_file(self.path, split, b)

    def counts(self, split: str, batch_ids, min_pulses: int = 2):
        return file_counts(self.path, split, list(batch_ids), min_pulses)

    def pulse_counts(self, split: str, batch_id: int) -> np.ndarray:
        return file_pulse_counts(self.path, split, batch_id)

    def meta(self, split: str, batch_id: int):
        return read_meta(self.path, split, batch_id)

    def read_raw(self, split: str, batch_id: int, geometry=None) -> RawFile:
        return read_raw(self.path, split, batch_id, geometry)

    def split_events(self, split: str):
        return split_events(self.path, split)

    def geometry(self):
        return load_geometry(self.path)

    def truth(self, split: str, batch_ids):
        """``{split}_truth.parquet`` (the simulator writes one) for the events of those batches."""
        import polars as pl

        path = self.path / f"{split}_truth.parquet"
        if not path.is_file():
            return None
        wanted = np.concatenate([self.meta(split, b)["event_id"] for b in batch_ids]) if batch_ids else np.zeros(0)
        try:
            rows = pl.col("event_id").is_in(pl.Series(wanted.astype(np.int64)))
            df = pl.scan_parquet(path).filter(rows).collect()  # the filter pushed into the scan: only these rows
        except Exception as exc:  # noqa: BLE001
            raise IcezooError(f"{path}: cannot read parquet (truncated or corrupt?): {_first_line(exc)}") from None
        return {c: df[c].to_numpy() for c in df.columns}

    def describe(self) -> list[str]:
        from icezoo.data.describe import describe_kaggle

        return describe_kaggle(self.path)
