"""``icezoo inspect``: what a Kaggle-layout dataset holds, read from its meta files only (no batch
file is opened): batch files, events, whether there is truth, pulses per event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from icezoo.core.errors import IcezooError
from icezoo.data.io import list_batches, scan_meta

#: the pulse count ``inspect`` reports the share of events above (the default models' largest max_pulses)
LONG_EVENT = 128


def dataset_summary(data: str | Path) -> dict[str, Any]:
    """Per split present (train, test): its batch ids, event count, truth, and the pulses per event
    (mean, quartiles, min, max, events under 2 pulses, share over ``LONG_EVENT``, total); and the
    dataset's own sensor_geometry.csv (None: the shipped table is used)."""
    data = Path(data)
    if not data.is_dir():
        raise IcezooError(f"{data}: dataset directory not found")
    splits = []
    for split in ("train", "test"):
        if not (data / split).is_dir():
            continue
        ids = list_batches(data, split)
        lf = scan_meta(data, split)
        truth = all(c in lf.collect_schema() for c in ("azimuth", "zenith"))
        n = (lf.select((pl.col("last_pulse_index") - pl.col("first_pulse_index") + 1).alias("n"))
               .collect()["n"].to_numpy())
        q = np.percentile(n, [25, 50, 75]) if len(n) else [0, 0, 0]
        splits.append({"split": split, "batch_ids": ids, "events": len(n), "truth": truth,
                       "mean": n.mean(), "quartiles": q, "min": n.min(), "max": n.max(),
                       "under_2": int((n < 2).sum()), "long_share": (n > LONG_EVENT).mean(), "total": int(n.sum())})
    geo = data / "sensor_geometry.csv"
    return {"splits": splits, "geometry": geo if geo.is_file() else None}
