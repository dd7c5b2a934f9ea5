"""``icezoo linefit``: a classical LineFit (:mod:`icezoo.recon.linefit`) over a whole split, its
directions written as a submission and, where the split has truth, scored.

Truth comes from the meta file (the train split) or, for a simulated test split whose meta holds
none, from ``DIR/<split>_truth.parquet``, joined on event_id; a truth file that misses an event
of the split is an error, not a silently smaller score.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from icezoo.core.batch import angles_to_vector, angular_error, vector_to_angles
from icezoo.core.errors import IcezooError
from icezoo.core.outputs import check_output
from icezoo.data.io import split_events
from icezoo.data.kaggle_layout import write_submission
from icezoo.recon.linefit import linefit, linefit_improved, read_dataset_chunks


def linefit_split(data: str | Path, split: str = "train", improved: bool = False,
                  out: str | Path | None = None) -> dict[str, Any]:
    """LineFit (or the improved LineFit) of every event of ``split``; with ``out`` the predictions
    are written there (event_id,azimuth,zenith). Returns the predictions, the per-event angular
    errors (None when the split has no truth) and the seconds the fits and the truth join took."""
    if split not in ("train", "test"):
        raise IcezooError(f"--split: expected 'train' or 'test', got {split!r}")
    if out is not None and Path(out).is_dir():
        raise IcezooError(f"--out {out}: is a directory (give a file name, e.g. {Path(out) / 'linefit.csv'})")
    if out is not None:
        check_output(out, dirs=[data])  # never onto the dataset or into a dataset, run or study directory
    fit = linefit_improved if improved else linefit
    ids, azs, zes, errs = [], [], [], []
    have_truth = True
    t0 = time.perf_counter()
    _, batch_ids = split_events(data, split)  # the checks predict makes: unique event_id, no missing batch file
    for _, chunk in read_dataset_chunks(data, split, batch_ids):
        u = fit(chunk)
        az, ze = vector_to_angles(u)
        ids.append(chunk.event_id)
        azs.append(az)
        zes.append(ze)
        truth = split_truth(Path(data), split, chunk.event_id, chunk.azimuth, chunk.zenith) if have_truth else None
        if truth is None:
            have_truth = False
        else:
            errs.append(angular_error(u, angles_to_vector(*truth)))
    seconds = time.perf_counter() - t0
    event_id, azimuth, zenith = np.concatenate(ids), np.concatenate(azs), np.concatenate(zes)
    if out is not None:
        write_submission(out, event_id, azimuth, zenith)
    return {"name": "linefit_improved" if improved else "linefit", "split": split, "event_id": event_id,
            "azimuth": azimuth, "zenith": zenith, "error": np.concatenate(errs) if have_truth and errs else None,
            "seconds": seconds}


def split_truth(data: Path, split: str, event_id, chunk_azimuth, chunk_zenith):
    """(azimuth, zenith) truth of ``event_id``: from the chunk (train meta) or, for a simulated test
    split, from DIR/<split>_truth.parquet; None when there is none."""
    if chunk_azimuth is not None:
        return chunk_azimuth, chunk_zenith
    truth_file = data / f"{split}_truth.parquet"
    if not truth_file.is_file():
        return None
    ids, order, azimuth, zenith = _truth_table(truth_file)
    pos = np.searchsorted(ids, event_id, sorter=order)
    pos = order[np.clip(pos, 0, len(ids) - 1)]
    if not np.array_equal(ids[pos], event_id):
        raise IcezooError(f"{truth_file}: does not cover every event of the {split} split")
    return azimuth[pos], zenith[pos]


@functools.lru_cache(maxsize=2)
def _truth_table(truth_file: Path):
    """event_id (with its sort order), azimuth, zenith of a truth file: read once per command, not per batch."""
    try:
        tr = pl.read_parquet(truth_file, columns=["event_id", "azimuth", "zenith"])
    except Exception as exc:  # noqa: BLE001
        raise IcezooError(f"{truth_file}: cannot read event_id/azimuth/zenith ({str(exc).splitlines()[0]})") from None
    ids = tr["event_id"].to_numpy()
    return ids, np.argsort(ids), tr["azimuth"].to_numpy(), tr["zenith"].to_numpy()
