"""The ``--pulsemap`` / ``--truth-table`` options every command with ``--data`` takes, and the call
that opens the source with them (so later reads of the same path use them)."""

from __future__ import annotations

from pathlib import Path

import typer

from icezoo.core.errors import IcezooError

PULSEMAP_HELP = "pulse table of a GraphNeT file or folder (default: the only one)"
TRUTH_HELP = "truth table of a GraphNeT file or folder (default: truth)"


def pulsemap_option():
    return typer.Option(None, "--pulsemap", help=PULSEMAP_HELP)


def truth_table_option():
    return typer.Option(None, "--truth-table", help=TRUTH_HELP)


def use_data(data, pulsemap: str | None, truth_table: str | None) -> None:
    """Open ``--data`` with the table options (a missing path is left to the command's own message)."""
    if data is None:
        if pulsemap or truth_table:
            raise IcezooError("--pulsemap/--truth-table name tables of --data (a GraphNeT file or folder): give --data")
        return
    if not Path(data).exists():
        return
    from icezoo.data.formats import open_source

    src = open_source(data, pulsemap, truth_table)
    if src.format == "kaggle" and (pulsemap or truth_table):
        raise IcezooError(f"--data {data}: a Kaggle-layout folder has no pulse maps or truth tables "
                          f"(--pulsemap/--truth-table are for GraphNeT files)")
