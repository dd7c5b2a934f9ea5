"""Reading the Kaggle "Neutrinos in Deep Ice" layout with polars, one batch file at a time.

Layout (``DIR`` = a dataset directory, see :mod:`icezoo.data.kaggle_layout` for the writer)::

    DIR/{split}/batch_N.parquet   event_id (index, int64), sensor_id int16, time int64 ns, charge float64,
                                  auxiliary bool; the pulses of an event are contiguous
    DIR/{split}_meta.parquet      batch_id, event_id, first_pulse_index, last_pulse_index (inclusive, rows
                                  of the batch file), azimuth, zenith (train only)
    DIR/sensor_geometry.csv       sensor_id,x,y,z (optional: the shipped IceCube-86 copy is the default)

The meta is scanned lazily and filtered by ``batch_id`` (the full train_meta has 132M rows; it is
never loaded whole). Everything after the read is vectorised numpy over the whole file. Every
problem with the input is one :class:`IcezooError` line naming the file (and the event or row).

Public API: :func:`list_batches`, :func:`parse_batches`, :func:`split_batches`, :func:`cycle_batches`,
:func:`read_chunk`, :func:`chunk_to_batch`, :func:`load_geometry`. The loaders build on
:func:`read_raw` (validated columns of one file; :meth:`RawFile.gather` makes the PulseChunk of any
events, :meth:`RawFile.gather_lazy` a :class:`LazyChunk` whose columns are gathered only where read),
:func:`prepare` (selection + features of a chunk, as row-major arrays) and :func:`pad_events` (one
padded Batch: one row gather per array).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from icezoo.core.batch import N_SENSORS, PAD_SENSOR, Batch, PulseChunk, angles_to_vector
from icezoo.core.errors import IcezooError

PULSE_COLUMNS = ("event_id", "sensor_id", "time", "charge", "auxiliary")
META_COLUMNS = ("batch_id", "event_id", "first_pulse_index", "last_pulse_index")
TRUTH_COLUMNS = ("azimuth", "zenith")
_BATCH_RE = re.compile(r"^batch_(\d+)\.parquet$")


# ---------------------------------------------------------------------------------------------
# Geometry


@lru_cache(maxsize=8)
def _load_geometry_csv(path: str, mtime: float) -> np.ndarray:
    import polars as pl

    try:
        df = pl.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise IcezooError(f"{path}: cannot read the geometry csv: {_first_line(exc)}") from None
    missing = [c for c in ("sensor_id", "x", "y", "z") if c not in df.columns]
    if missing:
        raise IcezooError(f"{path}: missing column(s) {', '.join(missing)} (expected sensor_id,x,y,z)")
    sid = df["sensor_id"].to_numpy()
    if not np.issubdtype(sid.dtype, np.integer) or len(sid) == 0 or sid.min() < 0:
        raise IcezooError(f"{path}: sensor_id must be non-negative integers")
    xyz = np.stack([df[c].cast(pl.Float64, strict=False).to_numpy() for c in ("x", "y", "z")], axis=1)
    bad = np.flatnonzero(~np.isfinite(xyz).all(axis=1))
    if len(bad):  # NaN there would later read as "sensor outside the geometry", blamed on a batch file
        r = int(bad[0])
        col = "xyz"[int(np.flatnonzero(~np.isfinite(xyz[r]))[0])]
        value = df[col][r]
        raise IcezooError(f"{path}: line {r + 2} (sensor_id {sid[r]}): {col} is "
                          f"{'empty' if value is None else value}, expected a finite number of metres")
    seen, first_row = np.unique(sid, return_index=True)
    if len(seen) != len(sid):
        r = int(np.setdiff1d(np.arange(len(sid)), first_row)[0])
        raise IcezooError(f"{path}: line {r + 2}: sensor_id {sid[r]} appears twice")
    table = np.full((int(sid.max()) + 1, 3), np.nan)
    table[sid] = xyz
    table.flags.writeable = False
    return table


def load_geometry(data_dir: str | Path | None = None, geometry: str | Path | np.ndarray | None = None) -> np.ndarray:
    """DOM positions as an array [n_sensors, 3] (metres) indexed by sensor_id; NaN rows for unknown ids.

    ``geometry`` may be an array, a csv path, or None: then ``DIR/sensor_geometry.csv`` when it
    exists, else the IceCube-86 table shipped with icezoo.
    """
    if isinstance(geometry, np.ndarray):
        return geometry
    path = geometry_path(data_dir, geometry)
    if not path.is_file():
        raise IcezooError(f"{path}: geometry file not found")
    return _load_geometry_csv(str(path.resolve()), path.stat().st_mtime)


def geometry_path(data_dir: str | Path | None = None, geometry: str | Path | None = None) -> Path:
    """The geometry csv :func:`load_geometry` reads: ``geometry``, else the dataset's own
    ``sensor_geometry.csv``, else the shipped table. A dataset's entry of that name that is not a
    regular file (a directory, say) is an error, not silently replaced by the shipped table."""
    if geometry is not None:
        return Path(geometry)
    local = Path(data_dir) / "sensor_geometry.csv" if data_dir is not None else None
    if local is not None and (local.exists() or local.is_symlink()):
        if not local.is_file():
            kind = "a directory" if local.is_dir() else "not a regular file"
            raise IcezooError(f"{local}: is {kind}; expected the dataset's geometry csv (sensor_id,x,y,z)")
        return local
    from icezoo.resources import geometry_csv

    return Path(geometry_csv())


# ---------------------------------------------------------------------------------------------
# Batch files and ranges


def batch_path(data_dir: str | Path, split: str, batch_id: int) -> Path:
    return Path(data_dir) / split / f"batch_{int(batch_id)}.parquet"


def list_batches(data_dir: str | Path, split: str = "train") -> list[int]:
    """Sorted batch ids of ``DIR/{split}/batch_N.parquet``; an error when there are none."""
    folder = Path(data_dir) / split
    if not Path(data_dir).is_dir():
        raise IcezooError(f"{data_dir}: dataset directory not found")
    if not folder.is_dir():
        raise IcezooError(f"{folder}: no '{split}' folder in the dataset directory")
    ids = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _BATCH_RE.match(p.name)))
    if not ids:
        raise IcezooError(f"{folder}: empty: no batch_N.parquet files")
    return ids


def parse_batches(spec: str, available: list[int]) -> list[int]:
    """Batch ids named by ``spec``, in order.

    ``"1:600"`` or ``"(1, 600)"`` (as the log writes it): the available ids in that inclusive range;
    ``"1,4,7"``: exactly those (each must exist); ``"1-3,5"`` or ``"1:3,5"``: ranges and ids mixed
    (what :func:`format_batches` writes); ``"cycle"``: every available file (the training loop
    walks them round-robin across epochs, see :func:`cycle_batches`).
    """
    avail = sorted(set(int(a) for a in available))
    text = str(spec).strip().lower().strip("()[] ")
    if text in ("cycle", "all"):
        if not avail:
            raise IcezooError(f"batches '{spec}': no batch files available")
        return avail
    m = re.fullmatch(r"(\d+)\s*[:,\-]\s*(\d+)", text) if (":" in text or "(" in str(spec)) else None
    if m:
        return _batch_range(spec, int(m.group(1)), int(m.group(2)), avail)
    ids: list[int] = []
    for part in text.split(","):
        if not part.strip():
            continue
        r = re.fullmatch(r"\s*(\d+)\s*(?:[:\-]\s*(\d+)\s*)?", part)
        if r is None:
            raise IcezooError(f"batches '{spec}': expected 'A:B', '(A, B)', 'A,B,C', 'A-B,C' or 'cycle'")
        if r.group(2) is None:
            ids.append(int(r.group(1)))
        else:
            ids.extend(_batch_range(spec, int(r.group(1)), int(r.group(2)), avail))
    if not ids:
        raise IcezooError(f"batches '{spec}': no batch ids")
    missing = [b for b in ids if b not in set(avail)]
    if missing:
        raise IcezooError(f"batches '{spec}': batch file(s) {_ids_text(missing)} not found (have {_ids_text(avail)})")
    return list(dict.fromkeys(ids))


def _batch_range(spec: str, lo: int, hi: int, avail: list[int]) -> list[int]:
    """The available ids in ``lo..hi`` (inclusive); an error when there are none."""
    if lo > hi:
        raise IcezooError(f"batches '{spec}': empty range ({lo} > {hi})")
    out = [b for b in avail if lo <= b <= hi]
    if not out:
        raise IcezooError(f"batches '{spec}': no available batch file in {lo}..{hi} (have {_ids_text(avail)})")
    return out


def format_batches(ids: list[int]) -> str:
    """Batch ids as text that :func:`parse_batches` reads back to the same ids (sorted, once each):
    runs of consecutive ids as ``A-B``, the others alone, ``[1, 2, 3, 5] -> "1-3,5"``; ``-`` for none."""
    ids = sorted(set(int(i) for i in ids))
    if not ids:
        return "-"
    parts, start, prev = [], ids[0], ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def split_batches(available: list[int], train_spec: str = "cycle", val_spec: str | None = None) -> tuple[list[int], list[int]]:
    """(training ids, validation ids), never overlapping.

    Without ``val_spec`` the validation files are the last ~10% (at least 1) of the available files
    that training does not name explicitly (of all files for ``cycle``), and they are removed from
    training. An explicit ``val_spec`` that overlaps an explicit training list is an error.
    """
    avail = sorted(set(int(a) for a in available))
    train = parse_batches(train_spec, avail)
    explicit_train = str(train_spec).strip().lower() not in ("cycle", "all")
    if val_spec is None:
        k = max(1, len(avail) // 10)
        outside = [b for b in avail if b not in set(train)]
        candidates = outside if (explicit_train and outside) else avail
        val = candidates[-k:]
    else:
        val = parse_batches(val_spec, avail)
        overlap = sorted(set(val) & set(train))
        if overlap and explicit_train:
            raise IcezooError(f"validation batches {_ids_text(overlap)} are also training batches ('{train_spec}')")
    train = [b for b in train if b not in set(val)]
    if not train:
        hint = ("; training needs at least 2 batch files, one held out for validation (icezoo simulate "
                "writes 10 for small sets; --events-per-batch N sets the size)" if len(avail) == 1 else "")
        raise IcezooError(f"no training batch file left after holding out validation {_ids_text(val)} "
                          f"(available: {_ids_text(avail)}){hint}")
    return train, val


#: Kaggle's files hold 200,000 events; simulated sets default to at most this many per file ...
MAX_EVENTS_PER_FILE = 50_000
#: ... and to at least this many files, so that the default split (the last ~10% of the files held
#: out for validation, see :func:`split_batches`) leaves files to train on
MIN_FILES = 10


def default_events_per_batch(n_events: int) -> int:
    """Events per batch file when nobody says: at most 50,000, and small sets cut into 10 files
    (3,000 events -> 10 files of 300), so that every simulated set trains as it comes."""
    return max(1, min(MAX_EVENTS_PER_FILE, -(-int(n_events) // MIN_FILES)))


def cycle_batches(train: list[int], epoch: int, per_epoch: int) -> list[int]:
    """The ``per_epoch`` training files of ``epoch`` when walking ``train`` round-robin (``cycle``)."""
    if not train:
        raise IcezooError("cycle: no training batch files")
    per_epoch = max(1, min(per_epoch, len(train)))
    start = (epoch * per_epoch) % len(train)
    return [train[(start + i) % len(train)] for i in range(per_epoch)]


def _ids_text(ids: list[int], limit: int = 8) -> str:
    ids = list(ids)
    text = ", ".join(str(i) for i in ids[:limit])
    return text + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Reading one batch file


def meta_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{split}_meta.parquet"


def scan_meta(data_dir: str | Path, split: str):
    """A polars LazyFrame over ``{split}_meta.parquet`` (nothing is read yet), schema checked."""
    import polars as pl

    path = meta_path(data_dir, split)
    if not path.is_file():
        raise IcezooError(f"{path}: meta file not found")
    try:
        lf = pl.scan_parquet(path)
        schema = lf.collect_schema()
    except Exception as exc:  # noqa: BLE001
        raise IcezooError(f"{path}: cannot read parquet (truncated or corrupt?): {_first_line(exc)}") from None
    missing = [c for c in META_COLUMNS if c not in schema]
    if missing:
        raise IcezooError(f"{path}: missing column(s) {', '.join(missing)}")
    for c in META_COLUMNS:
        if not schema[c].is_integer():
            raise IcezooError(f"{path}: column {c} has dtype {schema[c]}, expected an integer type")
    for c in TRUTH_COLUMNS:
        if c in schema and not schema[c].is_float():
            raise IcezooError(f"{path}: column {c} has dtype {schema[c]}, expected float64 radians")
    return lf


def read_meta(data_dir: str | Path, split: str, batch_id: int) -> dict[str, np.ndarray]:
    """The meta rows of one batch file (sorted by first_pulse_index), as numpy arrays."""
    import polars as pl

    lf = scan_meta(data_dir, split)
    schema = lf.collect_schema()
    cols = list(META_COLUMNS) + ([c for c in TRUTH_COLUMNS] if all(c in schema for c in TRUTH_COLUMNS) else [])
    path = meta_path(data_dir, split)
    try:
        df = lf.select(cols).filter(pl.col("batch_id") == int(batch_id)).collect()
    except Exception as exc:  # noqa: BLE001
        raise IcezooError(f"{path}: cannot read parquet (truncated or corrupt?): {_first_line(exc)}") from None
    null = _first_null(df, cols)
    if null:
        c, i = null
        raise IcezooError(f"{path}: batch {int(batch_id)}, event {df['event_id'][i]}: {c} is null")
    df = df.sort(["first_pulse_index", "last_pulse_index"])  # a zero-pulse event (last = first - 1) first
    return {c: df[c].to_numpy() for c in cols}


def meta_batch_ids(data_dir: str | Path, split: str) -> list[int]:
    """Sorted batch ids the meta names (one lazy pass over its batch_id column)."""
    import polars as pl

    lf = scan_meta(data_dir, split)
    try:
        ids = lf.select(pl.col("batch_id").unique()).collect()["batch_id"].to_list()
    except Exception as exc:  # noqa: BLE001
        raise IcezooError(f"{meta_path(data_dir, split)}: cannot read parquet (truncated or corrupt?): "
                          f"{_first_line(exc)}") from None
    return sorted(int(b) for b in ids)


def require_batch_files(data_dir: str | Path, split: str, batch_ids) -> None:
    """Every batch file the meta names for ``batch_ids`` must exist: a missing one is an error, never
    a silently smaller dataset."""
    missing = [int(b) for b in batch_ids if not batch_path(data_dir, split, b).is_file()]
    if missing:
        raise IcezooError(f"{meta_path(data_dir, split)}: names batch file(s) {_ids_text(missing)} that "
                          f"{Path(data_dir) / split} does not have (e.g. batch_{missing[0]}.parquet is missing)")


def split_events(data_dir: str | Path, split: str) -> tuple[np.ndarray, list[int]]:
    """(event_id of every meta row, in meta order; the split's batch ids) for commands that read a
    whole split (``predict``, ``linefit``): one validation for all of them. event_id must be unique
    across the split, every batch file the meta names must exist and every batch file must have
    meta rows."""
    import polars as pl

    files = list_batches(data_dir, split)
    lf = scan_meta(data_dir, split)
    path = meta_path(data_dir, split)
    try:
        meta = lf.select("batch_id", "event_id").collect()
    except Exception as exc:  # noqa: BLE001
        raise IcezooError(f"{path}: cannot read parquet (truncated or corrupt?): {_first_line(exc)}") from None
    null = _first_null(meta, ("batch_id", "event_id"))
    if null:
        raise IcezooError(f"{path}: row {null[1]}: {null[0]} is null")
    event_id = meta["event_id"].to_numpy().astype(np.int64)
    dup = meta.filter(pl.col("event_id").is_duplicated())
    if dup.height:
        e = int(dup["event_id"][0])
        where = sorted(set(int(b) for b in dup.filter(pl.col("event_id") == e)["batch_id"]))
        raise IcezooError(f"{path}: duplicate event_id {e} ({dup.height} rows share an event_id; event {e} is in "
                          f"batch(es) {_ids_text(where)})")
    named = sorted(int(b) for b in meta["batch_id"].unique().to_list())
    require_batch_files(data_dir, split, named)
    extra = sorted(set(files) - set(named))
    if extra:
        raise IcezooError(f"{path}: no events of batch {extra[0]} in the meta "
                          f"({Path(data_dir) / split / f'batch_{extra[0]}.parquet'} has no meta rows)")
    return event_id, named


def file_counts(data_dir: str | Path, split: str, batch_ids: list[int], min_pulses: int = 2) -> dict[int, tuple[int, int]]:
    """``{batch_id: (events, events with at least min_pulses pulses)}`` from one lazy aggregation over
    the meta (no batch file is read, no per-event array is kept): what a loader plans with."""
    import polars as pl

    lf = scan_meta(data_dir, split)
    path = meta_path(data_dir, split)
    n = pl.col("last_pulse_index") - pl.col("first_pulse_index") + 1
    try:
        df = (lf.filter(pl.col("batch_id").is_in([int(b) for b in batch_ids]))
                .group_by("batch_id").agg(pl.len().alias("events"), (n >= min_pulses).sum().alias("kept"))
                .collect())
    except Exception as exc:  # noqa: BLE001
        raise IcezooError(f"{path}: cannot read parquet (truncated or corrupt?): {_first_line(exc)}") from None
    out = {int(b): (int(e), int(k)) for b, e, k in zip(df["batch_id"], df["events"], df["kept"])}
    for b in batch_ids:
        if int(b) not in out:
            raise IcezooError(f"{path}: no events of batch {int(b)} in the meta")
    return out


def file_pulse_counts(data_dir: str | Path, split: str, batch_id: int) -> np.ndarray:
    """Pulses of every event of one batch file (meta order), from the meta alone."""
    meta = read_meta(data_dir, split, batch_id)
    if len(meta["event_id"]) == 0:
        raise IcezooError(f"{meta_path(data_dir, split)}: no events of batch {int(batch_id)} in the meta")
    return (meta["last_pulse_index"] - meta["first_pulse_index"] + 1).astype(np.int64)


class RawFile:
    """One validated batch file as flat numpy columns in file order, plus its meta and the DOM table.

    ``offsets`` [E+1] delimit the events (meta order); :meth:`gather` builds the PulseChunk of any
    subset of events (positions looked up from the geometry then, so a loader only pays for the
    events it uses).
    """

    __slots__ = ("path", "sensor_id", "time", "charge", "auxiliary", "offsets", "event_id", "azimuth", "zenith", "geo")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)

    @property
    def num_events(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_pulses(self) -> np.ndarray:
        return np.diff(self.offsets)

    def gather_lazy(self, events: np.ndarray) -> "LazyChunk":
        """The :class:`LazyChunk` of ``events`` (indices into this file's events, any order): the same
        fields as :meth:`gather`, each pulse column gathered only when something reads it."""
        ev = np.asarray(events, dtype=np.int64)
        starts = self.offsets[ev]
        lengths = self.offsets[ev + 1] - starts
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return LazyChunk(self, offsets, shift=starts - offsets[:-1], event_id=self.event_id[ev], n_pulses=lengths,
                         azimuth=None if self.azimuth is None else self.azimuth[ev],
                         zenith=None if self.zenith is None else self.zenith[ev])

    def gather(self, events: np.ndarray | None = None) -> PulseChunk:
        """The PulseChunk of ``events`` (indices into this file's events, any order; None = all)."""
        if events is None:
            rows, lengths = slice(None), self.n_pulses
            ev = slice(None)
        elif len(events) and events[-1] - events[0] + 1 == len(events) and (np.diff(events) == 1).all():
            a, b = int(events[0]), int(events[-1]) + 1  # a contiguous run of events: views, no gather
            rows, ev = slice(int(self.offsets[a]), int(self.offsets[b])), slice(a, b)
            lengths = self.offsets[a + 1:b + 1] - self.offsets[a:b]
        else:
            ev = np.asarray(events, dtype=np.int64)
            lengths = self.offsets[ev + 1] - self.offsets[ev]
            starts = self.offsets[ev]
            total = int(lengths.sum())
            new_starts = np.cumsum(lengths) - lengths
            rows = np.arange(total, dtype=np.int64) + np.repeat(starts - new_starts, lengths)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        sid = self.sensor_id[rows]
        gx, gy, gz = self.geo
        idx = sid.astype(np.intp)
        return PulseChunk(
            sensor_id=sid, time=self.time[rows].astype(np.float64), charge=self.charge[rows],
            auxiliary=self.auxiliary[rows], x=gx[idx], y=gy[idx], z=gz[idx], offsets=offsets,
            event_id=self.event_id[ev], n_pulses=np.asarray(lengths, dtype=np.int64),
            azimuth=None if self.azimuth is None else self.azimuth[ev],
            zenith=None if self.zenith is None else self.zenith[ev],
        )


class LazyChunk(PulseChunk):
    """A PulseChunk of some events of a :class:`RawFile` whose pulse columns are gathered on first use.

    What the loader hands to selections and extractors: a selection that reads only ``offsets`` and
    ``auxiliary`` (aux_first, time_order) never gathers positions, times or charges of the pulses it
    drops, and :meth:`take` composes row indices instead of copying columns. Reading any field gives
    the same array an eager chunk would hold. Extras for the extractors' fast paths: ``sensor_index``
    (intp sensor ids) and ``sensor_xyz`` (the geometry's x, y, z columns indexed by sensor_id, every
    id in the chunk valid).
    """

    _LAZY = frozenset(PulseChunk.PULSE_FIELDS) | {"sensor_index", "src"}

    def __init__(self, raw: "RawFile | None" = None, offsets: np.ndarray | None = None, src=None, shift=None, **events):
        if raw is None:  # dataclasses.replace() of a LazyChunk passes every field: that is a plain chunk
            self.__class__ = PulseChunk
            PulseChunk.__init__(self, offsets=offsets, **events)
            return
        # no dataclass __init__: the pulse fields stay unset until __getattr__ fills them
        self._raw, self._src, self._shift = raw, src, shift
        self.offsets = offsets
        for k, v in events.items():
            setattr(self, k, v)
        self.sensor_xyz = raw.geo

    def __getattr__(self, name):
        if name not in LazyChunk._LAZY:
            raise AttributeError(name)
        raw = self._raw
        if name == "src":  # rows of the raw file, in chunk order
            if self._src is None:
                lengths = np.diff(self.offsets)
                self._src = np.arange(int(self.offsets[-1]), dtype=np.int64) + np.repeat(self._shift, lengths)
            value = self._src
        elif name == "time":
            value = raw.time[self.src].astype(np.float64)
        elif name == "sensor_index":
            value = self.sensor_id.astype(np.intp)
        elif name in ("x", "y", "z"):
            value = raw.geo["xyz".index(name)][self.sensor_index]
        else:
            value = getattr(raw, name)[self.src]
        object.__setattr__(self, name, value)
        return value

    def take(self, rows: np.ndarray, offsets: np.ndarray) -> "LazyChunk":
        return LazyChunk(self._raw, offsets, src=self.src[rows], event_id=self.event_id, n_pulses=self.n_pulses,
                         azimuth=self.azimuth, zenith=self.zenith)

    def column(self, name: str, rows: np.ndarray) -> np.ndarray:
        """``getattr(self, name)[rows]`` without gathering the whole column (raw columns only)."""
        if name in self.__dict__:
            return self.__dict__[name][rows]
        return getattr(self._raw, name)[self.src[rows]]


def _first_null(df, columns) -> tuple[str, int] | None:
    """(column, row) of the first null among ``columns`` of a polars frame, or None."""
    for name in columns:
        if df[name].null_count():
            return name, int(np.flatnonzero(df[name].is_null().to_numpy())[0])
    return None


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



def _outside_geometry(path: Path, row: int, event: int, sensor: int, geo: np.ndarray, data_dir, geometry) -> None:
    """The error for a pulse whose sensor the geometry has no position for: a hole in a geometry csv
    (rows missing inside its id range, or a dataset's csv shorter than IceCube's 5,160 sensors) is
    the csv's fault and names it; an id beyond every known sensor is the batch file's."""
    if isinstance(geometry, np.ndarray):  # an array loaded (or turned, for TTA) from the dataset's geometry
        src = geometry_path(data_dir) if data_dir is not None else None
    else:
        src = geometry_path(data_dir, geometry)
    holes = np.flatnonzero(np.isnan(geo[:, 0]))
    if src is not None and 0 <= sensor < max(len(geo), N_SENSORS):
        gaps = f"; it has no row for sensor_id(s) {_id_ranges(holes)}" if len(holes) else ""
        raise IcezooError(f"{src}: no position for sensor_id {sensor}, which {path} uses (row {row}, event {event}): "
                          f"the geometry lists sensor_id 0..{len(geo) - 1}{gaps}")
    raise IcezooError(f"{path}: row {row} (event {event}): sensor_id {sensor} is outside the geometry "
                      f"(0..{len(geo) - 1})")


def _id_ranges(ids: np.ndarray, most: int = 3) -> str:
    """[100..199, 300] style text of sorted ids (the first ``most`` runs)."""
    ids = np.asarray(ids, dtype=np.int64)
    cut = np.flatnonzero(np.diff(ids) != 1) + 1
    runs = [(int(r[0]), int(r[-1])) for r in np.split(ids, cut)]
    text = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in runs[:most])
    return text + (f" and {len(runs) - most} more gaps" if len(runs) > most else "")


def read_raw(data_dir: str | Path, split: str, batch_id: int, geometry=None) -> RawFile:
    """Read and validate one batch file and its meta rows (see :func:`read_chunk`)."""
    import polars as pl

    path = check_batch_file(data_dir, split, batch_id)
    try:
        df = pl.read_parquet(path, columns=list(PULSE_COLUMNS))
    except Exception as exc:  # noqa: BLE001
        raise IcezooError(f"{path}: cannot read parquet (truncated or corrupt?): {_first_line(exc)}") from None
    null = _first_null(df, PULSE_COLUMNS)
    if null:
        raise IcezooError(f"{path}: row {null[1]}: {null[0]} is null")

    meta = read_meta(data_dir, split, batch_id)
    mpath = meta_path(data_dir, split)
    n_rows = df.height
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

    event_id = df["event_id"].to_numpy()
    # the file's event_id must be the meta's at both ends of every event and change only between events
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

    sensor_id = df["sensor_id"].to_numpy()
    time = df["time"].to_numpy()
    charge = df["charge"].to_numpy().astype(np.float64, copy=False)
    auxiliary = df["auxiliary"].to_numpy()
    for name, values in (("time", time), ("charge", charge)):
        if values.dtype.kind == "f":
            nan = np.flatnonzero(~np.isfinite(values))
            if len(nan):
                r = nan[0]
                raise IcezooError(f"{path}: row {r} (event {event_id[r]}): {name} is {values[r]}")

    geo = load_geometry(data_dir, geometry)
    lo, hi = (int(sensor_id.min()), int(sensor_id.max())) if n_rows else (0, 0)
    holes = np.isnan(geo[:, 0])
    if lo < 0 or hi >= len(geo) or (holes.any() and holes[sensor_id].any()):
        valid = np.zeros(len(geo) + 1, dtype=bool)
        valid[:-1] = ~holes
        sid = sensor_id.astype(np.int64)
        r = int(np.flatnonzero(~valid[np.where((sid < 0) | (sid >= len(geo)), len(geo), sid)])[0])
        _outside_geometry(path, r, event_id[r], int(sid[r]), geo, data_dir, geometry)

    offsets = np.zeros(len(first) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # Kaggle files are time ordered within events; re-sort (stably, by event then time) only if not
    unordered = time[1:] < time[:-1]
    starts = offsets[1:-1]
    unordered[starts[(starts > 0) & (starts < n_rows)] - 1] = False  # event boundaries (empty events own none)
    if unordered.any():
        order = np.lexsort((time, np.repeat(np.arange(len(lengths)), lengths)))
        sensor_id, time, charge, auxiliary = sensor_id[order], time[order], charge[order], auxiliary[order]
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


# ---------------------------------------------------------------------------------------------
# Chunk -> padded Batch


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


def prepare(chunk: PulseChunk, selection, features, rng: np.random.Generator, max_pulses: int | None = None,
            buffers: dict | None = None) -> Prepared:
    """Select pulses and extract every feature over the whole chunk at once (vectorised).

    ``buffers``: a dict the caller keeps between calls to reuse the output arrays' memory; the
    previous call's Prepared must then no longer be used (a loader pads all of a block's batches,
    which copy, before it prepares the next block)."""
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
    pulse_cols, event_cols = [], []
    for f in features:
        out = np.asarray(f.extract(sel, chunk), dtype=np.float32)
        want = chunk.num_events if f.event_level else n
        if out.ndim != 2 or out.shape != (want, f.out_dim):
            raise IcezooError(f"features {f.name}: returned shape {out.shape}, expected {(want, f.out_dim)}")
        (event_cols if f.event_level else pulse_cols).append(out)
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
    sensor[n] = PAD_SENSOR
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


# ---------------------------------------------------------------------------------------------
# A quick random dataset in the exact layout (tests and benches; the simulator is for physics)


def write_toy_dataset(data_dir: str | Path, n_files: int = 2, events_per_file: int | list[int] = 1000, seed: int = 0,
                      split: str = "train", mean_pulses: float = 60.0, first_batch: int = 1, min_pulses: int = 2) -> Path:
    """Random events (log-normal pulse counts, random DOMs, sorted times, ~30% auxiliary) in the
    Kaggle layout, written with :mod:`icezoo.data.kaggle_layout`. Not physics: for I/O tests and benches.
    ``events_per_file`` may list a size per file."""
    from icezoo.data.kaggle_layout import write_batch, write_meta

    rng = np.random.default_rng(seed)
    data_dir = Path(data_dir)
    metas = {k: [] for k in ("batch_id", "event_id", "first", "last", "az", "ze")}
    next_event = 0
    sizes = [events_per_file] * n_files if isinstance(events_per_file, int) else list(events_per_file)
    for b, n_ev in zip(range(first_batch, first_batch + len(sizes)), sizes):
        n = np.maximum(min_pulses, rng.lognormal(np.log(mean_pulses) - 0.18, 0.6, n_ev).astype(np.int64))
        total = int(n.sum())
        eid = np.arange(next_event, next_event + n_ev, dtype=np.int64) * 3 + 7
        next_event += n_ev
        ev = np.repeat(np.arange(n_ev), n)
        time = np.round(6000 + rng.exponential(3000.0, total)).astype(np.int64)
        time = time[np.lexsort((time, ev))]
        write_batch(batch_path(data_dir, split, b), np.repeat(eid, n), rng.integers(0, N_SENSORS, total), time,
                    np.round(rng.lognormal(0.0, 0.7, total) / 0.025) * 0.025 + 0.025, rng.random(total) < 0.3)
        last = np.cumsum(n) - 1
        metas["batch_id"].append(np.full(n_ev, b))
        metas["event_id"].append(eid)
        metas["first"].append(last - n + 1)
        metas["last"].append(last)
        metas["az"].append(rng.uniform(0, 2 * np.pi, n_ev))
        metas["ze"].append(np.arccos(rng.uniform(-1, 1, n_ev)))
    cat = {k: np.concatenate(v) for k, v in metas.items()}
    truth = split == "train"
    write_meta(data_dir / f"{split}_meta.parquet", cat["batch_id"], cat["event_id"], cat["first"], cat["last"],
               cat["az"] if truth else None, cat["ze"] if truth else None)
    return data_dir
