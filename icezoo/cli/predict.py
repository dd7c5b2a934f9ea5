"""``icezoo predict``: a Kaggle submission from one run or the ensemble of several."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import pulsemap_option, truth_table_option, use_data



def cmd_predict(
    runs: list[str] = typer.Argument(..., help="run directories or names in --runs-dir; several: their ensemble"),
    data: Path = typer.Option(..., help="dataset: Kaggle-layout dir, GraphNeT .db or Parquet folder"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
    split: str = typer.Option("test", help="split to predict (DIR/<split>_meta.parquet)"),
    out: Path = typer.Option(Path("submission.csv"), help="CSV to write (atomically)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    workers: int = typer.Option(0, min=0),
    device: Optional[str] = typer.Option(None),
    tta: int = typer.Option(1, "--tta", min=1, help="combine N rotations about the vertical axis (1..32)"),
    stacker: Optional[Path] = typer.Option(None, "--stacker", help="combine the runs with this stacker "
                                           "(icezoo stack) instead of the kappa-weighted mean"),
    uncertainty: bool = typer.Option(False, "--uncertainty", help="also write the 50% and 90% vMF cone radii "
                                     "(radians) of the run's calibrated kappa (icezoo calibrate) after the Kaggle columns"),
) -> None:
    """Write a Kaggle submission: one row per event of <split>_meta (event_id,azimuth,zenith); several runs:
    the kappa-weighted mean of their directions (plain mean for heads without kappa), or a fitted stacker."""
    from icezoo.engine.predict import predict

    use_data(data, pulsemap, truth_table, runs=runs, runs_dir=runs_dir)
    predict(runs, str(data), split=split, out=out, runs_dir=runs_dir, batch_size=batch_size, workers=workers,
            device=device, tta=tta, stacker=str(stacker) if stacker else None, uncertainty=uncertainty)
