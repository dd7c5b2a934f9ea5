"""Writers for the Kaggle "IceCube - Neutrinos in Deep Ice" file layout (the simulator writes it,
the reader's golden-fixture test reuses it).

Layout (DIR = a dataset directory)::

    DIR/train/batch_N.parquet   pulses, N from 1: index event_id int64; columns sensor_id int16,
                                time int64 (ns), charge float64 (PE), auxiliary bool; the pulses of an
                                event are contiguous and time ordered
    DIR/train_meta.parquet      batch_id, event_id, first_pulse_index, last_pulse_index (inclusive,
                                rows within the batch file) int64; azimuth, zenith float64 (radians)
    DIR/test/batch_N.parquet    same as train
    DIR/test_meta.parquet       as train_meta without azimuth and zenith
    DIR/sensor_geometry.csv     sensor_id,x,y,z

``event_id`` is stored the way pandas stores a named index (a column plus the ``b"pandas"`` schema
metadata naming it in ``index_columns``), so ``pandas.read_parquet`` restores it as the index and
polars reads it as an ordinary ``event_id`` column, exactly like the competition files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: pulse columns of a batch file and their dtypes (event_id is the index, written last as pandas does)
BATCH_SCHEMA = pa.schema(
    [
        ("sensor_id", pa.int16()),
        ("time", pa.int64()),
        ("charge", pa.float64()),
        ("auxiliary", pa.bool_()),
        ("event_id", pa.int64()),
    ]
)
META_COLUMNS = ("batch_id", "event_id", "first_pulse_index", "last_pulse_index", "azimuth", "zenith")


def _pandas_metadata(schema: pa.Schema, index: str | None) -> bytes:
    """The ``b"pandas"`` schema metadata pandas itself writes (no pandas needed to produce it)."""
    columns = [
        {
            "name": f.name,
            "field_name": f.name,
            "pandas_type": "bool" if pa.types.is_boolean(f.type) else str(f.type.to_pandas_dtype().__name__),
            "numpy_type": "bool" if pa.types.is_boolean(f.type) else str(f.type.to_pandas_dtype().__name__),
            "metadata": None,
        }
        for f in schema
    ]
    meta = {
        "index_columns": [index] if index else [],
        "column_indexes": [
            {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
             "metadata": {"encoding": "UTF-8"}}
        ],
        "columns": columns,
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.0.3",
    }
    return json.dumps(meta).encode()


def _write(path: Path, table: pa.Table, index: str | None) -> None:
    table = table.replace_schema_metadata({b"pandas": _pandas_metadata(table.schema, index)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def write_batch(path, event_id, sensor_id, time, charge, auxiliary) -> None:
    """Write one pulse batch file: one row per pulse, ``event_id`` as the (pandas) index.

    All arguments are 1-D arrays of equal length, already grouped by event and time ordered; they
    are cast to the exact Kaggle dtypes (event_id int64, sensor_id int16, time int64, charge
    float64, auxiliary bool).
    """
    arrays = [
        pa.array(np.asarray(sensor_id).astype(np.int16, copy=False)),
        pa.array(np.asarray(time).astype(np.int64, copy=False)),
        pa.array(np.asarray(charge).astype(np.float64, copy=False)),
        pa.array(np.asarray(auxiliary).astype(np.bool_, copy=False)),
        pa.array(np.asarray(event_id).astype(np.int64, copy=False)),
    ]
    _write(path, pa.Table.from_arrays(arrays, schema=BATCH_SCHEMA), index="event_id")


def write_meta(path, batch_id, event_id, first_pulse_index, last_pulse_index, azimuth=None, zenith=None) -> None:
    """Write train_meta (with azimuth/zenith) or test_meta (both None): one row per event, int64
    indices with ``last_pulse_index`` inclusive, angles float64 in radians."""
    names = ["batch_id", "event_id", "first_pulse_index", "last_pulse_index"]
    arrays = [pa.array(np.asarray(a).astype(np.int64, copy=False))
              for a in (batch_id, event_id, first_pulse_index, last_pulse_index)]
    if (azimuth is None) != (zenith is None):
        raise ValueError("write_meta: give both azimuth and zenith, or neither (test_meta)")
    if azimuth is not None:
        names += ["azimuth", "zenith"]
        arrays += [pa.array(np.asarray(azimuth, dtype=np.float64)), pa.array(np.asarray(zenith, dtype=np.float64))]
    _write(path, pa.Table.from_arrays(arrays, names=names), index=None)


def write_table(path, columns: dict[str, np.ndarray]) -> None:
    """Write a plain parquet table (no index), e.g. the simulator's train_truth.parquet."""
    _write(path, pa.table({k: np.asarray(v) for k, v in columns.items()}), index=None)


def write_submission(path: str | Path, event_id, azimuth, zenith, extra: dict | None = None) -> Path:
    """A Kaggle submission CSV (``event_id,azimuth,zenith``, radians), written atomically. Event ids
    are written as the exact int64 they are (no float round trip: ids above 2^53 stay exact).
    ``extra``: more float columns (name -> values) after the Kaggle ones."""
    from icezoo.core.atomic import atomic_path

    ids = np.asarray(event_id)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"write_submission: event_id must be integers, got {ids.dtype}")
    ids = ids.astype(np.int64, copy=False).tolist()
    rows = zip(ids, np.asarray(azimuth, dtype=np.float64).tolist(), np.asarray(zenith, dtype=np.float64).tolist())
    extra = extra or {}
    cols = [np.asarray(v, dtype=np.float64).tolist() for v in extra.values()]
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(",".join(["event_id", "azimuth", "zenith", *extra]) + "\n")
            if not cols:
                fh.writelines(f"{e},{a:.10f},{z:.10f}\n" for e, a, z in rows)
            else:
                fh.writelines(f"{e},{a:.10f},{z:.10f}" + "".join(f",{c[i]:.10f}" for c in cols) + "\n"
                              for i, (e, a, z) in enumerate(rows))
    return Path(path)


#: what ``icezoo simulate`` (and the default dataset) put at the top of a dataset directory
_DATASET_ENTRY = re.compile(r"^(train|test|(train|test)_(meta|truth)\.parquet|sensor_geometry\.csv|simulator_\w+\.json"
                            r"|icezoo_split\.json)$")
_BATCH_FILE = re.compile(r"^batch_\d+\.parquet$")
#: the marker every simulated dataset holds
SIMULATOR_MARKER = "simulator_config.json"


def foreign_entry(path: str | Path) -> str | None:
    """Why ``path`` is not a dataset icezoo wrote (the first entry that is not its own), or None.

    An icezoo dataset is a directory holding the simulator's marker (``simulator_config.json``) and
    nothing but the layout's files (train/ and test/ holding only batch_N.parquet). ``simulate
    --overwrite`` replaces only such a directory, so it never deletes a file a person put there.
    """
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return "it is not a directory"
    for entry in sorted(path.iterdir()):
        if not _DATASET_ENTRY.match(entry.name):
            return f"it holds {entry.name}, which icezoo did not write"
        if entry.name in ("train", "test"):
            if entry.is_symlink() or not entry.is_dir():
                return f"{entry.name} is not a directory"
            for sub in entry.iterdir():
                if not _BATCH_FILE.match(sub.name) or sub.is_symlink() or not sub.is_file():
                    return f"it holds {entry.name}/{sub.name}, which icezoo did not write"
    if not (path / SIMULATOR_MARKER).is_file():
        return f"it has no {SIMULATOR_MARKER} (not written by icezoo simulate)"
    return None
