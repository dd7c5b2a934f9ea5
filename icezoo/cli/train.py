"""``icezoo train``: train a pipeline into a run directory (the engine does the work)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import (PRECISION_HELP, parse_set, pulsemap_option, run_training, truth_table_option,
                               use_data)


def cmd_train(
    pipeline: Optional[str] = typer.Option(None, "--pipeline", "--config_name", "--config-name",
                                           help="named pipeline (registry.toml); default: 'default'"),
    pipeline_file: Optional[Path] = typer.Option(None, "--pipeline-file", help="TOML file holding pipelines.NAME tables"),
    data: Optional[Path] = typer.Option(None, help="dataset: Kaggle-layout dir, GraphNeT .db or Parquet folder "
                                                   "(icezoo list formats); default: the cached simulated set"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
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
    from icezoo.engine.train import TrainOptions

    use_data(data, pulsemap, truth_table, runs=[resume] if resume else None, runs_dir=runs_dir)
    opts = TrainOptions(
        pipeline=pipeline, pipeline_file=str(pipeline_file) if pipeline_file else None,
        data=str(data) if data else None, batches=batches, epochs=epochs, batch_size=batch_size,
        max_pulses=max_pulses, precision=precision, accumulate=accumulate, init_from=init_from, resume=resume,
        save_every_steps=save_every_steps, overrides=parse_set(set_), name=name, description=description,
        workers=workers, runs_dir=str(runs_dir), seed=seed, max_steps=max_steps, device=device,
        progress=not no_progress and sys.stderr.isatty(),
    )
    run_training(opts, "train", "icezoo evaluate {run}")
