"""``icezoo inspect``'s summary of a source: events, pulses per event, pulse maps, truth columns and
the detector, from indexes and meta only (no pulse column is read except a DISTINCT over the
sensor columns of a GraphNeT pulse map, for the detector)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icezoo.core.errors import IcezooError


def pulses_line(n: np.ndarray) -> str:
    """Pulses per event: mean, quartiles, extremes, short and long events."""
    if not len(n):
        return "  pulses/event: no events"
    q = np.percentile(n, [25, 50, 75])
    return (f"  pulses/event: mean {n.mean():.1f}, quartiles {q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f}, min {n.min()}, "
            f"max {n.max()}, {int((n < 2).sum())} event(s) < 2 pulses, {100 * (n > 128).mean():.1f}% > 128, "
            f"total {int(n.sum())}")


def describe_kaggle(data: Path) -> list[str]:
    """Batch files, events, pulses per event and truth per split (from the meta), geometry, detector."""
    import polars as pl

    from icezoo.data.meta import list_batches, scan_meta

    lines, found = ["format: kaggle"], False
    for split in ("train", "test"):
        if not (Path(data) / split).is_dir():
            continue
        found = True
        ids = list_batches(data, split)
        lf = scan_meta(data, split)
        truth = all(c in lf.collect_schema() for c in ("azimuth", "zenith"))
        n = (lf.select((pl.col("last_pulse_index") - pl.col("first_pulse_index") + 1).alias("n"))
               .collect()["n"].to_numpy())
        lines.append(f"{split}: {len(ids)} batch file(s) ({ids[0]}..{ids[-1]}), {len(n)} events, "
                     f"truth: {'yes' if truth else 'no'}")
        lines.append(pulses_line(n))
        extra = Path(data) / f"{split}_truth.parquet"
        if extra.is_file():
            cols = [c for c in pl.read_parquet_schema(extra) if c not in ("event_id", "batch_id")]
            lines.append(f"  truth columns ({extra.name}): {', '.join(cols)}")
    if not found:
        raise IcezooError(f"{data}: no train/ or test/ folder (expected the Kaggle layout)")
    geo = Path(data) / "sensor_geometry.csv"
    lines.append(f"geometry: {geo if geo.is_file() else 'shipped IceCube-86 table (no sensor_geometry.csv)'}")
    lines.append("detector: IceCube-86 (sensor_id 0..5159)")
    return lines


def describe_graphnet(src) -> list[str]:
    """Tables, the pulse map, events with and without truth, pulses per event, truth columns, detector."""
    extra, required = src.extra_truth, src.truth_required
    tables = src._tables()
    pulse = src.pulse_table
    lines = [f"format: {src.format}", f"tables: {', '.join(f'{t} ({len(c)} columns)' for t, c in tables.items())}",
             f"pulse map: {pulse}" + ("" if src.pulsemap else " (the only one)")]
    pe, pc = src._pulse_index
    te = src._truth_events
    if te is None:
        lines.append(f"events: {len(pe):,} with pulses; no truth table '{src.truth_table}' (prediction only)")
    else:
        no_truth = len(np.setdiff1d(pe, te, assume_unique=True))
        no_pulses = len(np.setdiff1d(te, pe, assume_unique=True))
        lines.append(f"events: {len(pe):,} with pulses, {len(te):,} in table {src.truth_table}; {no_truth:,} with "
                     f"pulses but no truth, {no_pulses:,} with truth but no pulses")
    lines.append(pulses_line(pc))
    events, _, size = src._index("test")
    lines.append(f"batches: {-(-len(events) // size)} of {size:,} events in event_no order (--batches, validation)")
    if te is not None:
        cols = src.truth_columns
        kept = [c for c in (*required[1:], *extra) if c in cols]
        lines.append(f"truth columns read: {', '.join(kept) or 'none'}; missing: "
                     f"{', '.join(c for c in required[1:] if c not in cols) or 'none of the required'}")
    lines.append(f"detector: {src.detector().text()}")
    return lines
