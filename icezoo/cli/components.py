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


def _terminal_width() -> int | None:
    """Columns to fit: the terminal's (or $COLUMNS); None when stdout is not a terminal (no cutting)."""
    import os
    import shutil
    import sys

    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return shutil.get_terminal_size().columns
    return None


def compact_table(headers: tuple[str, ...], rows: list[tuple[str, ...]], width: int | None) -> str:
    """Plain columns, never wrapped: every column as wide as its longest cell except the last,
    which is cut (``...``) to fit ``width`` (no cut when ``width`` is None). Names stay whole."""
    def cut(text: str, n: int) -> str:
        return text if len(text) <= n else text[:n - 3] + "..."

    def column_widths(table) -> list[int]:  # table[0] is the header row
        return [max(len(r[i]) for r in table) for i in range(len(headers) - 1)]

    if width is not None:  # middle columns (experiment, parent, ...) give way too, the first never
        for cap in range(18, 3, -1):
            cut_rows = [(r[0], *(cut(c, cap) for c in r[1:-1]), r[-1]) for r in rows]
            cut_headers = (headers[0], *(cut(h, cap) for h in headers[1:-1]), headers[-1])
            if sum(w + 2 for w in column_widths([cut_headers, *cut_rows])) + 12 <= width:
                break
        rows, headers = cut_rows, cut_headers
    widths = column_widths([headers, *rows])
    room = None if width is None else max(width - sum(w + 2 for w in widths), 0)

    def line(cells) -> str:
        last = cells[-1]
        if room is not None and len(last) > room:
            last = cut(last, room) if room >= 8 else ""
        return ("  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths)) + "  " + last).rstrip()

    return "\n".join([line(headers), line(tuple("-" * len(h) for h in headers)), *(line(r) for r in rows)])


def cmd_list(
    what: Optional[str] = typer.Argument(None, help="a kind (backbone, loss, ...), 'pipelines', or a glob such as 'dyn*'"),
    details: bool = typer.Option(False, "--details", help="parameters and properties of each match (as icezoo show)"),
) -> None:
    """List registered components (name, kind, provider, description) or named pipelines; one line each."""
    from icezoo.core.components import KINDS
    from icezoo.zoo import registry

    reg = registry()
    width = _terminal_width()
    if what in ("pipelines", "pipeline"):
        rows = [(src.name, str(src.table.get("experiment", "")), str(src.table.get("log_score", "")),
                 str(src.table.get("parent", "")), " ".join(str(src.table.get("description", "")).split()))
                for src in sorted(reg.pipelines.values(), key=lambda s: s.name.lower())]
        print(compact_table(("name", "experiment", "log score", "parent", "description"), rows, width))
        return
    kind = what if what in KINDS else None
    pattern = None if (what is None or kind) else what
    specs = reg.list(kind=kind, pattern=pattern)
    if not specs:
        raise IcezooError(f"no component matches '{what}' (kinds: {', '.join(KINDS)}, or 'pipelines')")
    if details:
        print("\n\n".join(component_details(spec) for spec in specs))
        return
    rows = [(spec.name, spec.kind, spec.provider,
             spec.cls.description() + (f" (alias: {', '.join(spec.cls.aliases)})" if spec.cls.aliases else ""))
            for spec in specs]
    print(compact_table(("name", "kind", "provider", "description"), rows, width))
    if width is not None:
        print("details: icezoo show NAME (parameters, defaults, properties)")


def component_details(spec) -> str:
    """Everything about one component: what it is, its params with types and defaults, its properties."""
    from icezoo.core.components import STAGES

    cls = spec.cls
    stage = next((st for st in STAGES if st.kind == spec.kind), None)
    lines = [f"{spec.name} ({spec.kind}, {spec.provider})"]
    doc = " ".join((cls.__doc__ or "").split())
    if doc:
        lines.append(f"  {doc}")
    if cls.aliases:
        lines.append(f"  aliases: {', '.join(cls.aliases)}")
    if stage is not None:
        lines.append(f"  stage: a pipeline names {'a list' if stage.many else 'one'} ({spec.kind} = ...)")
    lines.append("  parameters:" if cls.Config.model_fields else "  parameters: none")
    for name, field in cls.Config.model_fields.items():
        kind = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        default = "required" if field.is_required() else f"= {field.get_default(call_default_factory=True)!r}"
        note = f"  ({field.description})" if field.description else ""
        lines.append(f"    {name}: {kind} {default}{note}")
    lines.append(f"  properties: {_properties_text(cls)}")
    return "\n".join(lines)


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
        write_text_atomic(save, pipelines_toml({config.name: config.to_table()}), inputs=[pipeline_file])
        console.print(f"saved pipeline '{config.name}' to {save}")


def write_text_atomic(path: Path, text: str, inputs=()) -> None:
    """Write a file the user named (``--save``): one-line errors for a missing directory, a directory
    given as the file, one of the command's ``inputs`` or a path inside a dataset or run directory
    (:func:`icezoo.core.outputs.check_output`), then the core's atomic write (temporary name, rename)."""
    from icezoo.core.outputs import check_output

    path = check_output(path, "--save", inputs=[i for i in inputs if i is not None])
    if path.parent and not path.parent.exists():
        raise IcezooError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise IcezooError(f"{path}: is a directory (give a file name)")
    from icezoo.core.atomic import write_text_atomic as write

    write(path, text)


def cmd_show(
    name: str = typer.Argument(..., help="pipeline name, or component name (its parameters and properties)"),
    pipeline_file: Optional[Path] = typer.Option(None, help="look the name up in this TOML file too"),
    toml: bool = typer.Option(False, "--toml", help="plain TOML, never wrapped (also the output when piped)"),
) -> None:
    """A named pipeline fully resolved (parents merged, every param with its default) as TOML that
    ``--pipeline-file`` reloads; or a component's details."""
    import sys

    from icezoo.core.registry import normalise
    from icezoo.core.tomlwrite import pipelines_toml
    from icezoo.zoo import pipeline_config, registry, resolved_table

    reg = registry()
    is_pipeline = pipeline_file is not None or normalise(name) in reg.pipelines
    if not is_pipeline:
        specs = [spec for spec in reg.list() if normalise(name) in (normalise(spec.name),
                                                                     *map(normalise, spec.cls.aliases))]
        if specs:
            print("\n\n".join(component_details(spec) for spec in specs))
            return
        try:
            reg.pipeline(name)
        except IcezooError as exc:
            raise IcezooError(f"{exc} (nor a component: icezoo list shows them)") from None
    config = pipeline_config(name, pipeline_file)
    text = pipelines_toml({config.name: resolved_table(config)})
    if toml or not sys.stdout.isatty():
        sys.stdout.write(text)  # exactly the TOML: no colours, no wrapping
        return
    from rich.syntax import Syntax

    Console().print(Syntax(text, "toml", word_wrap=True))


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("list")(cmd_list)
    app.command("compose")(cmd_compose)
    app.command("show")(cmd_show)
