"""``icezoo train``, ``evaluate``, ``predict``, ``runs`` and ``bench model`` (the engine's commands).

Heavy imports (torch, the zoo, the engine) happen inside the commands so ``icezoo --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.components import parse_set
from icezoo.core.errors import IcezooError

PRECISION_HELP = "fp32 | bf16 | fp16 (autocast; losses stay fp32)"


def cmd_train(
    pipeline: Optional[str] = typer.Option(None, "--pipeline", "--config_name", "--config-name",
                                           help="named pipeline (registry.toml); default: 'default'"),
    pipeline_file: Optional[Path] = typer.Option(None, "--pipeline-file", help="TOML file holding pipelines.NAME tables"),
    data: Optional[Path] = typer.Option(None, help="Kaggle-layout dataset dir; default: the cached simulated set"),
    batches: Optional[str] = typer.Option(None, help="training batch files: 1:600 | (1, 100) | 1,4,7 | cycle"),
    epochs: Optional[float] = typer.Option(None, help="epochs (fractions allowed)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    max_pulses: Optional[int] = typer.Option(None, "--max-pulses", min=1, help="sets selection.max_pulses"),
    precision: Optional[str] = typer.Option(None, help=PRECISION_HELP),
    accumulate: Optional[int] = typer.Option(None, min=1, help="gradient accumulation steps"),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="run (name or dir) or checkpoint to fine-tune from"),
    resume: Optional[str] = typer.Option(None, help="resume this run exactly (other flags are ignored)"),
    save_every_steps: Optional[int] = typer.Option(None, "--save-every-steps", min=1,
                                                   help="also checkpoint every N loader steps"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="stage.param=value, e.g. train.lr=3e-4 (repeatable)"),
    name: Optional[str] = typer.Option(None, help="run / experiment name (EXP_NAME)"),
    description: Optional[str] = typer.Option(None, help="ledger description (default: the pipeline's)"),
    workers: int = typer.Option(0, min=0, help="loader worker processes"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where run directories go"),
    seed: int = typer.Option(0, help="seed of initialisation, shuffling and selection"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="stop after N loader steps"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:1 (default: cuda if available)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
) -> None:
    """Train a pipeline (plain `icezoo train`: the small default pipeline on the cached simulated set)."""
    from icezoo.engine.train import InterruptedRun, TrainOptions, train

    opts = TrainOptions(
        pipeline=pipeline, pipeline_file=str(pipeline_file) if pipeline_file else None,
        data=str(data) if data else None, batches=batches, epochs=epochs, batch_size=batch_size,
        max_pulses=max_pulses, precision=precision, accumulate=accumulate, init_from=init_from, resume=resume,
        save_every_steps=save_every_steps, overrides=parse_set(set_), name=name, description=description,
        workers=workers, runs_dir=str(runs_dir), seed=seed, max_steps=max_steps, device=device,
        progress=not no_progress and sys.stderr.isatty(),
    )
    try:
        run_dir = train(opts)
    except InterruptedRun as exc:
        print(f"interrupted: checkpoint saved; resume with: icezoo train --resume {exc.run_dir}", file=sys.stderr)
        sys.exit(130)
    print(f"run: {run_dir}   next: icezoo evaluate {run_dir}")


def cmd_evaluate(
    runs: list[str] = typer.Argument(..., help="run directories or names in --runs-dir; several: their ensemble too"),
    data: Optional[Path] = typer.Option(None, help="dataset to score on (default: the run's own data)"),
    batches: Optional[str] = typer.Option(None, help="score these batch files instead of the validation split"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: Optional[str] = typer.Option(None),
    no_plots: bool = typer.Option(False, "--no-plots"),
    tta: int = typer.Option(1, "--tta", min=1, help="also score N rotations about the vertical axis, combined"),
) -> None:
    """Score a run (float64 Kaggle metric, median, 68% containment, bootstrap CI) against LineFit; write plots.
    Several runs: each, and their kappa-weighted ensemble, on the same events (paired CIs); --tta N: with and
    without test-time rotations."""
    if len(runs) == 1 and tta == 1:
        from icezoo.engine.evaluate import evaluate

        evaluate(runs[0], data=str(data) if data else None, batches=batches, runs_dir=runs_dir,
                 batch_size=batch_size, device=device, plots=not no_plots)
        return
    from icezoo.engine.evaluate import evaluate_members

    evaluate_members(runs, data=str(data) if data else None, batches=batches, runs_dir=runs_dir, tta=tta,
                     device=device, batch_size=batch_size)


def cmd_predict(
    runs: list[str] = typer.Argument(..., help="run directories or names in --runs-dir; several: their ensemble"),
    data: Path = typer.Option(..., help="Kaggle-layout dataset dir"),
    split: str = typer.Option("test", help="split to predict (DIR/<split>_meta.parquet)"),
    out: Path = typer.Option(Path("submission.csv"), help="CSV to write (atomically)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    workers: int = typer.Option(0, min=0),
    device: Optional[str] = typer.Option(None),
    tta: int = typer.Option(1, "--tta", min=1, help="combine N rotations about the vertical axis"),
) -> None:
    """Write a Kaggle submission: one row per event of <split>_meta (event_id,azimuth,zenith); several runs:
    the kappa-weighted mean of their directions (plain mean for heads without kappa)."""
    from icezoo.engine.predict import predict

    predict(runs, str(data), split=split, out=out, runs_dir=runs_dir, batch_size=batch_size, workers=workers,
            device=device, tta=tta)


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


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("train")(cmd_train)
    app.command("evaluate")(cmd_evaluate)
    app.command("predict")(cmd_predict)
    app.command("runs")(cmd_runs)
    bench.command("model")(cmd_bench_model)
    bench.command("predict")(cmd_bench_predict)
