"""A quick random dataset in the exact Kaggle layout (tests and benches; the simulator is for physics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icezoo.core.batch import N_SENSORS
from icezoo.data.meta import batch_path


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
