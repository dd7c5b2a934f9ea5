"""``icezoo pretrain``: masked-pulse pretraining of a pipeline's embedder and backbone, on events without
truth, into a run directory (the training engine does the work; ``init_from`` then fine-tunes from it)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import (PRECISION_HELP, parse_set, pulsemap_option, run_training, truth_table_option,
                               use_data)


def cmd_pretrain(
    pipeline: Optional[str] = typer.Option(None, "--pipeline", help="named pipeline whose embedder and backbone "
                                                                   "are pretrained; default: 'default'"),
    pipeline_file: Optional[Path] = typer.Option(None, "--pipeline-file", help="TOML file holding pipelines.NAME tables"),
    data: Optional[Path] = typer.Option(None, help="dataset (Kaggle layout, GraphNeT .db or Parquet folder); "
                                                   "default: the cached simulated set"),
    split: str = typer.Option("train", help="the files to pretrain on: train | test (events without truth); the "
                                            "last ~10% of them validate the objective"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
    batches: Optional[str] = typer.Option(None, help="batch files of the split: 1:600 | 1,4,7 | cycle"),
    epochs: Optional[float] = typer.Option(None, help="epochs (fractions allowed)"),
    steps: Optional[int] = typer.Option(None, "--steps", "--max-steps", min=1, help="stop after N loader steps"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    max_pulses: Optional[int] = typer.Option(None, "--max-pulses", min=1, help="sets selection.max_pulses"),
    precision: Optional[str] = typer.Option(None, help=PRECISION_HELP),
    accumulate: Optional[int] = typer.Option(None, min=1, help="gradient accumulation steps"),
    resume: Optional[str] = typer.Option(None, help="resume this pretraining run exactly (other flags are ignored)"),
    save_every_steps: Optional[int] = typer.Option(None, "--save-every-steps", min=1,
                                                   help="also checkpoint every N loader steps"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="stage.param=value, and the objective's "
                                             "pretrain.param=value: pretrain.mask_ratio=0.5, pretrain.sensor_weight=0 "
                                             "(icezoo show masked_pulse) (repeatable)"),
    name: Optional[str] = typer.Option(None, help="run name"),
    description: Optional[str] = typer.Option(None, help="ledger description"),
    workers: int = typer.Option(0, min=0, help="loader worker processes"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where run directories go"),
    seed: int = typer.Option(0, help="seed of initialisation, shuffling, selection and masking"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:1 (default: cuda if available)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
) -> None:
    """Pretrain a pipeline's embedder and backbone by masked-pulse modelling (no truth needed)."""
    from icezoo.engine.train import TrainOptions
    from icezoo.engine.train.objective import check_split, split_objective

    overrides, objective = split_objective(parse_set(set_))
    use_data(data, pulsemap, truth_table, runs=[resume] if resume else None, runs_dir=runs_dir)
    opts = TrainOptions(
        pipeline=pipeline, pipeline_file=str(pipeline_file) if pipeline_file else None,
        data=str(data) if data else None, batches=batches, epochs=epochs, batch_size=batch_size,
        max_pulses=max_pulses, precision=precision, accumulate=accumulate, resume=resume,
        save_every_steps=save_every_steps, overrides=overrides, name=name, description=description,
        workers=workers, runs_dir=str(runs_dir), seed=seed, max_steps=steps, device=device,
        progress=not no_progress and sys.stderr.isatty(), split=check_split(split),
        objective=None if resume else objective,
    )
    run_training(opts, "pretrain", "icezoo train --pipeline P --init-from {run}")
