"""Writing the Kaggle layout: the train / test splits as batch files, meta and truth tables, built in a
temporary directory and renamed into place (``simulate``)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from icezoo.core.atomic import atomic_directory
from icezoo.core.errors import IcezooError
from icezoo.data import kaggle_layout
from icezoo.data.simulator.config import SimulatorConfig, make_config
from icezoo.data.simulator.constants import EVENT_TYPES
from icezoo.data.simulator.events import simulate_events
from icezoo.resources import geometry_csv

#: the random stream of each split
_SPLITS = {"train": 1, "test": 2}


def _write_split(root: Path, split: str, cfg: SimulatorConfig, n_events: int, per_batch: int, seed: int,
                 first_event_id: int) -> int:
    """Write DIR/<split>/batch_N.parquet, DIR/<split>_meta.parquet, DIR/<split>_truth.parquet."""
    metas, truths = [], []
    event_id = first_event_id
    n_batches = max(1, math.ceil(n_events / per_batch))
    for b in range(n_batches):
        n = min(per_batch, n_events - b * per_batch)
        ev = simulate_events(cfg, n, seed, stream=(_SPLITS[split], b + 1))
        ids = np.arange(event_id, event_id + n, dtype=np.int64)
        event_id += n
        counts = ev["counts"]
        last = np.cumsum(counts) - 1
        kaggle_layout.write_batch(root / split / f"batch_{b + 1}.parquet", np.repeat(ids, counts),
                                  ev["sensor_id"], ev["time"], ev["charge"], ev["auxiliary"])
        metas.append({"batch_id": np.full(n, b + 1, dtype=np.int64), "event_id": ids,
                      "first_pulse_index": last - counts + 1, "last_pulse_index": last,
                      "azimuth": ev["azimuth"], "zenith": ev["zenith"]})
        noise = np.bincount(np.repeat(np.arange(n), counts), weights=ev["noise"], minlength=n)
        truths.append({"event_id": ids, "batch_id": np.full(n, b + 1, dtype=np.int64),
                       "azimuth": ev["azimuth"], "zenith": ev["zenith"], "energy": ev["energy"],
                       "event_type": np.asarray(EVENT_TYPES, dtype=object)[ev["event_type"]].astype(str),
                       "vertex_x": ev["vertex_x"], "vertex_y": ev["vertex_y"], "vertex_z": ev["vertex_z"],
                       "inelasticity": ev["inelasticity"], "track_length": ev["track_length"],
                       "muon_energy": ev["muon_energy"], "cascade_energy": ev["cascade_energy"],
                       "opening_angle": ev["opening_angle"], "trigger": ev["trigger"].astype(np.int64),
                       "n_pulses": counts.astype(np.int64), "n_noise_pulses": noise.astype(np.int64),
                       "n_afterpulses": np.bincount(np.repeat(np.arange(n), counts), weights=ev["afterpulse"],
                                                    minlength=n).astype(np.int64)})
    meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]}
    if split == "test":
        meta.pop("azimuth")
        meta.pop("zenith")
    kaggle_layout.write_meta(root / f"{split}_meta.parquet", **meta)
    kaggle_layout.write_table(root / f"{split}_truth.parquet", {k: np.concatenate([t[k] for t in truths]) for k in truths[0]})
    return event_id


def simulate(out_dir, n_events: int, events_per_batch: int = 50_000, seed: int = 0, test: bool = False,
             test_events: int | None = None, overwrite: bool = False, test_events_per_batch: int | None = None,
             **knobs) -> Path:
    """Simulate ``n_events`` training events (and with ``test`` a test split of ``test_events``,
    default n_events // 10, at least 1) into ``out_dir`` in the Kaggle layout; return its path.
    The test split's files hold ``test_events_per_batch`` events (default: ``events_per_batch``).

    Writes into a temporary directory next to ``out_dir`` and renames it into place, so a reader
    never sees a half-written dataset. Truth beyond azimuth/zenith goes to ``train_truth.parquet``
    (and ``test_truth.parquet``: the test split's truth, kept apart so test predictions can be scored).
    """
    cfg = make_config(**knobs)
    if n_events < 1:
        raise IcezooError(f"simulate: --events must be >= 1 (got {n_events})")
    if events_per_batch < 1:
        raise IcezooError(f"simulate: --events-per-batch must be >= 1 (got {events_per_batch})")
    if test and test_events is not None and test_events < 1:
        raise IcezooError(f"simulate: --test-events must be >= 1 (got {test_events})")
    out = Path(out_dir)
    if (out.exists() or out.is_symlink()) and not (out.is_dir() and not out.is_symlink() and not any(out.iterdir())):
        if not overwrite:
            raise IcezooError(f"{out}: already exists and is not empty (choose another --out)")
        why = kaggle_layout.foreign_entry(out)  # --overwrite replaces a dataset icezoo wrote, nothing else
        if why:
            raise IcezooError(f"{out}: --overwrite replaces only a dataset icezoo wrote, and {why}; "
                              f"nothing was changed (choose another --out)")
    with atomic_directory(out, replace=True) as tmp:
        next_id = _write_split(tmp, "train", cfg, n_events, events_per_batch, seed, first_event_id=1)
        if test:
            n_test = max(1, n_events // 10) if test_events is None else test_events
            _write_split(tmp, "test", cfg, n_test, test_events_per_batch or events_per_batch, seed,
                         first_event_id=next_id)
        shutil.copyfile(geometry_csv(), tmp / "sensor_geometry.csv")
        (tmp / "simulator_config.json").write_text(cfg.model_dump_json(indent=2) + "\n")
    return out
