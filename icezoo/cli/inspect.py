"""``icezoo inspect``: a dataset's batch files, events, pulses per event and truth, from its meta."""

from __future__ import annotations

from pathlib import Path

import typer

from icezoo.core.errors import IcezooError


def cmd_inspect(
    data: Path = typer.Option(..., "--data", help="dataset directory (Kaggle layout)"),
) -> None:
    """Summary of a dataset: batch files, events, pulses per event, truth (from the meta; no batch file is read)."""
    import numpy as np
    import polars as pl

    from icezoo.data.io import list_batches, scan_meta

    if not Path(data).is_dir():
        raise IcezooError(f"{data}: dataset directory not found")
    found = False
    for split in ("train", "test"):
        if not (Path(data) / split).is_dir():
            continue
        found = True
        ids = list_batches(data, split)
        lf = scan_meta(data, split)
        truth = all(c in lf.collect_schema() for c in ("azimuth", "zenith"))
        n = (lf.select((pl.col("last_pulse_index") - pl.col("first_pulse_index") + 1).alias("n"))
               .collect()["n"].to_numpy())
        q = np.percentile(n, [25, 50, 75]) if len(n) else [0, 0, 0]
        typer.echo(f"{split}: {len(ids)} batch file(s) ({ids[0]}..{ids[-1]}), {len(n)} events, truth: {'yes' if truth else 'no'}")
        typer.echo(f"  pulses/event: mean {n.mean():.1f}, quartiles {q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f}, "
                   f"min {n.min()}, max {n.max()}, {int((n < 2).sum())} event(s) < 2 pulses, "
                   f"{100 * (n > 128).mean():.1f}% > 128, total {int(n.sum())}")
    geo = Path(data) / "sensor_geometry.csv"
    typer.echo(f"geometry: {geo if geo.is_file() else 'shipped IceCube-86 table (no sensor_geometry.csv)'}")
    if not found:
        raise IcezooError(f"{data}: no train/ or test/ folder (expected the Kaggle layout)")
