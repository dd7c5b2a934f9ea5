"""``icezoo compose``: validate and build a pipeline, one forward+backward pass on a synthetic batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

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
    import torch
    from rich.console import Console
    from rich.table import Table

    from icezoo.core.compose import count_parameters
    from icezoo.core.pipelines import ComponentRef, pipeline_config
    from icezoo.core.synthetic import synthetic_batch
    from icezoo.core.tomlwrite import pipelines_toml
    from icezoo.zoo import build, registry

    # the stages not named here come from a tested pipeline: --pipeline / --pipeline-file, else 'default'
    config = pipeline_config(pipeline or (None if pipeline_file else "default"), pipeline_file, reg=registry())
    base = config.name if pipeline else Path(pipeline_file).name if pipeline_file else "default"
    origin = {stage: base for stage in ("features", "selection", "embedder", "backbone", "pooler", "head", "loss")}
    updates: dict[str, Any] = {"name": name if (save or not (pipeline or pipeline_file)) else config.name}

    def ref(stage: str, wanted: str, flag: str) -> ComponentRef:
        """The named component; the same one as the base pipeline's keeps the base's params."""
        have = getattr(config, stage)
        origin[stage] = flag
        if not isinstance(have, list) and have.name == wanted:
            origin[stage] = f"{flag}, {base}'s params"
            return have
        if stage == "selection":  # the pulse budget carries over to another selection
            return ComponentRef(name=wanted, params=have.params)
        return ComponentRef(name=wanted)

    for stage, wanted, flag in (("embedder", embed, "--embed"), ("backbone", backbone, "--backbone"),
                                ("head", head, "--head"), ("selection", selection, "--selection")):
        if wanted:
            updates[stage] = ref(stage, wanted, flag)
    for key, value, flag in (("pooler", _split(pool), "--pool"), ("loss", _split(loss), "--loss"),
                             ("features", _split(features), "--features")):
        if value:
            updates[key] = [ComponentRef(name=v) for v in value]
            origin[key] = flag
    config = config.model_copy(update=updates).with_overrides(parse_set(set_))

    torch.manual_seed(seed)
    model = build(config)
    n = min(config.max_pulses, 32)
    lengths = [max(1, round(n * (i + 1) / events)) for i in range(events)]
    batch = synthetic_batch(model.feature_dim, lengths, event_dim=model.event_dim, seed=seed)
    trace: list = []
    model.train()
    pred = model(batch, trace)
    value = model.loss(pred, batch)
    value.backward()
    grads_finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    console = Console()
    table = Table(title=f"pipeline {config.name}: {len(lengths)} synthetic events, pulses {lengths}")
    for col in ("stage", "component", "output shape", "parameters", "from"):
        table.add_column(col)
    feat_names = ", ".join(f.name for f in model.features)
    table.add_row("features", feat_names, str((len(lengths), max(lengths), model.feature_dim)), "0", origin["features"])
    table.add_row("selection", model.selection.name, f"max_pulses={model.selection.max_pulses}", "0",
                  origin["selection"])
    for row in trace:
        table.add_row(row.stage, row.component, str(row.shape), f"{row.params:,}", origin.get(row.stage, base))
    losses = " + ".join(f"{w:g}*{ls.name}" for w, ls in zip(model.loss_weights, model.losses))
    table.add_row("loss", losses, f"{value.item():.4f}", "0", origin["loss"])
    console.print(table)
    console.print(f"total parameters: {count_parameters(model):,}; loss finite: {bool(torch.isfinite(value))}; "
                  f"gradients finite: {grads_finite}")
    if not (torch.isfinite(value) and grads_finite):
        raise IcezooError(f"pipeline {config.name}: non-finite loss or gradient on the synthetic batch")
    if save:
        write_text_atomic(save, pipelines_toml({config.name: config.to_table()}), inputs=[pipeline_file])
        console.print(f"saved pipeline '{config.name}' to {save}")
