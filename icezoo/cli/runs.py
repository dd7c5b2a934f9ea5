"""``icezoo runs``: the run ledger as the experiment log's table, or the runs' validation curves."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from icezoo.core.errors import IcezooError


def cmd_runs(
    names: Optional[list[str]] = typer.Argument(None, help="runs to show (names or directories; default: all)"),
    sort: Optional[str] = typer.Option(None, help="score | name | time (default: time)"),
    filter_: Optional[str] = typer.Option(None, "--filter", help="keep rows containing this text"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    plot: bool = typer.Option(False, "--plot", help="overlay the named runs' validation curves (icezoo runs --plot A B)"),
    plot_out: Path = typer.Option(Path("validation_curves.png"), "--plot-out", help="PNG written by --plot"),
) -> None:
    """The run ledger as the experiment log's markdown table; with --plot, the runs' validation curves."""
    from icezoo.engine.runs import ledger_markdown, ledger_rows

    if plot:
        if not names:
            raise IcezooError("--plot: name the runs to overlay, e.g. icezoo runs --plot A B")
        from icezoo.engine.evaluate import plot_runs

        plotted = plot_runs(names, runs_dir, plot_out)
        print(f"wrote {plot_out}: validation mean angular error per epoch of {', '.join(plotted)}")
        return
    if not runs_dir.is_dir():
        raise IcezooError(f"{runs_dir}: no runs directory (train something first, or pass --runs-dir)")
    rows = ledger_rows(runs_dir, sort=sort, filter_text=filter_, names=names)
    print(ledger_markdown(rows))
