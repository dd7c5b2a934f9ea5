"""``icezoo inspect``: a summary of any source (:mod:`icezoo.data.describe`): events, pulses per event,
pulse maps, truth columns and the detector."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import pulsemap_option, truth_table_option, use_data
from icezoo.core.errors import IcezooError


def cmd_inspect(
    data: Path = typer.Option(..., "--data", help="dataset: Kaggle-layout dir, GraphNeT .db or Parquet folder"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
) -> None:
    """Summary of a dataset of any format: events, pulses per event, pulse maps, truth columns, detector
    (from meta and indexes; no pulse column is read, but for a GraphNeT pulse map's sensor columns)."""
    from icezoo.data.formats import open_source

    if not Path(data).exists():
        raise IcezooError(f"{data}: dataset directory not found")
    if Path(data).is_dir() and not any(Path(data).iterdir()):
        raise IcezooError(f"{data}: no train/ or test/ folder (expected the Kaggle layout)")
    use_data(data, pulsemap, truth_table)
    for line in open_source(data).describe():
        typer.echo(line)
