"""``icezoo experiments``: the experiment log as a table beside this machine's best runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from icezoo.core.errors import IcezooError



def cmd_experiments(
    data: Optional[Path] = typer.Option(None, help="only runs scored on this dataset directory"),
    markdown: bool = typer.Option(False, "--markdown", help="print a markdown table (the log's format)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="the ledger to read"),
) -> None:
    """Every row of the experiment log in its order: pipeline, log score, and this machine's best run of it."""
    from icezoo.engine.experiments import COLUMNS, experiments_markdown, experiments_table

    if runs_dir.exists() and not runs_dir.is_dir():
        raise IcezooError(f"--runs-dir {runs_dir}: is a file, not a runs directory")
    if not runs_dir.is_dir():  # the log alone is still worth reading: say why no run is beside it
        print(f"note: --runs-dir {runs_dir}: no such directory; the log's rows are shown without runs "
              f"(train something first, or pass the --runs-dir that holds them)", file=sys.stderr)
    rows = experiments_table(runs_dir, str(data) if data else None)
    if markdown:
        print(experiments_markdown(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"The experiment log ({len(rows)} rows) and the best runs in {runs_dir}/", show_lines=False)
    for key, head in COLUMNS:
        table.add_column(head, overflow="fold", ratio=3 if key == "description" else 1)
    for r in rows:
        table.add_row(*(r[k] for k, _ in COLUMNS))
    Console().print(table)
