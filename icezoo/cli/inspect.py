"""``icezoo inspect``: a dataset's batch files, events, pulses per event and truth, from its meta."""

from __future__ import annotations

from pathlib import Path

import typer

from icezoo.core.errors import IcezooError


def cmd_inspect(
    data: Path = typer.Option(..., "--data", help="dataset directory (Kaggle layout)"),
) -> None:
    """Summary of a dataset: batch files, events, pulses per event, truth (from the meta; no batch file is read)."""
    from icezoo.data.summary import LONG_EVENT, dataset_summary

    summary = dataset_summary(data)
    for r in summary["splits"]:
        ids, q = r["batch_ids"], r["quartiles"]
        typer.echo(f"{r['split']}: {len(ids)} batch file(s) ({ids[0]}..{ids[-1]}), {r['events']} events, "
                   f"truth: {'yes' if r['truth'] else 'no'}")
        typer.echo(f"  pulses/event: mean {r['mean']:.1f}, quartiles {q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f}, "
                   f"min {r['min']}, max {r['max']}, {r['under_2']} event(s) < 2 pulses, "
                   f"{100 * r['long_share']:.1f}% > {LONG_EVENT}, total {r['total']}")
    geo = summary["geometry"]
    typer.echo(f"geometry: {geo if geo is not None else 'shipped IceCube-86 table (no sensor_geometry.csv)'}")
    if not summary["splits"]:
        raise IcezooError(f"{data}: no train/ or test/ folder (expected the Kaggle layout)")
