"""Pipeline descriptions: the ``[pipelines.NAME]`` tables of registry.toml, resolved and validated.

A table names one component per stage as ``{ name = "...", param = value, ... }`` (a bare string
is a component with default params). ``parent = "OTHER"`` inherits OTHER's table: tables merge
recursively, arrays replace, a cycle is an error. Component params are validated later by the
composer against each component's own Config; here only the pipeline's shape is checked.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from icezoo.core.components import DEFAULT_MAX_PULSES, STAGES, Stage
from icezoo.core.errors import IcezooError, format_validation_error
from icezoo.core.registry import Registry, normalise


class ComponentRef(BaseModel):
    """A component by name plus its params (validated by the component's Config)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    #: only for losses: the term's weight in the sum (finite and not negative: a NaN weight would make
    #: every step's loss NaN, each step skipped by the NaN guard, and the run end "done" untrained)
    weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    #: model stages only: keep this component's weights fixed (requires_grad off, always in eval mode)
    freeze: bool = False
    #: model stages only: start this component from the same component of that pipeline's newest run (EXP_100)
    init_from: str | None = None
    #: backbone lists only, not the last stage: its per-pulse output is concatenated to the list's output (EXP_40)
    concat: bool = False

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


#: per-component options of a stage entry that are not the component's params
STAGE_OPTIONS = ("freeze", "init_from", "concat")


def _refs(value: Any) -> list[ComponentRef]:
    if isinstance(value, (str, dict, ComponentRef)):
        value = [value]
    return [ComponentRef.parse(v) for v in value]


class TrainSettings(BaseModel):
    """How a pipeline trains by default (the CLI's flags override these). Numbers are finite: an
    ``lr = inf`` run would diverge and ``epochs = inf`` never end."""

    model_config = ConfigDict(extra="forbid")
    batch_size: int = Field(64, gt=0)
    epochs: float = Field(1.0, gt=0, allow_inf_nan=False)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(0.01, ge=0, allow_inf_nan=False)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = Field(0.1, ge=0, lt=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    accumulate: int = Field(1, gt=0)
    grad_clip: float | None = Field(1.0, gt=0, allow_inf_nan=False)
    ema: float | None = Field(None, gt=0, lt=1)
    nan_fallback_after: int = Field(3, gt=0)
    batches: str = "cycle"
    #: with it, each epoch trains on the next this-many training files, walked round-robin ("cycle")
    files_per_epoch: int | None = Field(None, gt=0)
    val_batches: str | None = None
    max_steps: int | None = Field(None, gt=0)
    #: the kappa filter (EXP_33_FT_3_KAPPA): train only on events where run ``kappa_from`` predicts
    #: kappa above ``min_kappa`` (its predictions are cached in that run's directory)
    min_kappa: float | None = Field(None, ge=0)
    kappa_from: str | None = None

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
        return _refs(getattr(self, kind))

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
            refs = [r.to_toml_value(with_weight=stage.kind == "loss") for r in self.refs(stage.kind)]
            table[stage.kind] = refs if stage.many or len(refs) > 1 else refs[0]
        table["train"] = self.train.model_dump(exclude_none=True)
        return table

    def with_overrides(self, overrides: dict[str, Any], where: str = "--set") -> "PipelineConfig":
        """Apply dotted ``stage.param=value`` overrides (``backbone.depth=8``, ``train.lr=3e-4``)."""
        table = self.to_table()
        for dotted, value in overrides.items():
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
            target[parts[-1]] = value
        return pipeline_from_table(self.name, table)


#: A fully resolved pipeline: one component (or list) per stage of STAGES, plus training defaults.
PipelineConfig = create_model(
    "PipelineConfig",
    __base__=_PipelineBase,
    __module__=__name__,
    __validators__={
        "_many": field_validator(*(s.kind for s in STAGES if s.many), mode="before")(classmethod(_parse_many)),
        "_one": field_validator(*(s.kind for s in STAGES if not s.many and not s.chain),
                                mode="before")(classmethod(_parse_one)),
        "_chain": field_validator(*(s.kind for s in STAGES if s.chain), mode="before")(classmethod(_parse_chain)),
    },
    **{stage.kind: _stage_field(stage) for stage in STAGES},
    train=(TrainSettings, Field(default_factory=TrainSettings)),
)
PipelineConfig.__doc__ = "A fully resolved pipeline: one component (or list) per stage, plus training defaults."

#: the top-level keys a --set override may name
STAGE_NAMES = (*(s.kind for s in STAGES), "train")


def merge_tables(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge: tables merge key by key, everything else (arrays included) replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_table(registry: Registry, name: str) -> dict[str, Any]:
    """The pipeline's table with its ``parent`` chain merged in (root first)."""
    chain: list[str] = []
    source = registry.pipeline(name)
    tables = []
    while True:
        key = normalise(source.name)
        if key in chain:
            cycle = " -> ".join([*(registry.pipeline(c).name for c in chain), source.name])
            raise IcezooError(f"pipelines.{registry.pipeline(name).name}: cycle of parents: {cycle}")
        chain.append(key)
        tables.append(source.table)
        parent = source.table.get("parent")
        if parent is None:
            break
        if not isinstance(parent, str):
            raise IcezooError(f"{source.file}: pipelines.{source.name}.parent must be a pipeline name")
        try:
            source = registry.pipeline(parent)
        except IcezooError as exc:
            raise IcezooError(f"{registry.pipeline(name).file}: pipelines.{chain_name(registry, chain[-1])}.parent: {exc}") from None
    merged: dict[str, Any] = {}
    for table in reversed(tables):
        merged = merge_tables(merged, table)
    merged.pop("parent", None)
    return merged


def chain_name(registry: Registry, key: str) -> str:
    return registry.pipeline(key).name


def pipeline_from_table(name: str, table: dict[str, Any], where: str | None = None) -> PipelineConfig:
    """Validate a (resolved) table; errors read ``pipelines.NAME.stage.field: message``."""
    prefix = where if where else f"pipelines.{name}"
    try:
        return PipelineConfig.model_validate({**table, "name": name})
    except ValidationError as exc:
        raise IcezooError(format_validation_error(prefix, exc)) from None


def load_pipeline(registry: Registry, name: str) -> PipelineConfig:
    """A named pipeline, resolved through its parents and validated."""
    source = registry.pipeline(name)
    return pipeline_from_table(source.name, resolve_table(registry, name))
