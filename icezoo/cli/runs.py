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
    from icezoo.engine import runs as R

    if plot:
        if not names:
            raise IcezooError("--plot: name the runs to overlay, e.g. icezoo runs --plot A B")
        from icezoo.engine.evaluate import plot_curves

        from icezoo.core.outputs import check_output

        check_output(plot_out, "--plot-out", dirs=[R.resolve_run(n, runs_dir) for n in names])
        curves = {}
        for name in names:
            run_dir = R.resolve_run(name, runs_dir)
            history = R.history_of(run_dir)
            if not history:
                raise IcezooError(f"{run_dir}: no finished epoch yet (no validation curve)")
            curves[run_dir.name] = history
        plot_curves(plot_out, curves)
        print(f"wrote {plot_out}: validation mean angular error per epoch of {', '.join(curves)}")
        return
    rows = R.ledger_rows(runs_dir, sort=sort, filter_text=filter_)
    if not rows and not runs_dir.is_dir():
        raise IcezooError(f"{runs_dir}: no runs directory (train something first, or pass --runs-dir)")
    if names:
        wanted = {R.resolve_run(n, runs_dir).name for n in names}
        rows = [r for r in rows if r["name"] in wanted]
    print(R.ledger_markdown(rows))
