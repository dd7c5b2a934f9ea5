"""DOM positions: the geometry csv of a Kaggle-layout dataset, or the shipped IceCube-86 table.

See :mod:`icezoo.data.detector` for the detector model a source reports (sensor set, types, PMT
directions); this module only reads ``sensor_id,x,y,z`` tables.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

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
    if geometry is None:
        local = Path(data_dir) / "sensor_geometry.csv" if data_dir is not None else None
        if local is not None and local.is_file():
            geometry = local
        else:
            from icezoo.resources import geometry_csv

            geometry = geometry_csv()
    path = Path(geometry)
    if not path.is_file():
        raise IcezooError(f"{path}: geometry file not found")
    return _load_geometry_csv(str(path.resolve()), path.stat().st_mtime)
