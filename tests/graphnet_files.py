"""The tests' own writer of GraphNeT-schema files (SQLite and Parquet), independent of icezoo's
readers and of its converter: what GraphNeT's SQLite/Parquet writers produce, as far as icezoo reads it.

Pulse tables: one row per pulse, ``event_no, dom_x, dom_y, dom_z, dom_time, charge, hlc, string,
dom_number, pmt_number, dom_type, rde, pmt_area, ...`` (REAL in SQLite except event_no); a ``truth``
table, one row per event; an index on the pulse table's event_no, as GraphNeT's writer makes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

PULSE_COLUMNS = ("event_no", "dom_x", "dom_y", "dom_z", "dom_time", "charge", "hlc", "string", "dom_number",
                 "pmt_number", "dom_type", "rde", "pmt_area", "width", "event_time", "is_bad_dom")


def from_kaggle(data_dir, split: str = "train") -> tuple[dict, dict]:
    """(pulse columns, truth columns) of every event of a simulated Kaggle-layout dataset, in the
    GraphNeT schema: IceCube-86 DOMs with the geometry table's positions."""
    import polars as pl

    from icezoo.data.io import list_batches, read_chunk

    parts, truth = [], []
    for b in list_batches(data_dir, split):
        c = read_chunk(data_dir, split, b)
        sid = c.sensor_id.astype(np.int64)
        n = len(sid)
        parts.append({"event_no": np.repeat(c.event_id, c.lengths), "dom_x": c.x, "dom_y": c.y, "dom_z": c.z,
                      "dom_time": c.time, "charge": c.charge, "hlc": (~c.auxiliary).astype(np.float64),
                      "string": (sid // 60 + 1).astype(np.float64), "dom_number": (sid % 60 + 1).astype(np.float64),
                      "pmt_number": np.zeros(n), "dom_type": np.full(n, 20.0), "rde": np.ones(n),
                      "pmt_area": np.full(n, 0.0444), "width": np.full(n, 8.0), "event_time": np.zeros(n),
                      "is_bad_dom": np.zeros(n)})
        if c.azimuth is not None:
            truth.append({"event_no": c.event_id, "azimuth": c.azimuth, "zenith": c.zenith})
    pulses = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    t = {k: np.concatenate([p[k] for p in truth]) for k in truth[0]} if truth else {}
    extra = Path(data_dir) / f"{split}_truth.parquet"
    if t and extra.is_file():
        df = pl.read_parquet(extra).sort("event_id")
        order = np.searchsorted(df["event_id"].to_numpy(), t["event_no"])
        t["energy"] = df["energy"].to_numpy()[order]
        for a in "xyz":
            t[f"position_{a}"] = df[f"vertex_{a}"].to_numpy()[order]
        t["energy_track"] = df["muon_energy"].to_numpy()[order]
    return pulses, t


def upgrade_events(n_events: int = 6, first_event_no: int = 10_000_000, seed: int = 0) -> tuple[dict, dict]:
    """A few Upgrade-like events: mDOMs (24 PMTs) and D-Eggs (2 PMTs) on strings 87..93 at positions
    that are not IceCube-86's, with PMT directions, beside some IceCube-86 DOM pulses."""
    from icezoo.data.geometry import load_geometry

    rng = np.random.default_rng(seed)
    geo = load_geometry(None)
    rows = []
    for e in range(n_events):
        k = int(rng.integers(20, 40))
        string = rng.integers(87, 94, k)
        module = rng.integers(1, 60, k)
        mdom = rng.random(k) < 0.6
        pmt = np.where(mdom, rng.integers(0, 24, k), rng.integers(0, 2, k))
        x = 30.0 + (string - 87) * 12.5
        y = -40.0 + (string - 87) * 3.0
        z = -250.0 - module * 3.0
        d = rng.normal(size=(k, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        sid = rng.integers(0, 5160, 8)
        m = k + 8
        rows.append({"event_no": np.full(m, first_event_no + e, np.int64),
                     "dom_x": np.r_[x, geo[sid, 0]], "dom_y": np.r_[y, geo[sid, 1]], "dom_z": np.r_[z, geo[sid, 2]],
                     "dom_time": np.sort(rng.uniform(10000, 12000, m)), "charge": rng.lognormal(0, 0.5, m),
                     "hlc": (rng.random(m) < 0.5).astype(float), "string": np.r_[string, sid // 60 + 1].astype(float),
                     "dom_number": np.r_[module, sid % 60 + 1].astype(float), "pmt_number": np.r_[pmt, np.zeros(8)],
                     "dom_type": np.r_[np.where(mdom, 130.0, 120.0), np.full(8, 20.0)],
                     "pmt_dir_x": np.r_[d[:, 0], np.zeros(8)], "pmt_dir_y": np.r_[d[:, 1], np.zeros(8)],
                     "pmt_dir_z": np.r_[d[:, 2], -np.ones(8)]})
    pulses = {c: np.concatenate([r[c] for r in rows]) for c in rows[0]}
    events = np.arange(first_event_no, first_event_no + n_events)
    truth = {"event_no": events, "azimuth": rng.uniform(0, 2 * np.pi, n_events),
             "zenith": np.arccos(rng.uniform(-1, 1, n_events)), "energy": rng.lognormal(3, 1, n_events),
             "pid": np.full(n_events, 14.0), "interaction_type": np.ones(n_events)}
    return pulses, truth


def shuffle_events(pulses: dict, seed: int = 0) -> dict:
    """Events in a random order (each event's rows kept together and in their order)."""
    eno = pulses["event_no"]
    keys, inv = np.unique(eno, return_inverse=True)
    rank = np.random.default_rng(seed).permutation(len(keys))[inv]
    order = np.lexsort((np.arange(len(eno)), rank))
    return {k: v[order] for k, v in pulses.items()}


def write_sqlite(path, tables: dict[str, dict], index: bool = True) -> Path:
    """One table per entry ({table: {column: array}}): event_no INTEGER, every other column REAL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    for name, cols in tables.items():
        names = list(cols)
        decl = ", ".join(f"{c} {'INTEGER' if c == 'event_no' else 'REAL'}" for c in names)
        con.execute(f"CREATE TABLE {name} ({decl})")
        data = [np.asarray(cols[c]).astype(np.int64 if c == "event_no" else np.float64).tolist() for c in names]
        con.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(names))})", zip(*data))
        if index:
            con.execute(f"CREATE INDEX event_no_{name} ON {name} (event_no)")
    con.commit()
    con.close()
    return path


def write_parquet(folder, tables: dict[str, dict], n_files: int = 2) -> Path:
    """``folder/<table>/<table>_<i>.parquet``: the events cut into ``n_files`` event_no ranges, file
    ``i`` of every table holding the same events."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    every = np.unique(np.concatenate([np.asarray(t["event_no"]) for t in tables.values()]))
    bounds = [every[int(len(every) * i / n_files)] for i in range(n_files)] + [every[-1] + 1]
    for name, cols in tables.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        eno = np.asarray(cols["event_no"])
        for i in range(n_files):
            sel = (eno >= bounds[i]) & (eno < bounds[i + 1])
            table = pa.table({c: (np.asarray(v)[sel].astype(np.int64) if c in ("event_no",) else np.asarray(v)[sel])
                              for c, v in cols.items()})
            pq.write_table(table, folder / name / f"{name}_{i}.parquet")
    return folder
