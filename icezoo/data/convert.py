"""``icezoo convert``: any readable source -> the Kaggle layout (plus ``train_truth.parquet`` with the
truth beyond the direction), and the Kaggle layout -> a GraphNeT Parquet folder, so that every tool
on either side can read icezoo's simulated sets and GraphNeT's files.

Written batch by batch (bounded memory) into a temporary folder next to ``--out`` and renamed into
place: a failure leaves nothing behind. GraphNeT -> Kaggle: one batch file per event_no chunk;
``dom_time`` is rounded to whole ns (the layout's int64 time); only IceCube-86 sensors fit the
layout (an Upgrade sensor is refused). Kaggle -> GraphNeT: ``DIR/<pulsemap>/<pulsemap>_<i>.parquet``
and ``DIR/truth/truth_<i>.parquet``, file ``i`` holding batch file ``i + 1``'s events.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from icezoo.core.detector import DOMS_PER_STRING, PAD_SENSOR
from icezoo.core.errors import IcezooError

#: the simulator's truth columns under GraphNeT's names (Kaggle -> GraphNeT), and back
TRUTH_TO_GRAPHNET = {"energy": "energy", "vertex_x": "position_x", "vertex_y": "position_y", "vertex_z": "position_z",
                     "inelasticity": "inelasticity", "track_length": "track_length", "muon_energy": "energy_track",
                     "cascade_energy": "energy_cascade"}
DEFAULT_PULSEMAP = "InIcePulses"


def convert(data, out, pulsemap: str | None = None, truth_table: str | None = None, split: str | None = None,
            echo=print) -> Path:
    """Convert ``data`` into ``out`` (which must not exist); returns ``out``."""
    from icezoo.data.formats import open_source

    out = Path(out)
    if out.exists() or out.is_symlink():
        raise IcezooError(f"--out {out}: already exists (convert writes a new folder)")
    if not out.parent.is_dir():
        raise IcezooError(f"--out {out}: directory {out.parent} does not exist")
    src = open_source(data, pulsemap, truth_table) if (pulsemap or truth_table) else open_source(data)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if src.format == "kaggle":
            n = _kaggle_to_graphnet(src, tmp, pulsemap or DEFAULT_PULSEMAP, truth_table or "truth", split or "train")
            what = f"GraphNeT Parquet ({pulsemap or DEFAULT_PULSEMAP}, {truth_table or 'truth'})"
        else:
            n = _to_kaggle(src, tmp, split)
            what = "the Kaggle layout"
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if echo:
        echo(f"wrote {n:,} events of {data} as {what} to {out}")
    return out


def _to_kaggle(src, tmp: Path, split: str | None) -> int:
    """Every batch of the source as ``train`` (with truth) or ``test`` (without), meta, truth, geometry."""
    from icezoo.data.kaggle_layout import write_batch, write_meta, write_table
    from icezoo.resources import geometry_csv

    if split is None:
        split = "train" if getattr(src, "truth_columns", None) else "test"
    ids = src.batch_ids(split)
    metas, truths = [], []
    for b in ids:
        raw = src.read_raw(split, b)
        if raw.pad_sensor != PAD_SENSOR:
            raise IcezooError(f"{src.path}: batch {b} holds sensors that are not IceCube-86 DOMs (e.g. the Upgrade's): "
                              f"the Kaggle layout has IceCube-86 sensor ids only")
        eid = np.repeat(raw.event_id, raw.n_pulses)
        write_batch(tmp / split / f"batch_{b}.parquet", eid, raw.sensor_id, np.rint(raw.time).astype(np.int64),
                    raw.charge, raw.auxiliary)
        last = np.cumsum(raw.n_pulses) - 1
        m = {"batch_id": np.full(raw.num_events, b), "event_id": raw.event_id,
             "first_pulse_index": last - raw.n_pulses + 1, "last_pulse_index": last}
        if split == "train":
            m.update(azimuth=raw.azimuth, zenith=raw.zenith)
        metas.append(m)
        if raw.truth:
            truths.append({"event_id": raw.event_id, **raw.truth})
    meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]}
    write_meta(tmp / f"{split}_meta.parquet", **meta)
    if truths:
        write_table(tmp / f"{split}_truth.parquet", {k: np.concatenate([t[k] for t in truths]) for k in truths[0]})
    shutil.copyfile(geometry_csv(), tmp / "sensor_geometry.csv")
    return len(meta["event_id"])


def _kaggle_to_graphnet(src, tmp: Path, pulsemap: str, truth_table: str, split: str) -> int:
    """One Parquet file per batch file in the pulse map and the truth table (GraphNeT's merged layout)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    extra = src.truth(split, src.batch_ids(split)) or {}
    order = np.argsort(extra["event_id"]) if extra else None
    n = 0
    for i, b in enumerate(src.batch_ids(split)):
        raw = src.read_raw(split, b)
        chunk = raw.gather()
        sid = chunk.sensor_id.astype(np.int64)
        cols = {"event_no": np.repeat(raw.event_id, raw.n_pulses), "dom_x": chunk.x, "dom_y": chunk.y, "dom_z": chunk.z,
                "dom_time": chunk.time, "charge": chunk.charge, "hlc": (~chunk.auxiliary).astype(np.int64),
                "string": sid // DOMS_PER_STRING + 1, "dom_number": sid % DOMS_PER_STRING + 1, "pmt_number": np.zeros(len(sid), np.int64),
                "dom_type": np.full(len(sid), 20, np.int64)}
        (tmp / pulsemap).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), tmp / pulsemap / f"{pulsemap}_{i}.parquet")
        truth = {"event_no": raw.event_id}
        if raw.azimuth is not None:
            truth.update(azimuth=raw.azimuth, zenith=raw.zenith)
        if extra:
            pos = order[np.searchsorted(extra["event_id"], raw.event_id, sorter=order)]
            for k, g in TRUTH_TO_GRAPHNET.items():
                if k in extra:
                    truth[g] = np.asarray(extra[k])[pos]
        (tmp / truth_table).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(truth), tmp / truth_table / f"{truth_table}_{i}.parquet")
        n += raw.num_events
    return n
