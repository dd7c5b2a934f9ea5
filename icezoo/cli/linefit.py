"""``icezoo linefit``: the classical LineFit baselines, scored on a split with truth or written as predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import pulsemap_option, truth_table_option, use_data
from icezoo.core.errors import IcezooError


def cmd_linefit(
    data: Path = typer.Option(..., "--data", help="dataset: Kaggle-layout dir, GraphNeT .db or Parquet folder"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
    improved: bool = typer.Option(False, "--improved", help="improved LineFit (cleaning, Huber fit, refit)"),
    split: str = typer.Option("train", "--split", help="train or test"),
    out: Optional[Path] = typer.Option(None, "--out", help="write predictions (event_id,azimuth,zenith) CSV"),
) -> None:
    """LineFit baseline: prints the mean angular error on a split with truth, or writes predictions."""
    from icezoo.engine.baseline import linefit_split

    use_data(data, pulsemap, truth_table)
    res = linefit_split(data, split, improved=improved, out=out)
    if out is not None:
        typer.echo(f"wrote {len(res['event_id'])} predictions to {out}")
    err = res["error"]
    if err is not None:
        typer.echo(f"{res['name']} on {res['split']}: mean angular error {err.mean():.4f} rad over {len(err)} events "
                   f"({len(err) / res['seconds']:,.0f} events/s)")
    elif out is None:
        raise IcezooError(f"{data}: the {split} split has no truth to score; give --out to write predictions")
