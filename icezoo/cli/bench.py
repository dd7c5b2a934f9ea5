"""``icezoo bench``: speed and memory of the data path (``data``), the simulator (``sim``), a
model (``model``), ``icezoo predict`` end to end (``predict``) and onnxruntime against torch eager
(``export``). The engine measures; these print."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import PRECISION_HELP, parse_set, pulsemap_option, truth_table_option, use_data
from icezoo.core.errors import IcezooError


def _parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise IcezooError(f"{what} {text!r}: expected comma-separated integers, e.g. 128,256") from None
    if not values or min(values) < 1:
        raise IcezooError(f"{what} {text!r}: expected positive integers")
    return values


def cmd_bench_data(
    data: Optional[Path] = typer.Option(None, "--data", help="dataset (any format: icezoo list formats); default: a "
                                                             "temporary Kaggle-layout one"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
    split: str = typer.Option("train", help="split to read"),
    max_pulses: str = typer.Option("128,256", "--max-pulses", help="comma-separated max_pulses values"),
    batch_size: int = typer.Option(256, "--batch-size"),
    batches: str = typer.Option("cycle", "--batches", help="batch files to read: A:B, A,B,C or cycle (all)"),
    events: int = typer.Option(40_000, "--events", help="events of the temporary dataset (without --data)"),
    passes: int = typer.Option(3, "--passes", min=1, help="timed passes per max_pulses (the best is reported)"),
) -> None:
    """Events/s and peak memory from parquet to padded batch tensors (aux_first; kaggle_norm, qe, ice_properties), one worker.

    Reports wall-clock events/s and events per CPU-second of this process (the fairer single-core
    figure on a shared machine; set POLARS_MAX_THREADS=1 so the parquet decode stays on one core).
    """
    from icezoo.engine.bench_data import bench_data, format_bench_data

    widths = _parse_ints(max_pulses, "--max-pulses")
    use_data(data, pulsemap, truth_table)
    for result in bench_data(data, widths, split=split, batch_size=batch_size, batches=batches, events=events,
                             passes=passes, echo=typer.echo):
        typer.echo(format_bench_data(result))


def cmd_bench_sim(
    events: int = typer.Option(20_000, "--events", help="events to simulate"),
    seed: int = typer.Option(0, "--seed"),
    noise: bool = typer.Option(True, "--noise/--no-noise"),
    legacy: bool = typer.Option(False, "--legacy", help="the simulator before issue 11 (every addition off)"),
) -> None:
    """Simulator speed: events/s on one core (one process, numpy single-threaded) and peak memory."""
    from icezoo.engine.bench_data import bench_sim, format_bench_sim

    typer.echo(format_bench_sim(bench_sim(events, seed=seed, noise=noise, legacy=legacy)))


def cmd_bench_model(
    pipeline: Optional[str] = typer.Option("default", "--pipeline", "--config_name"),
    pipeline_file: Optional[Path] = typer.Option(None, "--pipeline-file"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    max_pulses: Optional[int] = typer.Option(None, "--max-pulses", min=1),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    steps: int = typer.Option(10, min=1, help="timed steps (after warmup)"),
    warmup: int = typer.Option(2, min=0),
    set_: Optional[list[str]] = typer.Option(None, "--set"),
    device: Optional[str] = typer.Option(None),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's)"),
    lengths: str = typer.Option("max", help="max: every event filled to max_pulses; data:DIR: the training "
                                            "loader's first batches of DIR (real pulse counts, bucketed)"),
    no_flops: bool = typer.Option(False, "--no-flops", help="skip the FLOP count and the matmul roof"),
    infer_only: bool = typer.Option(False, "--infer-only", help="time inference only (long events)"),
) -> None:
    """Training and inference events/s, FLOPs per event, GFLOP/s against a matmul roof, and peak memory."""
    from icezoo.engine.bench import bench_model, format_bench

    res = bench_model(pipeline, str(pipeline_file) if pipeline_file else None, batch_size=batch_size,
                      max_pulses=max_pulses, precision=precision, steps=steps, warmup=warmup,
                      overrides=parse_set(set_), device=device, threads=threads, lengths=lengths,
                      flops=not no_flops, phases=("infer",) if infer_only else ("train", "infer"))
    print(format_bench(res))


def cmd_bench_predict(
    pipeline: Optional[str] = typer.Option("default", "--pipeline", help="pipeline to time (trained 1 step; "
                                                                          "weights do not change the speed)"),
    pipeline_file: Optional[Path] = typer.Option(None, "--pipeline-file"),
    run: Optional[str] = typer.Option(None, help="an existing run instead (name or directory)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    data: Optional[Path] = typer.Option(None, help="Kaggle-layout dataset with a test split; default: a "
                                                   "temporary simulated one"),
    events: int = typer.Option(20_000, min=1, help="test events of the temporary dataset"),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    workers: int = typer.Option(0, min=0),
    device: Optional[str] = typer.Option(None),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's)"),
) -> None:
    """`icezoo predict` end to end (read, select, featurise, model, write): events/s, then each stage apart."""
    from icezoo.engine.bench import bench_predict, format_bench_predict

    res = bench_predict(pipeline, str(pipeline_file) if pipeline_file else None, run=run, runs_dir=str(runs_dir),
                        data=str(data) if data else None, events=events, batch_size=batch_size, workers=workers,
                        device=device, threads=threads)
    print(format_bench_predict(res))


def cmd_bench_export(
    pipeline: Optional[str] = typer.Option("default", "--pipeline"),
    pipeline_file: Optional[Path] = typer.Option(None, "--pipeline-file"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    max_pulses: Optional[int] = typer.Option(None, "--max-pulses", min=1),
    steps: int = typer.Option(10, min=1, help="batches per round"),
    rounds: int = typer.Option(5, min=1, help="rounds, eager and onnxruntime in turn (after one warm-up round)"),
    set_: Optional[list[str]] = typer.Option(None, "--set"),
    threads: Optional[int] = typer.Option(None, help="CPU threads of both (default: torch's)"),
    lengths: str = typer.Option("max", help="max: every event filled to max_pulses; data:DIR: the training "
                                            "loader's first batches of DIR (real pulse counts, bucketed)"),
    optimization: str = typer.Option("all", help="onnxruntime graph optimisation: all, extended, basic, none"),
) -> None:
    """Inference events/s of the pipeline exported to ONNX (onnxruntime, CPU) beside torch eager, in turn."""
    from icezoo.engine.bench_export import bench_export, format_bench_export

    res = bench_export(pipeline, str(pipeline_file) if pipeline_file else None, batch_size=batch_size,
                       max_pulses=max_pulses, steps=steps, rounds=rounds, threads=threads, lengths=lengths,
                       overrides=parse_set(set_), optimization=optimization)
    print(format_bench_export(res))
