"""``icezoo convert``: a source of any format -> the Kaggle layout; the Kaggle layout -> GraphNeT Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import pulsemap_option, truth_table_option
from icezoo.core.errors import IcezooError


def cmd_convert(
    data: Path = typer.Option(..., "--data", help="source: GraphNeT .db or Parquet folder (or a plugin's format) -> "
                                                  "Kaggle layout; a Kaggle-layout folder -> GraphNeT Parquet"),
    out: Path = typer.Option(..., "--out", help="folder to create (written under a temporary name, then renamed)"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
    split: Optional[str] = typer.Option(None, "--split", help="train (events with truth) or test; default: train "
                                                              "when the source has truth"),
) -> None:
    """Convert a dataset between formats (GraphNeT <-> Kaggle layout), batch by batch, atomically."""
    from icezoo.data.convert import convert

    if split not in (None, "train", "test"):
        raise IcezooError(f"--split: expected 'train' or 'test', got {split!r}")
    if not Path(data).exists():
        raise IcezooError(f"--data {data}: no such file or directory")
    convert(data, out, pulsemap=pulsemap, truth_table=truth_table, split=split)
