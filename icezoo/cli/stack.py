"""``icezoo stack``: fit a learned combination of runs on half their validation events, judge it on the other half."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def cmd_stack(
    runs: list[str] = typer.Argument(..., help="the member runs (directories or names in --runs-dir), two or more"),
    method: str = typer.Option("linear", help="linear (a weight per member) | mlp | gbm (LightGBM, optional extra)"),
    out: Path = typer.Option(Path("stacker.json"), help="the stacker file to write (JSON, atomically)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    data: Optional[Path] = typer.Option(None, help="dataset to fit on (default: the runs' own validation split)"),
    batches: Optional[str] = typer.Option(None, help="these batch files instead of the validation split"),
    seed: int = typer.Option(0, help="seed of the half split and the fit"),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: Optional[str] = typer.Option(None),
) -> None:
    """Fit a stacker on one half of the members' cached validation predictions and report it on the other half,
    paired against their kappa-weighted mean and the best member (bootstrap 95% CI); apply it with
    `icezoo predict RUN1 RUN2 --stacker FILE`."""
    from icezoo.engine.stack import stack

    stack(runs, method, out, runs_dir=runs_dir, data=str(data) if data else None, batches=batches, seed=seed,
          device=device, batch_size=batch_size)
