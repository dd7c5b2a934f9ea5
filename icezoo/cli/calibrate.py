"""``icezoo calibrate``: fit a run's predicted-kappa map on half its validation events, check it on the other half."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import pulsemap_option, truth_table_option, use_data


def cmd_calibrate(
    run: str = typer.Argument(..., help="run directory or name in --runs-dir ('last': the newest)"),
    data: Optional[Path] = typer.Option(None, help="dataset to fit on (default: the run's own data)"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
    batches: Optional[str] = typer.Option(None, help="fit on these batch files instead of the validation split"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: Optional[str] = typer.Option(None),
    seed: int = typer.Option(0, help="seed of the fit/held-out split of the events"),
) -> None:
    """Fit kappa_cal = a * kappa^b (vMF maximum likelihood) on half the validation events, print the held-out
    cone coverage at 0.5, 0.68, 0.9 before and after, and store the map with the run (applied by predict)."""
    use_data(data, pulsemap, truth_table, runs=[run], runs_dir=runs_dir)
    from icezoo.engine.calibrate import calibrate

    calibrate(run, runs_dir=runs_dir, data=str(data) if data else None, batches=batches, batch_size=batch_size,
              device=device, seed=seed)
