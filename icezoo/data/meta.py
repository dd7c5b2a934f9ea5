"""The Kaggle layout's paths and meta: which batch files exist and which events (pulse row ranges,
truth) each holds.

The meta is scanned lazily and filtered by ``batch_id`` (the full train_meta has 132M rows; it is
never loaded whole).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from icezoo.core.errors import IcezooError
from icezoo.data.checks import first_line as _first_line, first_null as _first_null
from icezoo.data.specs import _ids_text

META_COLUMNS = ("batch_id", "event_id", "first_pulse_index", "last_pulse_index")
TRUTH_COLUMNS = ("azimuth", "zenith")
_BATCH_RE = re.compile(r"^batch_(\d+)\.parquet$")


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
