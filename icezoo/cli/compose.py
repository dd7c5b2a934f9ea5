"""``icezoo compose``: validate and build a pipeline, one forward+backward pass on a synthetic batch."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import parse_set, write_text_atomic
from icezoo.core.errors import IcezooError


def _split(value: str | None):
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def cmd_compose(
    embed: Optional[str] = typer.Option(None, "--embed", "--embedder", help="embedder name"),
    backbone: Optional[str] = typer.Option(None, help="backbone name"),
    pool: Optional[str] = typer.Option(None, "--pool", "--pooler", help="pooler names, comma-separated"),
    head: Optional[str] = typer.Option(None, help="head name"),
    loss: Optional[str] = typer.Option(None, help="loss names, comma-separated"),
    features: Optional[str] = typer.Option(None, help="feature extractors, comma-separated"),
    task: Optional[list[str]] = typer.Option(None, "--task", help="train this target too (repeatable): direction "
                                             "(the head and loss, always trained), energy, event_type, vertex, ..."),
    selection: Optional[str] = typer.Option(None, help="pulse selection name"),
    pipeline: Optional[str] = typer.Option(None, help="start from this named pipeline"),
    pipeline_file: Optional[Path] = typer.Option(None, help="start from a pipeline in this TOML file"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="stage.param=value (repeatable)"),
    name: str = typer.Option("composed", help="pipeline name used by --save"),
    save: Optional[Path] = typer.Option(None, help="write the pipeline as a [pipelines.NAME] TOML file"),
    events: int = typer.Option(4, min=1, help="events in the synthetic batch"),
    seed: int = typer.Option(0),
) -> None:
    """Validate and build a pipeline, run one forward+backward pass on a synthetic batch, show each stage."""
    from icezoo.core.tomlwrite import pipelines_toml
    from icezoo.engine.smoke import compose_config, smoke_step

    # the stages not named here come from a tested pipeline: --pipeline / --pipeline-file, else 'default'
    stages = {"embedder": (embed, "--embed"), "backbone": (backbone, "--backbone"), "head": (head, "--head"),
              "selection": (selection, "--selection"), "pooler": (_split(pool), "--pool"),
              "loss": (_split(loss), "--loss"), "features": (_split(features), "--features"),
              "task": (task, "--task")}
    config, origin = compose_config(pipeline, pipeline_file, stages, name,
                                    keep_base_name=not save and bool(pipeline or pipeline_file),
                                    overrides=parse_set(set_))
    step = smoke_step(config, events, seed)
    console = _print_stages(step, origin)
    if not step.ok:
        raise IcezooError(f"pipeline {config.name}: non-finite loss or gradient on the synthetic batch")
    if save:
        write_text_atomic(save, pipelines_toml({config.name: config.to_table()}), inputs=[pipeline_file])
        console.print(f"saved pipeline '{config.name}' to {save}")


def _print_stages(step, origin: dict[str, str]):
    """The table of stages (component, output shape, parameters, where it came from) and the totals."""
    from rich.console import Console
    from rich.table import Table

    model, lengths, config = step.model, step.lengths, step.config
    console = Console()
    table = Table(title=f"pipeline {config.name}: {len(lengths)} synthetic events, pulses {lengths}")
    for col in ("stage", "component", "output shape", "parameters", "from"):
        table.add_column(col)
    feat_names = ", ".join(f.name for f in model.features)
    table.add_row("features", feat_names, str((len(lengths), max(lengths), model.feature_dim)), "0", origin["features"])
    table.add_row("selection", model.selection.name, f"max_pulses={model.selection.config.max_pulses}", "0",
                  origin["selection"])
    for row in step.trace:
        table.add_row(row.stage, row.component, str(row.shape), f"{row.params:,}", origin[row.stage])
    losses = " + ".join([*(f"{w:g}*{ls.name}" for w, ls in zip(model.loss_weights, model.losses)),
                         *(f"{model.task_weights[n]:g}*{n}" for n in model.tasks)])
    table.add_row("loss", losses, f"{step.loss:.4f}", "0", origin["loss"])
    console.print(table)
    console.print(f"total parameters: {step.parameters:,}; loss finite: {step.loss_finite}; "
                  f"gradients finite: {step.grads_finite}")
    return console
