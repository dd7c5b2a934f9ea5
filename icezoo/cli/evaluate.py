"""``icezoo evaluate``: score a run, or several runs and their ensemble, on the same events."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import pulsemap_option, truth_table_option, use_data



def cmd_evaluate(
    runs: list[str] = typer.Argument(..., help="run directories or names in --runs-dir; several: their ensemble too"),
    data: Optional[Path] = typer.Option(None, help="dataset to score on (default: the run's own data)"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
    batches: Optional[str] = typer.Option(None, help="score these batch files instead of the validation split"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: Optional[str] = typer.Option(None),
    no_plots: bool = typer.Option(False, "--no-plots"),
    tta: int = typer.Option(1, "--tta", min=1, help="also score N rotations about the vertical axis, combined (1..32)"),
    brightest: Optional[float] = typer.Option(None, "--brightest", help="two runs: paired on every shared event "
                                              "and on this fraction of them with the most pulses (e.g. 0.1)"),
) -> None:
    """Score a run (float64 Kaggle metric, median, 68% containment, bootstrap CI) against LineFit; write plots.
    Several runs: each, and their kappa-weighted ensemble, on the same events (paired CIs); --tta N: with and
    without test-time rotations."""
    use_data(data, pulsemap, truth_table, runs=runs, runs_dir=runs_dir)
    if brightest is not None:
        from icezoo.core.errors import IcezooError
        from icezoo.engine.bright import compare_brightest, format_brightest

        if len(runs) != 2:
            raise IcezooError(f"--brightest compares two runs, got {len(runs)}")
        print(format_brightest(compare_brightest(runs[0], runs[1], brightest, runs_dir, str(data) if data else None,
                                                 batches, batch_size, device)))
        return
    if len(runs) == 1 and tta == 1:
        from icezoo.engine.evaluate import evaluate

        evaluate(runs[0], data=str(data) if data else None, batches=batches, runs_dir=runs_dir,
                 batch_size=batch_size, device=device, plots=not no_plots)
        return
    from icezoo.engine.evaluate import evaluate_members

    evaluate_members(runs, data=str(data) if data else None, batches=batches, runs_dir=runs_dir, tta=tta,
                     device=device, batch_size=batch_size)
