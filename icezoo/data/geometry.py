"""DOM positions: the geometry csv of a Kaggle-layout dataset, or the shipped IceCube-86 table.

See :mod:`icezoo.data.detector` for the detector model a source reports (sensor set, types, PMT
directions); this module only reads ``sensor_id,x,y,z`` tables.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from icezoo.core.detector import N_SENSORS
from icezoo.core.errors import IcezooError
from icezoo.data.checks import first_line as _first_line


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


def outside_geometry(path: Path, row: int, event: int, sensor: int, geo: np.ndarray, data_dir, geometry) -> None:
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
