"""``icezoo linefit``: the classical LineFit baselines, scored on a split with truth or written as predictions."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import pulsemap_option, truth_table_option, use_data

from icezoo.core.errors import IcezooError


def _truth_for(data: Path, split: str, event_id, chunk_azimuth, chunk_zenith):
    """(azimuth, zenith) truth: from the chunk (train meta) or, for a simulated test split, from
    DIR/test_truth.parquet; None when there is none."""
    import numpy as np

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
    import numpy as np
    import polars as pl

    try:
        tr = pl.read_parquet(truth_file, columns=["event_id", "azimuth", "zenith"])
    except Exception as exc:  # noqa: BLE001
        raise IcezooError(f"{truth_file}: cannot read event_id/azimuth/zenith ({str(exc).splitlines()[0]})") from None
    ids = tr["event_id"].to_numpy()
    return ids, np.argsort(ids), tr["azimuth"].to_numpy(), tr["zenith"].to_numpy()


def cmd_linefit(
    data: Path = typer.Option(..., "--data", help="dataset: Kaggle-layout dir, GraphNeT .db or Parquet folder"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
    improved: bool = typer.Option(False, "--improved", help="improved LineFit (cleaning, Huber fit, refit)"),
    split: str = typer.Option("train", "--split", help="train or test"),
    out: Optional[Path] = typer.Option(None, "--out", help="write predictions (event_id,azimuth,zenith) CSV"),
) -> None:
    """LineFit baseline: prints the mean angular error on a split with truth, or writes predictions."""
    import numpy as np

    from icezoo.core.batch import angles_to_vector, angular_error, vector_to_angles
    from icezoo.recon.linefit import linefit, linefit_improved, read_dataset_chunks

    if split not in ("train", "test"):
        raise IcezooError(f"--split: expected 'train' or 'test', got {split!r}")
    if out is not None and out.is_dir():
        raise IcezooError(f"--out {out}: is a directory (give a file name, e.g. {out / 'linefit.csv'})")
    if out is not None:
        from icezoo.core.outputs import check_output

        check_output(out, dirs=[data])
    from icezoo.data.io import split_events

    use_data(data, pulsemap, truth_table)

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
        truth = _truth_for(Path(data), split, chunk.event_id, chunk.azimuth, chunk.zenith) if have_truth else None
        if truth is None:
            have_truth = False
        else:
            errs.append(angular_error(u, angles_to_vector(*truth)))
    dt = time.perf_counter() - t0
    event_id, azimuth, zenith = np.concatenate(ids), np.concatenate(azs), np.concatenate(zes)
    name = "linefit_improved" if improved else "linefit"
    if out is not None:
        from icezoo.data.kaggle_layout import write_submission

        write_submission(out, event_id, azimuth, zenith)
        typer.echo(f"wrote {len(event_id)} predictions to {out}")
    if have_truth and errs:
        err = np.concatenate(errs)
        typer.echo(f"{name} on {split}: mean angular error {err.mean():.4f} rad over {len(err)} events "
                   f"({len(err) / dt:,.0f} events/s)")
    elif out is None:
        raise IcezooError(f"{data}: the {split} split has no truth to score; give --out to write predictions")
