"""``icezoo list``, ``icezoo compose`` and ``icezoo show``: the registry and pipelines, seen and tried."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from icezoo.core.errors import IcezooError


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values are read as TOML (``8``, ``true``, ``"x"``, ``[1,2]``), else as text."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise IcezooError(f"--set {item}: expected key=value (e.g. backbone.depth=8)")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def _params_text(cls) -> str:
    parts = []
    for name, field in cls.Config.model_fields.items():
        default = field.get_default(call_default_factory=True)
        parts.append(f"{name}={default!r}" if not field.is_required() else f"{name} (required)")
    return ", ".join(parts) or "-"


def _properties_text(cls) -> str:
    props = sorted(cls.properties)
    try:
        cfg = cls.Config.model_validate(cls.example_params)
        props = sorted(cls.declared_properties(cfg) | (cls.properties if cls.kind != "backbone" else frozenset()))
    except Exception:  # a component whose defaults are not valid: show the class-level declaration
        pass
    extra = []
    if getattr(cls, "output", None) and cls.kind == "head":
        extra.append(f"output={cls.output}")
    if cls.kind == "loss":
        extra.append("accepts=" + "|".join(sorted(cls.accepts)))
    needs = [f"needs {r}" for r in sorted(cls.requires)]
    return ", ".join([*props, *needs, *extra]) or "-"


def cmd_list(
    what: Optional[str] = typer.Argument(None, help="a kind (backbone, loss, ...), 'pipelines', or a glob such as 'dyn*'"),
) -> None:
    """List registered components (grouped by kind) or named pipelines."""
    from icezoo.core.components import KINDS, STAGES
    from icezoo.zoo import registry

    reg = registry()
    console = Console()
    if what in ("pipelines", "pipeline"):
        table = Table(title="Named pipelines (registry.toml and plugins)", show_lines=False)
        for col in ("name", "experiment", "log score", "parent", "description"):
            table.add_column(col, overflow="fold")
        for src in sorted(reg.pipelines.values(), key=lambda s: s.name.lower()):
            t = src.table
            table.add_row(src.name, str(t.get("experiment", "")), str(t.get("log_score", "")),
                          str(t.get("parent", "")), str(t.get("description", "")))
        console.print(table)
        return
    kind = what if what in KINDS else None
    pattern = None if (what is None or kind) else what
    specs = reg.list(kind=kind, pattern=pattern)
    if not specs:
        raise IcezooError(f"no component matches '{what}' (kinds: {', '.join(KINDS)}, or 'pipelines')")
    for stage in STAGES:
        group = [spec for spec in specs if spec.kind == stage.kind]
        if not group:
            continue
        many = "a list" if stage.many else "one"
        table = Table(title=f"{stage.kind} ({len(group)}; a pipeline names {many}; in_dim: {stage.in_dim})",
                      title_justify="left", show_lines=True)
        for col, ratio in (("name", 1), ("provider", 1), ("description", 3), ("parameters (defaults)", 3),
                           ("properties", 2)):
            table.add_column(col, overflow="fold", ratio=ratio)
        for spec in group:
            name = spec.name + (f" (alias: {', '.join(spec.cls.aliases)})" if spec.cls.aliases else "")
            table.add_row(name, spec.provider, spec.cls.description(), _params_text(spec.cls),
                          _properties_text(spec.cls))
        console.print(table)


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

    from icezoo.core.compose import count_parameters
    from icezoo.core.config import ComponentRef
    from icezoo.core.synthetic import synthetic_batch
    from icezoo.core.tomlwrite import pipelines_toml
    from icezoo.zoo import build, pipeline_config

    # the stages not named here come from a tested pipeline: --pipeline / --pipeline-file, else 'default'
    config = pipeline_config(pipeline or (None if pipeline_file else "default"), pipeline_file)
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
        write_text_atomic(save, pipelines_toml({config.name: config.to_table()}))
        console.print(f"saved pipeline '{config.name}' to {save}")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file the user named: one-line errors for a missing directory or a directory given as
    the file, then the core's atomic write (temporary name, rename)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise IcezooError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise IcezooError(f"{path}: is a directory (give a file name)")
    from icezoo.core.atomic import write_text_atomic as write

    write(path, text)


def cmd_show(
    name: str = typer.Argument(..., help="pipeline name"),
    pipeline_file: Optional[Path] = typer.Option(None, help="look the name up in this TOML file too"),
) -> None:
    """Print a named pipeline fully resolved: parents merged, every component's params with defaults."""
    from rich.syntax import Syntax

    from icezoo.core.tomlwrite import pipelines_toml
    from icezoo.zoo import pipeline_config, resolved_table

    config = pipeline_config(name, pipeline_file)
    Console().print(Syntax(pipelines_toml({config.name: resolved_table(config)}), "toml", word_wrap=True))


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("list")(cmd_list)
    app.command("compose")(cmd_compose)
    app.command("show")(cmd_show)
