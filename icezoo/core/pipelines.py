"""Pipelines, from a name to a checked config: the one module that resolves them.

Where named pipelines come from (:class:`Pipelines`: the ``[pipelines.NAME]`` tables of the files
that plugins register through ``icezoo_pipeline_files``, plus a ``--pipeline-file`` laid over
them), what a pipeline is (:class:`PipelineConfig`), how a name becomes one (``parent`` chains
merged: tables merge recursively, arrays replace, a cycle is an error), and the check that every
component exists and takes its params (:func:`checked_pipeline`), so errors name the file the
pipeline came from. The composer (:mod:`icezoo.core.compose`) then builds a checked config.

A table names one component per stage as ``{ name = "...", param = value, ... }`` (a bare string
is a component with default params).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from icezoo.core.components import DEFAULT_MAX_PULSES, STAGES, Component, Config, Stage
from icezoo.core.errors import IcezooError, format_validation_error
from icezoo.core.names import add_once, did_you_mean, normalise, read_tables

class ComponentRef(BaseModel):
    """A component by name plus its params (validated by the component's Config)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    #: only for losses and tasks: the term's weight in the sum (finite and not negative: a NaN weight would make
    #: every step's loss NaN, each step skipped by the NaN guard, and the run end "done" untrained)
    weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    #: model stages only: keep this component's weights fixed (requires_grad off, always in eval mode)
    freeze: bool = Field(False, strict=True)
    #: model stages only: start this component from the same component of that pipeline's newest run (EXP_100)
    init_from: str | None = None
    #: backbone lists only, not the last stage: its per-pulse output is concatenated to the list's output (EXP_40)
    concat: bool = Field(False, strict=True)

    @classmethod
    def parse(cls, value: Any) -> "ComponentRef":
        if isinstance(value, ComponentRef):
            return value
        if isinstance(value, str):
            return cls(name=value)
        if isinstance(value, dict):
            value = dict(value)
            if "name" not in value:
                raise ValueError("a component table needs a 'name'")
            name = value.pop("name")
            options = {key: value.pop(key) for key in STAGE_OPTIONS if key in value}
            return cls(name=name, params=value, weight=value.pop("weight", 1.0), **options)
        raise ValueError(f"expected a component name or table, got {type(value).__name__}")

    def to_toml_value(self, with_weight: bool = False) -> dict[str, Any]:
        out = {"name": self.name, **self.params}
        if with_weight and self.weight != 1.0:
            out["weight"] = self.weight
        out.update(self.options())
        return out

    def options(self) -> dict[str, Any]:
        """The stage options that are set (freeze, init_from, concat), as written in a table."""
        return {key: getattr(self, key) for key in STAGE_OPTIONS if getattr(self, key)}


#: the stages whose entries carry a ``weight`` (their terms are summed into the training loss)
WEIGHTED = ("loss", "task")
#: kind -> table key where they differ (``task`` -> ``tasks``)
STAGE_KEYS = {s.kind: s.key for s in STAGES if s.key != s.kind}

#: per-component options of a stage entry that are not the component's params
STAGE_OPTIONS = ("freeze", "init_from", "concat")


def _refs(value: Any) -> list[ComponentRef]:
    if isinstance(value, (str, dict, ComponentRef)):
        return [ComponentRef.parse(value)]
    out = []
    for i, entry in enumerate(value):
        try:
            out.append(ComponentRef.parse(entry))
        except ValidationError as exc:
            if len(value) == 1:
                raise
            # the entry's index in the error's path (backbone.1.init_from), as compose names list entries
            errors = [{"type": e["type"], "loc": (i, *e["loc"]), "input": e.get("input"),
                       **({"ctx": e["ctx"]} if "ctx" in e else {})} for e in exc.errors()]
            raise ValidationError.from_exception_data(exc.title, errors) from None
    return out


class TrainSettings(BaseModel):
    """How a pipeline trains by default (the CLI's flags override these). Numbers are finite: an
    ``lr = inf`` run would diverge and ``epochs = inf`` never end."""

    model_config = ConfigDict(extra="forbid")
    batch_size: int = Field(64, gt=0, strict=True)
    epochs: float = Field(1.0, gt=0, allow_inf_nan=False)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(0.01, ge=0, allow_inf_nan=False)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = Field(0.1, ge=0, lt=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    accumulate: int = Field(1, gt=0, strict=True)
    grad_clip: float | None = Field(1.0, gt=0, allow_inf_nan=False)
    ema: float | None = Field(None, gt=0, lt=1)
    nan_fallback_after: int = Field(3, gt=0, strict=True)
    batches: str = "cycle"
    #: with it, each epoch trains on the next this-many training files, walked round-robin ("cycle")
    files_per_epoch: int | None = Field(None, gt=0, strict=True)
    val_batches: str | None = None
    max_steps: int | None = Field(None, gt=0, strict=True)
    #: the kappa filter (EXP_33_FT_3_KAPPA): train only on events where run ``kappa_from`` predicts
    #: kappa above ``min_kappa`` (its predictions are cached in that run's directory)
    min_kappa: float | None = Field(None, ge=0)
    kappa_from: str | None = None
    #: train on this fraction of each training file's events (the events whose id hashes below it: one
    #: fixed subset for every run and seed, a smaller fraction's inside a larger one's): few-label studies
    fraction: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _kappa_filter(self) -> "TrainSettings":
        if (self.min_kappa is None) != (self.kappa_from is None):
            raise ValueError("the kappa filter needs both min_kappa and kappa_from")
        return self


def _stage_field(stage: Stage) -> tuple[Any, Any]:
    if stage.chain:  # one component, or a list applied one after another
        return ComponentRef | list[ComponentRef], Field(default_factory=lambda: ComponentRef(name=stage.default[0]))
    if stage.many:
        return list[ComponentRef], Field(default_factory=lambda: [ComponentRef(name=n) for n in stage.default])
    return ComponentRef, Field(default_factory=lambda: ComponentRef(name=stage.default[0]))


def _parse_many(cls, value: Any) -> list[ComponentRef]:
    refs = _refs(value)
    if not refs:
        raise ValueError("needs at least one component")
    return refs


def _parse_optional(cls, value: Any) -> list[ComponentRef]:
    """A stage that may be empty (``tasks``: none in a direction-only pipeline)."""
    return _refs(value)


def _parse_one(cls, value: Any) -> ComponentRef:
    return ComponentRef.parse(value)


def _parse_chain(cls, value: Any) -> ComponentRef | list[ComponentRef]:
    refs = _parse_many(cls, value)
    return refs[0] if len(refs) == 1 else refs


class _PipelineBase(BaseModel):
    """What a pipeline holds besides its stages (those come from :data:`icezoo.core.components.STAGES`)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "custom"
    description: str = ""
    #: the experiment-log row this pipeline reproduces, and the score the log reported (as text)
    experiment: str = ""
    log_score: str = ""
    init_from: str | None = None

    def refs(self, kind: str) -> list[ComponentRef]:
        """The components of a stage as a list (one entry for a single-component stage)."""
        return _refs(getattr(self, STAGE_KEYS.get(kind, kind)))

    @property
    def max_pulses(self) -> int:
        return int(self.selection.params.get("max_pulses", DEFAULT_MAX_PULSES))

    def to_table(self) -> dict[str, Any]:
        """The pipeline as a TOML-ready table (what ``--save`` writes, what checkpoints store)."""
        table: dict[str, Any] = {"description": self.description}
        for key in ("experiment", "log_score", "init_from"):
            if getattr(self, key):
                table[key] = getattr(self, key)
        for stage in STAGES:
            refs = [r.to_toml_value(with_weight=stage.kind in WEIGHTED) for r in self.refs(stage.kind)]
            if refs or stage.default:  # an empty optional stage is left out (direction-only tables as before)
                table[stage.key] = refs if stage.many or len(refs) > 1 else refs[0]
        table["train"] = self.train.model_dump(exclude_none=True)
        return table

    def with_overrides(self, overrides: dict[str, Any], where: str = "--set") -> "PipelineConfig":
        """Apply dotted ``stage.param=value`` overrides (``backbone.depth=8``, ``train.lr=3e-4``)."""
        table = self.to_table()
        # a component renamed first, so that the params given beside it (backbone.depth) apply to the new one
        ordered = sorted(overrides.items(), key=lambda kv: not kv[0].endswith(".name"))
        for dotted, value in ordered:
            parts = dotted.split(".")
            stage = parts[0]
            if stage not in table and stage not in PipelineConfig.model_fields:
                raise IcezooError(f"{where} {dotted}: unknown stage '{stage}' (stages: {', '.join(STAGE_NAMES)})")
            if len(parts) == 1:  # the whole stage: --set pooler='["mean","max"]'
                table[stage] = value
                continue
            target = table.setdefault(stage, {})
            if isinstance(target, list):
                if len(parts) > 1 and parts[1].isdigit():
                    index = int(parts[1])
                    if index >= len(target):
                        raise IcezooError(f"{where} {dotted}: {stage} has only {len(target)} entries")
                    target, parts = target[index], [stage, *parts[2:]]
                elif len(target) == 1:
                    target = target[0]
                else:
                    raise IcezooError(f"{where} {dotted}: {stage} is a list; say {stage}.N.param")
            for part in parts[1:-1]:
                target = target.setdefault(part, {})
            if parts[1:] == ["name"] and isinstance(target, dict) and target.get("name") != value:
                _keep_shared_params(stage, target)
            target[parts[-1]] = value
        return pipeline_from_table(self.name, table)


def _keep_shared_params(kind: str, entry: dict[str, Any]) -> None:
    """A stage entry whose component is replaced (``--set backbone.name=pyg``) keeps only what every
    component of its kind takes (the kind's base params, e.g. a selection's max_pulses) and the stage
    options; the old component's own params (a transformer's heads) would be unknown to the new one."""
    stage = next((s for s in STAGES if s.key == kind), None)
    if stage is None:
        return
    shared = set(stage.base.Config.model_fields) | {"name", "weight", *STAGE_OPTIONS}
    for key in [k for k in entry if k not in shared]:
        del entry[key]


#: A fully resolved pipeline: one component (or list) per stage of STAGES, plus training defaults.
PipelineConfig = create_model(
    "PipelineConfig",
    __base__=_PipelineBase,
    __module__=__name__,
    __validators__={
        "_many": field_validator(*(s.key for s in STAGES if s.many and s.default),
                                 mode="before")(classmethod(_parse_many)),
        "_optional": field_validator(*(s.key for s in STAGES if s.many and not s.default),
                                     mode="before")(classmethod(_parse_optional)),
        "_one": field_validator(*(s.key for s in STAGES if not s.many and not s.chain),
                                mode="before")(classmethod(_parse_one)),
        "_chain": field_validator(*(s.key for s in STAGES if s.chain), mode="before")(classmethod(_parse_chain)),
    },
    **{stage.key: _stage_field(stage) for stage in STAGES},
    train=(TrainSettings, Field(default_factory=TrainSettings)),
)
PipelineConfig.__doc__ = "A fully resolved pipeline: one component (or list) per stage, plus training defaults."

#: the top-level keys a --set override may name
STAGE_NAMES = (*(s.key for s in STAGES), "train")


def pipeline_from_table(name: str, table: dict[str, Any], where: str | None = None) -> PipelineConfig:
    """Validate a (resolved) table; errors read ``pipelines.NAME.stage.field: message``."""
    prefix = where if where else f"pipelines.{name}"
    try:
        return PipelineConfig.model_validate({**table, "name": name})
    except ValidationError as exc:
        raise IcezooError(format_validation_error(prefix, exc)) from None


# ---------------------------------------------------------------------------------------------
# Where named pipelines come from


@dataclass
class PipelineSource:
    """One ``[pipelines.NAME]`` table as written, and the file it came from."""

    name: str
    table: dict[str, Any]
    file: str


class Pipelines(dict[str, PipelineSource]):
    """The named pipelines, keyed by normalised name: a name two files define is an error naming both."""

    def add_file(self, path: str | Path) -> None:
        """Add every ``[pipelines.NAME]`` table of a TOML file."""
        for source in read_pipeline_file(path).values():
            add_once(self, source.name, source, source.file, "pipeline")

    def find(self, name: str) -> PipelineSource:
        """The source of a pipeline; a miss says "did you mean"."""
        key = normalise(name)
        if key in self:
            return self[key]
        raise IcezooError(f"unknown pipeline '{name}'{did_you_mean(name, (p.name for p in self.values()))}")

    def overlay(self, sources: dict[str, PipelineSource]) -> "Pipelines":
        """A copy in which ``sources`` (a file's, from :func:`read_pipeline_file`) replace the pipelines
        of the same name; they may name any other one as their parent."""
        return Pipelines({**{key: src for key, src in self.items() if key not in sources}, **sources})


def read_pipeline_file(path: str | Path) -> dict[str, PipelineSource]:
    """The ``[pipelines.NAME]`` tables of a TOML file, keyed by lookup key."""
    return read_tables(path, "pipelines", PipelineSource, "pipeline")


# ---------------------------------------------------------------------------------------------
# From a name to a checked config


class RegistryView(Protocol):
    """What resolving and checking a pipeline needs of a registry: :class:`icezoo.core.registry.Registry`
    is one (that module imports this one to hold the pipelines it collects, so this one does not import it)."""

    pipelines: Pipelines

    def get(self, kind: str, name: str) -> Any:
        """The component spec (``.cls``, ``.name``) of a kind and name; a miss says "did you mean"."""

    def with_pipelines(self, pipelines: Pipelines) -> "RegistryView":
        """The same registry holding ``pipelines`` instead (the original is left as it is)."""


def merge_tables(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge: tables merge key by key, everything else (arrays included) replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_table(pipelines: Pipelines, name: str) -> dict[str, Any]:
    """The pipeline's table with its ``parent`` chain merged in (root first)."""
    first = source = pipelines.find(name)
    chain: list[PipelineSource] = []
    while True:
        if any(link is source for link in chain):
            cycle = " -> ".join([*(s.name for s in chain), source.name])
            raise IcezooError(f"pipelines.{first.name}: cycle of parents: {cycle}")
        chain.append(source)
        parent = source.table.get("parent")
        if parent is None:
            break
        if not isinstance(parent, str):
            raise IcezooError(f"{source.file}: pipelines.{source.name}.parent must be a pipeline name")
        try:
            source = pipelines.find(parent)
        except IcezooError as exc:
            raise IcezooError(f"{first.file}: pipelines.{source.name}.parent: {exc}") from None
    merged: dict[str, Any] = {}
    for link in reversed(chain):
        merged = merge_tables(merged, link.table)
    merged.pop("parent", None)
    return merged


def load_pipeline(reg: RegistryView, name: str) -> PipelineConfig:
    """A named pipeline, resolved through its parents and validated (its shape; not yet its components)."""
    source = reg.pipelines.find(name)
    return pipeline_from_table(source.name, resolve_table(reg.pipelines, name))


def validate_params(cls: type[Component], params: dict[str, Any], path: str) -> Config:
    """A component's params validated by its Config; errors name the path (``pipelines.X.backbone.depth``)."""
    try:
        return cls.Config.model_validate(params)
    except ValidationError as exc:
        raise IcezooError(format_validation_error(path, exc)) from None


def resolved_table(config: PipelineConfig, reg: RegistryView) -> dict[str, Any]:
    """The pipeline's table with every component found in ``reg`` and its params filled in with their
    defaults (what a run's config.toml and ``icezoo show`` hold)."""
    table = config.to_table()
    root = f"pipelines.{config.name}"
    for stage in STAGES:
        kind, many = stage.kind, stage.many
        refs = config.refs(kind)
        out = []
        for i, ref in enumerate(refs):
            path = f"{root}.{stage.key}" + (f".{i}" if len(refs) > 1 else "")
            try:
                spec = reg.get(kind, ref.name)
            except IcezooError as exc:
                raise IcezooError(f"{path}: {exc}") from None
            params = validate_params(spec.cls, ref.params, path).model_dump()
            entry = {"name": spec.name, **params}
            if kind in WEIGHTED:
                entry["weight"] = ref.weight
            out.append({**entry, **ref.options()})
        if out or stage.default:
            table[stage.key] = out if many or len(out) > 1 else out[0]
    table["train"] = config.train.model_dump()
    return table


def checked_pipeline(reg: RegistryView, name: str) -> PipelineConfig:
    """A named pipeline, its shape and every component's params validated now, so that an error
    names the file the pipeline came from (``FILE: pipelines.NAME.backbone.dpeth: unknown parameter``)."""
    source = reg.pipelines.find(name)
    try:
        config = load_pipeline(reg, name)
        resolved_table(config, reg)
    except IcezooError as exc:
        msg = str(exc)
        raise IcezooError(msg if msg.startswith(str(source.file)) else f"{source.file}: {msg}") from None
    return config


def pipeline_config(name: str | None = None, pipeline_file: str | Path | None = None, *,
                    reg: RegistryView) -> PipelineConfig:
    """A named pipeline, checked: from ``reg``'s pipelines or from ``pipeline_file`` laid over them
    (its pipelines may name registered ones as parents). With a file and no name, the file must hold
    exactly one."""
    if pipeline_file is not None:
        sources = read_pipeline_file(pipeline_file)
        if not sources:
            raise IcezooError(f"{pipeline_file}: no [pipelines.NAME] table")
        if name is None:
            if len(sources) != 1:
                raise IcezooError(f"{pipeline_file}: holds {len(sources)} pipelines; say which with --pipeline")
            name = next(iter(sources.values())).name
        reg = reg.with_pipelines(reg.pipelines.overlay(sources))
    elif name is None:
        raise IcezooError("name a pipeline (--pipeline NAME) or a file (--pipeline-file F)")
    return checked_pipeline(reg, name)
