"""``icezoo bench data`` (parquet -> padded batch tensors: events/s, peak memory) and ``icezoo inspect``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.dataopts import pulsemap_option, truth_table_option, use_data
from icezoo.core.errors import IcezooError


def _components(max_pulses: int):
    """The bench's fixed chain: aux-first selection, kaggle_norm + qe + ice_properties."""
    from icezoo.plugins.features import QE, IceProperties, KaggleNorm
    from icezoo.plugins.selection import AuxFirst

    sel = AuxFirst(AuxFirst.Config(max_pulses=max_pulses))
    feats = [KaggleNorm(KaggleNorm.Config()), QE(QE.Config()), IceProperties(IceProperties.Config())]
    return sel, feats


def _parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise IcezooError(f"{what} {text!r}: expected comma-separated integers, e.g. 128,256") from None
    if not values or min(values) < 1:
        raise IcezooError(f"{what} {text!r}: expected positive integers")
    return values


def _make_dataset(out: Path, events: int, per_file: int, seed: int) -> str:
    """A temporary dataset: the simulator when available, else random events in the same layout."""
    try:
        from icezoo.data.simulator import simulate
    except ImportError:
        simulate = None
    if simulate is not None:
        simulate(out, events, events_per_batch=per_file, seed=seed)
        return "simulator"
    from icezoo.data.io import write_toy_dataset

    write_toy_dataset(out, n_files=max(1, -(-events // per_file)), events_per_file=per_file, seed=seed, mean_pulses=120)
    return "random toy events"


def bench_data_cmd(
    data: Optional[Path] = typer.Option(None, "--data", help="dataset (any format: icezoo list formats); default: a "
                                                             "temporary Kaggle-layout one"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
    split: str = typer.Option("train", help="split to read"),
    max_pulses: str = typer.Option("128,256", "--max-pulses", help="comma-separated max_pulses values"),
    batch_size: int = typer.Option(256, "--batch-size"),
    batches: str = typer.Option("cycle", "--batches", help="batch files to read: A:B, A,B,C or cycle (all)"),
    events: int = typer.Option(40_000, "--events", help="events of the temporary dataset (without --data)"),
    passes: int = typer.Option(3, "--passes", help="timed passes per max_pulses (the best is reported)"),
) -> None:
    """Events/s and peak memory from parquet to padded batch tensors (aux_first; kaggle_norm, qe, ice_properties), one worker.

    Reports wall-clock events/s and events per CPU-second of this process (the fairer single-core
    figure on a shared machine; set POLARS_MAX_THREADS=1 so the parquet decode stays on one core).
    """
    import resource
    import tempfile
    import tracemalloc

    from icezoo.data.io import list_batches, parse_batches
    from icezoo.data.loader import make_loader

    widths = _parse_ints(max_pulses, "--max-pulses")
    use_data(data, pulsemap, truth_table)
    tmp = None
    try:
        if data is None:
            tmp = tempfile.TemporaryDirectory(prefix="icezoo-bench-data-")
            data = Path(tmp.name) / "data"
            t0 = time.perf_counter()
            how = _make_dataset(data, events, min(50_000, events), seed=0)
            typer.echo(f"temporary dataset: {events} events ({how}, {time.perf_counter() - t0:.1f} s) in {data}")
        ids = parse_batches(batches, list_batches(data, split))
        for width in widths:
            sel, feats = _components(width)
            best = best_cpu = float("inf")
            n_events = n_steps = 0
            for p in range(max(1, passes)):
                loader = make_loader(data, split, ids, sel, feats, batch_size, shuffle=True, seed=0, epoch=p)
                t0, c0 = time.perf_counter(), time.process_time()
                n_events = n_steps = 0
                for batch in loader:
                    n_events += batch.num_events
                    n_steps += 1
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
            # one more pass under tracemalloc for the numpy/Python peak (polars' own buffers show in RSS)
            tracemalloc.start()
            for _ in make_loader(data, split, ids, sel, feats, batch_size, shuffle=True, seed=0, epoch=0):
                pass
            _, traced_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            skipped = loader.skipped
            typer.echo(f"max_pulses={width}: {n_events / best:,.0f} events/s wall, {n_events / best_cpu:,.0f} events per "
                       f"CPU-second ({n_events} events, {n_steps} batches of <= {batch_size}, best of {max(1, passes)}: "
                       f"{best:.2f} s wall, {best_cpu:.2f} s CPU; {len(ids)} file(s), {skipped} skipped < 2 pulses); "
                       f"peak traced {traced_peak / 2**20:.0f} MiB, peak RSS {rss:.0f} MiB")
    finally:
        if tmp is not None:
            tmp.cleanup()


def inspect_cmd(
    data: Path = typer.Option(..., "--data", help="dataset: Kaggle-layout dir, GraphNeT .db or Parquet folder"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
) -> None:
    """Summary of a dataset of any format: events, pulses per event, pulse maps, truth columns, detector
    (from meta and indexes; no pulse column is read, but for a GraphNeT pulse map's sensor columns)."""
    from icezoo.data.formats import open_source

    if not Path(data).exists():
        raise IcezooError(f"{data}: dataset directory not found")
    if Path(data).is_dir() and not any(Path(data).iterdir()):
        raise IcezooError(f"{data}: no train/ or test/ folder (expected the Kaggle layout)")
    use_data(data, pulsemap, truth_table)
    for line in open_source(data).describe():
        typer.echo(line)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    bench.command("data")(bench_data_cmd)
    app.command("inspect")(inspect_cmd)
