"""What ``icezoo train`` was asked: the options, the pipeline they name, and the command that reproduces them."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any

from icezoo.core.errors import IcezooError
from icezoo.core.pipelines import pipeline_config
from icezoo.core.tomlwrite import toml_value
from icezoo.engine.device import PRECISIONS
from icezoo.zoo import registry


@dataclass
class TrainOptions:
    """What the ``icezoo train`` flags say (None: the pipeline's own ``train`` table decides)."""

    pipeline: str | None = None
    pipeline_file: str | None = None
    data: str | None = None
    batches: str | None = None
    epochs: float | None = None
    batch_size: int | None = None
    max_pulses: int | None = None
    precision: str | None = None
    accumulate: int | None = None
    init_from: str | None = None
    resume: str | None = None
    save_every_steps: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    workers: int = 0
    runs_dir: str = "runs"
    seed: int = 0
    max_steps: int | None = None
    progress: bool = True
    device: str | None = None
    #: the split the training files come from: "train", or "test" (events without truth: pretraining)
    split: str = "train"
    #: ``icezoo pretrain``: the pretraining objective's table ({name = ..., params}); None: train the direction
    objective: dict[str, Any] | None = None


#: options a resumed run takes from its own run.json (giving them with --resume is noted and ignored)
RUN_SETTINGS = ("pipeline", "pipeline_file", "data", "batches", "epochs", "batch_size", "max_pulses", "precision",
                "accumulate", "init_from", "save_every_steps", "overrides", "name", "description", "max_steps",
                "split", "objective")
#: options of this invocation only, never saved with the run
SESSION_OPTIONS = ("resume", "progress", "device", "runs_dir")


def config_from_options(opts: TrainOptions):
    """The pipeline named by the flags, with ``--set`` and the train flags applied."""
    name = opts.pipeline
    if name is None and opts.pipeline_file is None:
        name = "default"
    config = pipeline_config(name, opts.pipeline_file, reg=registry())
    over = dict(opts.overrides)
    for key, value in (("epochs", opts.epochs), ("batch_size", opts.batch_size), ("precision", opts.precision),
                       ("accumulate", opts.accumulate), ("batches", opts.batches), ("max_steps", opts.max_steps)):
        if value is not None:
            over[f"train.{key}"] = value
    if opts.max_pulses is not None:
        over["selection.max_pulses"] = opts.max_pulses
    if opts.precision is not None and opts.precision not in PRECISIONS:
        raise IcezooError(f"--precision {opts.precision}: expected one of {', '.join(PRECISIONS)}")
    return config.with_overrides(over) if over else config


def canonical_command(opts: TrainOptions, config_name: str) -> str:
    """The exact ``icezoo train`` command that reproduces the run (flags that were given)."""
    parts = ["icezoo", "train" if opts.objective is None else "pretrain"]
    if opts.pipeline_file:
        parts += ["--pipeline-file", str(opts.pipeline_file)]
        if opts.pipeline:
            parts += ["--pipeline", opts.pipeline]
    elif opts.pipeline:
        parts += ["--pipeline", opts.pipeline]
    for flag, value in (("--data", opts.data), ("--batches", opts.batches), ("--epochs", opts.epochs),
                        ("--batch-size", opts.batch_size), ("--max-pulses", opts.max_pulses),
                        ("--precision", opts.precision), ("--accumulate", opts.accumulate),
                        ("--init-from", opts.init_from), ("--save-every-steps", opts.save_every_steps),
                        ("--max-steps", opts.max_steps)):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if opts.split != "train":
        parts += ["--split", opts.split]
    if opts.seed:
        parts += ["--seed", str(opts.seed)]
    if opts.workers:  # the loader's step sequence depends on the number of workers
        parts += ["--workers", str(opts.workers)]
    objective = {f"pretrain.{k}": v for k, v in (opts.objective or {}).items()}
    for key, value in {**opts.overrides, **objective}.items():
        text = value if isinstance(value, str) else toml_value(value)
        parts += ["--set", f"{key}={text}"]
    if opts.name:
        parts += ["--name", opts.name]
    cmd = " ".join(shlex.quote(p) for p in parts)
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws > 1:
        cmd = f"torchrun --nproc_per_node {ws} -m icezoo " + cmd.split(" ", 1)[1]
    return cmd
