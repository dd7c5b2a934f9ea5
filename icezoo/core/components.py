"""The component interfaces: one small base class per kind.

A component is a class with ``kind``, ``name``, a one-line ``description`` (first docstring line),
a nested pydantic ``Config`` (``extra="forbid"``) and the properties it declares. The composer
validates ``Config.model_validate(params)``, builds it with ``cls.build(config, in_dim)`` and reads
back ``out_dim``. Components never read files or import plugins. The base classes are abstract: a
class that leaves one of its kind's abstract methods unimplemented is refused at registration.

:data:`STAGES` is the one table of the pipeline's stages (kind, base class, list or not, default
components); the config, the composer, the registry, ``icezoo list`` and the conformance kit read it.

Declared properties (``properties`` / ``requires``; see :data:`PROPERTIES`) are checked two ways:
the composer checks that every ``requires`` is provided upstream, the conformance kit
(:mod:`icezoo.testing`) checks that every guarantee holds.
"""

from __future__ import annotations

from abc import ABC, ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from icezoo.core.batch import Batch, PulseChunk
from icezoo.core.detector import PAD_SENSOR

#: pulses kept per event when a pipeline's selection does not say
DEFAULT_MAX_PULSES = 128

#: The vocabulary of declared properties, with what each one means.
PROPERTIES: dict[str, str] = {
    "permutation_invariant": "output does not depend on the order of the pulses (a pooler: the pooled "
    "vector; an embedder/backbone: per-pulse outputs permute with the input)",
    "reads_padding": "padded slots may change the output (e.g. an unmasked mean); the padding checks are skipped",
    "adds_cls_token": "the backbone prepends a learned CLS token (its output has L+1 slots, slot 0 the CLS)",
    "cls_token": "needs a backbone that declares adds_cls_token",
    "xyzt": "reads batch.xyzt (positions and times)",
    "sensor_id": "reads batch.sensor_id",
    "event_level": "a feature extractor that returns one row per event (batch.event_features)",
    "sensor_tokens": "a selection that keeps whole sensors: the loader hands the model one token per hit sensor "
    "(batch.mask/xyzt/sensor_id/features per sensor) and every pulse of those sensors packed (batch.pulses); "
    "an embedder that requires it turns each sensor's pulses into its token",
    "translation_invariant": "per-pulse outputs unchanged when every position (batch.xyzt x, y, z) is shifted "
    "by one vector",
    "vertical_rotation_invariant": "per-pulse outputs unchanged when every position is rotated about the "
    "vertical (z) axis (the ice makes z special: full rotations are not a symmetry)",
}


class Config(BaseModel):
    """Base of every component's Config: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Component(metaclass=ABCMeta):
    """Shared metadata of every component kind (abstract: each kind's base names what must be implemented)."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    #: former names that still resolve (registry.toml, --set, saved pipelines, checkpoints)
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[Config]] = Config
    #: guarantees this component makes (keys of PROPERTIES)
    properties: ClassVar[frozenset[str]] = frozenset()
    #: what it needs from the rest of the pipeline (keys of PROPERTIES)
    requires: ClassVar[frozenset[str]] = frozenset()
    #: what it needs from the data's detector (``icecube86_sensor_id``, ``pmt_direction``, ``sensor_type``;
    #: see icezoo.data.detector): a pipeline is refused, before training, on data that lacks one
    needs: ClassVar[tuple[str, ...]] = ()
    #: params that build a small, valid instance when the defaults alone cannot (conformance kit, compose)
    example_params: ClassVar[dict[str, Any]] = {}

    @classmethod
    def build(cls, config: Config, in_dim: int) -> "Component":
        """An instance for ``config``, fed ``in_dim``-wide inputs (data-side kinds and losses ignore it)."""
        return cls(config)

    @classmethod
    def missing_methods(cls) -> list[str]:
        """Abstract methods this class leaves unimplemented (empty for a usable component)."""
        return sorted(getattr(cls, "__abstractmethods__", ()))

    @classmethod
    def description(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def declared_properties(cls, config: Config) -> frozenset[str]:
        """Properties of an instance with this config (override when a param changes them)."""
        return cls.properties

    @classmethod
    def declared_requires(cls, config: Config) -> frozenset[str]:
        return cls.requires

    @classmethod
    def export_refusal(cls, config: Config) -> str | None:
        """Why a model holding this component cannot be exported (ONNX, TorchScript), in one line; None
        when it can. ``icezoo export`` asks every component first; a built-in says None only where a
        parity test exports it (docs/export.md lists the families)."""
        return None

    @classmethod
    def feature_columns(cls, config: Config) -> dict[str, int]:
        """Columns of ``batch.features`` this component reads by index, as {param: column}; compose
        refuses a column beyond the pipeline's pulse features (a slice past the end is silently empty)."""
        return {}


class ModuleComponent(Component, nn.Module):
    """A component that is a torch module: built as ``cls(config, in_dim)``, reports ``out_dim``."""

    def __init__(self, config: Config, in_dim: int):
        nn.Module.__init__(self)
        self.config = config
        self.in_dim = in_dim
        self.out_dim = in_dim

    @classmethod
    def build(cls, config: Config, in_dim: int) -> "ModuleComponent":
        return cls(config, in_dim)


# ---------------------------------------------------------------------------------------------
# Data side: pulse selection and feature extraction work on numpy PulseChunks, vectorised.


class Selection(Component):
    """Chooses at most ``max_pulses`` pulses per event, deterministically for a given rng.

    Kept a kind of its own (not a FeatureExtractor): it changes *which* pulses exist, so it runs
    before every extractor, and pipelines swap it independently (EXP_12 vs EXP_101).
    """

    kind = "selection"

    class Config(Config):
        #: at least one pulse: 0 would leave every event empty and the model one direction for all
        max_pulses: int = Field(DEFAULT_MAX_PULSES, ge=1)

    def __init__(self, config: Config):
        self.config = config

    @property
    def max_pulses(self) -> int:
        return self.config.max_pulses

    @abstractmethod
    def select(self, chunk: PulseChunk, rng: np.random.Generator) -> PulseChunk:
        """Return the chunk restricted to the kept pulses, still grouped by event and in time order."""


class FeatureExtractor(Component):
    """Turns selected pulses into feature columns, vectorised over a whole chunk.

    A pulse-level extractor returns ``[n_rows, out_dim]`` float32 (rows of ``chunk``); one that
    declares ``event_level`` returns ``[n_events, out_dim]``. ``chunk_all`` holds the same events
    before selection, for event-level statistics that must see every pulse (pulse count, centre of gravity).
    """

    kind = "features"

    def __init__(self, config: Config):
        self.config = config

    #: names of the produced columns; len(columns) == out_dim
    columns: ClassVar[tuple[str, ...]] = ()

    @property
    def out_dim(self) -> int:
        return len(self.feature_names())

    def feature_names(self) -> tuple[str, ...]:
        return self.columns

    @property
    def event_level(self) -> bool:
        return "event_level" in self.declared_properties(self.config)

    @abstractmethod
    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        """Feature matrix, float32."""


# ---------------------------------------------------------------------------------------------
# Model side: torch modules chained by the composer.


class Embedder(ModuleComponent):
    """Per-pulse features [B, L, F] -> embeddings [B, L, D]."""

    kind = "embedder"

    @abstractmethod
    def forward(self, features: torch.Tensor, batch: Batch) -> torch.Tensor: ...


class Backbone(ModuleComponent):
    """Embeddings [B, L, D] -> [B, L, D'] (or [B, L+1, D'] with a CLS token in slot 0)."""

    kind = "backbone"

    @abstractmethod
    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor: ...


class Pooler(ModuleComponent):
    """Per-pulse states [B, L, D] and mask [B, L] -> one vector per event [B, P]."""

    kind = "pooler"
    properties = frozenset({"permutation_invariant"})

    @abstractmethod
    def forward(self, h: torch.Tensor, mask: torch.Tensor, cls: torch.Tensor | None = None) -> torch.Tensor: ...


class Head(ModuleComponent):
    """Pooled vector [B, P] -> prediction; ``output`` says which kind the losses receive.

    A head may give several outputs from one pooled vector (``direction_bins`` with ``regression``:
    bin logits and a kappa-scaled vector): :attr:`outputs` lists them and :meth:`view` cuts the
    prediction into the part a loss takes, so a pipeline sums losses on different outputs.
    """

    kind = "head"
    #: "vector": [B, 3] direction whose norm is the concentration kappa; "angles": [B, 2] (azimuth, zenith);
    #: "bins": azimuth and zenith bin logits (icezoo.nn.bins)
    output: ClassVar[str] = "vector"

    @property
    def outputs(self) -> frozenset[str]:
        """Every output kind this instance gives (default: just ``output``)."""
        return frozenset({self.output})

    def view(self, pred: torch.Tensor, output: str) -> torch.Tensor:
        """The part of ``pred`` that is the ``output`` kind (default: all of it)."""
        return pred

    @abstractmethod
    def forward(self, z: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def direction(self, pred: torch.Tensor) -> torch.Tensor:
        """Prediction -> unit direction vector [B, 3] (Kaggle convention)."""

    def kappa(self, pred: torch.Tensor) -> torch.Tensor | None:
        """Predicted concentration [B] where the head has one, else None."""
        return None


#: the width of the head outputs whose width is fixed ("bins": the head's layout says)
OUTPUT_WIDTHS: dict[str, int] = {"vector": 3, "angles": 2}


class Loss(Component, nn.Module):
    """A training loss: a subclass writes ``forward(pred, target)``, the per-event terms [B]; calling
    the loss does the rest.

    The base ``__call__`` wraps ``forward`` (as PyG's ``Aggregation.__call__`` wraps its subclasses'
    ``forward``): it checks the shapes (a head output this loss ``accepts``, one unit-vector target
    and at most one weight per event), computes in float32 (float64 stays float64) outside autocast
    (the log's NaNs in EXP_03/04/21 came from fp16 losses), checks that ``forward`` gave one term
    per event, and averages them, weighted when a weight is given. ``accepts`` names the head outputs
    it can take.
    """

    kind = "loss"
    accepts: ClassVar[frozenset[str]] = frozenset({"vector"})

    def __init__(self, config: Config):
        nn.Module.__init__(self)
        self.config = config

    def bind(self, head: "Head") -> None:
        """Called by the composer with the pipeline's head (a bins loss reads its bin layout); default: nothing."""

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss from ``pred`` (the head output it takes: [B, 3] vector, [B, 2] angles, bin
        logits), ``target`` unit vectors [B, 3] and an optional ``weight`` [B]."""
        self._check_inputs(pred, target, weight)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
            per_event = super().__call__(pred.to(dtype), target.to(dtype))
            if per_event.shape != pred.shape[:1]:
                raise ValueError(f"loss {self.name}: forward gave shape {tuple(per_event.shape)}, "
                                 f"expected one term per event ({pred.shape[0]},)")
            if weight is None:
                return per_event.mean()
            weight = weight.to(dtype)
            return (per_event * weight).sum() / weight.sum().clamp_min(torch.finfo(dtype).tiny)

    def _check_inputs(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> None:
        widths = {OUTPUT_WIDTHS.get(output) for output in self.accepts}  # None: any width (bins)
        if pred.dim() != 2 or (None not in widths and pred.shape[-1] not in widths):
            accepted = ", ".join(f"{o} [B, {OUTPUT_WIDTHS[o]}]" if o in OUTPUT_WIDTHS else f"{o} [B, *]"
                                 for o in sorted(self.accepts))
            raise ValueError(f"loss {self.name}: pred of shape {tuple(pred.shape)} is not a head output it "
                             f"accepts ({accepted})")
        if target.shape != (pred.shape[0], 3):
            raise ValueError(f"loss {self.name}: target of shape {tuple(target.shape)}, expected "
                             f"({pred.shape[0]}, 3) unit vectors")
        if weight is not None and weight.shape != pred.shape[:1]:
            raise ValueError(f"loss {self.name}: weight of shape {tuple(weight.shape)}, expected ({pred.shape[0]},)")

    @abstractmethod
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-event loss [B] of ``pred`` against ``target`` (both already float32, or float64)."""


class Task(ModuleComponent):
    """A target beside the direction (energy, event type, vertex, any truth column): its own head on the
    pooled event vector [B, P] and its own loss, trained on the pipeline's shared backbone and poolers.

    A subclass writes :meth:`columns` (the truth columns it needs, named as in
    :mod:`icezoo.data.truth`), ``forward(pooled) -> [B, K]``, :meth:`loss_terms` (one term per
    event) and :meth:`outputs` (named per-event columns, what ``icezoo predict`` writes). Calling
    :meth:`loss` does the rest, as ``Loss.__call__`` does for the direction: float32 (float64 stays)
    outside autocast, events whose truth is not finite (or that :meth:`valid` refuses) left out, the
    (weighted) mean over the others, and 0 (still a graph) when none is left. ``family`` says which
    standard figures an evaluation prints; ``task_name`` is the pipeline's name for it (unique).
    """

    kind = "task"
    #: "energy" | "classification" | "vertex" | "regression": which standard figures evaluate prints
    family: ClassVar[str] = "regression"

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        #: the pipeline's name for this task (the composer sets it; default :meth:`default_task_name`)
        self.task_name = type(self).default_task_name(config)

    @classmethod
    def default_task_name(cls, config: Config) -> str:
        """The task's name in a pipeline when its table entry does not say (default: the component's name)."""
        return cls.name

    @classmethod
    @abstractmethod
    def columns(cls, config: Config) -> tuple[str, ...]:
        """The truth columns this task needs (icezoo.data.truth names: ``energy``, ``track``, ...)."""

    @abstractmethod
    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled event vectors [B, P] -> the raw output [B, K]."""

    @abstractmethod
    def loss_terms(self, out: torch.Tensor, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-event loss [B] of ``out`` against ``truth`` (every column [B], already float32 or float64)."""

    @abstractmethod
    def outputs(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named per-event columns [B] (e.g. energy in log10 GeV and energy_sigma; p_track)."""

    def example_truth(self, signal: torch.Tensor) -> dict[str, torch.Tensor]:
        """Truth columns that are a function of ``signal`` [B] (values in [-1, 1]), for the conformance
        kit's check that the task learns (default: every column is the signal itself)."""
        return {column: signal for column in type(self).columns(self.config)}

    def output_names(self) -> tuple[str, ...]:
        """The names :meth:`outputs` gives, known before any forward (predict's header)."""
        with torch.no_grad():
            return tuple(self.outputs(torch.zeros(1, self.out_dim)))

    def valid(self, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        """Events the loss uses [B] bool: default, those whose every truth column is finite."""
        ok = None
        for column in type(self).columns(self.config):
            finite = torch.isfinite(truth[column])
            ok = finite if ok is None else ok & finite
        return ok

    def loss(self, out: torch.Tensor, truth: dict[str, torch.Tensor], weight: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss: the (weighted) mean of :meth:`loss_terms` over the events :meth:`valid` keeps."""
        missing = [c for c in type(self).columns(self.config) if c not in truth]
        if missing:
            raise ValueError(f"task {self.task_name}: the batch has no truth column {missing[0]}")
        if out.dim() != 2 or out.shape[-1] != self.out_dim:
            raise ValueError(f"task {self.task_name}: out of shape {tuple(out.shape)}, expected (B, {self.out_dim})")
        with torch.autocast(device_type=out.device.type, enabled=False):
            dtype = torch.float64 if out.dtype == torch.float64 else torch.float32
            cols = {c: truth[c].to(device=out.device, dtype=dtype) for c in type(self).columns(self.config)}
            ok = self.valid(cols)
            w = ok.to(dtype) if weight is None else torch.where(ok, weight.to(dtype), 0.0)
            # left-out events get a harmless truth (their term is multiplied by 0 and must not be NaN)
            safe = {c: torch.where(ok, v, torch.zeros_like(v)) for c, v in cols.items()}
            terms = self.loss_terms(out.to(dtype), safe)
            if terms.shape != out.shape[:1]:
                raise ValueError(f"task {self.task_name}: loss_terms gave shape {tuple(terms.shape)}, expected "
                                 f"one term per event ({out.shape[0]},)")
            return (torch.where(ok, terms, 0.0) * w).sum() / w.sum().clamp_min(1.0 if weight is None else
                                                                              torch.finfo(dtype).tiny)


class Pretrainer(ModuleComponent):
    """A self-supervised objective on a pipeline's per-pulse states (``icezoo pretrain``), discarded after.

    Not a pipeline stage: the pretraining model (:class:`icezoo.core.pretraining.PretrainModel`) puts
    it on a pipeline's embedder and backbone. :meth:`choose` picks the pulses to mask; the model hides
    everything about them that the objective predicts from every input the embedder and backbone
    read, once for every objective; :meth:`forward` predicts from the backbone's states at the masked
    slots [M, D] (``in_dim`` = the backbone's out_dim), :meth:`loss` scores them against the batch as
    it was. PolarBERT (NeurIPS 2024 ML4PS workshop) and arXiv:2510.01733 (masked point
    transformers) pretrain IceCube encoders this way.
    """

    kind = "pretrain"

    class Config(Config):
        mask_ratio: float = Field(0.25, gt=0, lt=1, description="fraction of each event's pulses masked "
                                  "(at least one; one pulse always stays visible)")
        keep_time: bool = Field(True, description="masked pulses keep their time (xyzt t; the mask token gets "
                                "a time term): predict where and how much light, given when")

    #: the id a masked pulse's sensor_id becomes (the detector's padding id: no real sensor)
    neutral_sensor: int = PAD_SENSOR

    def choose(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """Masked slots [B, L] bool: round(mask_ratio * n) random real pulses of each event with n pulses
        (at least 1, at most n - 1: an event keeps a visible pulse; a one-pulse event masks none)."""
        mask = batch.mask
        n = mask.sum(1)
        k = torch.minimum((n.double() * self.config.mask_ratio).round().long().clamp_min(1), (n - 1).clamp_min(0))
        score = torch.rand(mask.shape, generator=generator, device=mask.device).masked_fill(~mask, 2.0)
        rank = score.argsort(dim=1).argsort(dim=1)
        return (rank < k[:, None]) & mask

    @classmethod
    def fill(cls, params: dict[str, Any], feature_names: tuple[str, ...]) -> dict[str, Any]:
        """The params with what the pipeline decides filled in (e.g. which pulse feature column holds the
        charge); a ValueError says what is missing. Default: unchanged."""
        return params

    @abstractmethod
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Predictions [M, K] from the backbone's states [M, D] at the M masked slots (in the order of
        ``masked.nonzero()``; only those: a 5160-way sensor head on every slot would cost B x L x 5160)."""

    @abstractmethod
    def loss(self, pred: torch.Tensor, batch: Batch, masked: torch.Tensor) -> dict[str, torch.Tensor]:
        """The terms of ``pred`` [M, K] against the ``masked`` slots of ``batch`` (unhidden: the targets are
        ``batch.xyzt[masked]`` and so on, in the same order), fp32; key ``loss``: the total."""


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline: its kind (the key in a pipeline table), the base class its components
    subclass, whether the table holds a list of them, and the component(s) used when a table omits it."""

    kind: str
    base: type[Component]
    many: bool
    default: tuple[str, ...]
    #: what ``Component.build(config, in_dim)`` gets as in_dim in this stage (for ``icezoo list`` and the docs)
    in_dim: str
    #: the table may also hold a list of components applied one after another, each fed the previous
    #: one's output (backbone lists: EXP_40, EXP_100, hb_egnn)
    chain: bool = False
    #: the key of a pipeline table that names this stage's components (default: the kind)
    table_key: str = ""

    @property
    def key(self) -> str:
        return self.table_key or self.kind


#: The stages, in data-path order: the one place that lists them.
STAGES: tuple[Stage, ...] = (
    Stage("selection", Selection, False, ("time_order",), "unused (works on pulse chunks)"),
    Stage("features", FeatureExtractor, True, ("kaggle_norm",), "unused (works on pulse chunks)"),
    Stage("embedder", Embedder, False, ("linear",), "the width F of the pulse-level features"),
    Stage("backbone", Backbone, False, ("transformer",), "the embedder's out_dim (in a list: the previous stage's)",
          chain=True),
    Stage("pooler", Pooler, True, ("mean", "max"), "the backbone's out_dim"),
    Stage("head", Head, False, ("direction_kappa",), "the poolers' out_dims summed, plus event-level features"),
    Stage("loss", Loss, True, ("vmf3d",), "unused (takes the head's output)"),
    # targets beside the direction; none by default (every direction-only pipeline)
    Stage("task", Task, True, (), "the head's in_dim (the pooled event vector)", table_key="tasks"),
)

#: Every kind, in data-path order, with its base class (read from :data:`STAGES`), then the kinds that
#: are not pipeline stages (the pretraining objective of ``icezoo pretrain``).
KINDS: dict[str, type[Component]] = {**{stage.kind: stage.base for stage in STAGES}, "pretrain": Pretrainer}
#: The stage of each kind.
STAGE_OF: dict[str, Stage] = {stage.kind: stage for stage in STAGES}

__all__ = [
    "PROPERTIES", "DEFAULT_MAX_PULSES", "Config", "Component", "ModuleComponent", "Selection", "FeatureExtractor",
    "Embedder", "Backbone", "Pooler", "Head", "Loss", "Task", "Pretrainer", "Stage", "STAGES", "STAGE_OF", "KINDS", "ABC",
]
