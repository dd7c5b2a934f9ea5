"""The composer: a validated PipelineConfig + the registry -> a runnable :class:`Pipeline`.

It validates each component's params against its Config (errors name the path), chains the
dims (features -> embedder -> backbone(s) -> poolers (+ event features) -> head), and checks what
components require against what the rest provides (a ``cls`` pooler needs a backbone that adds a
CLS token; a loss must accept the head's output).

A backbone table may be a list of stages applied one after another (:class:`BackboneChain`: each
built for the previous one's width; only the last may add a CLS token). Any model stage may set
``freeze = true`` (weights fixed, always in eval mode) and ``init_from = "PIPELINE"`` (the engine
loads that component's weights from the pipeline's newest run: :attr:`Pipeline.stage_inits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from icezoo.core.batch import Batch
from icezoo.core.components import STAGE_OF, Component, Config, FeatureExtractor, Head, Loss, Selection, Task
from icezoo.core.errors import IcezooError
from icezoo.core.pipelines import PipelineConfig, validate_params
from icezoo.core.registry import ComponentSpec, Registry
from icezoo.core.sizes import size_guard

#: what the batch itself always provides to components
BATCH_PROVIDES = frozenset({"xyzt", "sensor_id"})
#: what a selection's declared property provides to the model stages (sensor tokens and packed pulses)
SELECTION_PROVIDES = frozenset({"sensor_tokens"})
#: the stages whose components hold weights (may be frozen or initialised from another run)
MODEL_STAGES = ("embedder", "backbone", "pooler", "head")
#: column names a task output may not take (the submission's own columns)
RESERVED_OUTPUTS = frozenset({"event_id", "azimuth", "zenith"})


@dataclass
class StageInfo:
    """One row of ``icezoo compose``: a stage, its component, output shape and parameter count."""

    stage: str
    component: str
    shape: tuple[int, ...]
    params: int


def _build(spec: ComponentSpec, config: Config, path: str, in_dim: int):
    with size_guard(path):  # sizes beyond the machine: one line (core/sizes.py)
        try:
            return spec.cls.build(config, in_dim)
        except (ValueError, AssertionError, TypeError) as exc:
            raise IcezooError(f"{path}: {spec.name}: {exc}") from None


def _trace(trace, stage, module, out):
    if trace is not None:
        trace.append(StageInfo(stage, module.name, tuple(out.shape), sum(p.numel() for p in module.parameters())))


def declared(module: nn.Module) -> frozenset[str]:
    """The properties a built component (or a backbone list) declares for its config."""
    if isinstance(module, BackboneChain):
        return module.properties
    return type(module).declared_properties(module.config)


class BackboneChain(nn.Module):
    """Backbones applied one after another ([{name = "egnn"}, {name = "transformer"}]: hb_egnn, EXP_40, EXP_100).

    Each stage was built for the previous one's ``out_dim``. A stage with ``concat`` also hands its
    per-pulse output to the end, where it is concatenated to the last stage's output (EXP_40: the
    GNN's features reach the poolers beside the transformer's). The list declares what every stage
    declares (``permutation_invariant``, the invariances), plus the last stage's ``adds_cls_token``.
    """

    kind = "backbone"

    def __init__(self, stages: list[nn.Module], concat: list[bool]):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.concat = list(concat)
        self.name = " -> ".join(stage.name for stage in stages)
        props = [declared(stage) for stage in stages]
        self.properties = frozenset.intersection(*props) - {"adds_cls_token"} | (props[-1] & {"adds_cls_token"})
        self.out_dim = stages[-1].out_dim + sum(s.out_dim for s, c in zip(stages, concat) if c)

    def forward(self, h: torch.Tensor, batch: Batch, trace: list[StageInfo] | None = None) -> torch.Tensor:
        kept = []
        for stage, keep in zip(self.stages, self.concat):
            h = stage(h, batch)
            _trace(trace, "backbone", stage, h)
            if keep:
                kept.append(h)
        return torch.cat([h, *kept], dim=-1) if kept else h


class Pipeline(nn.Module):
    """features -> embedder -> backbone -> poolers (+ event features) -> head; losses on the head output;
    tasks (energy, event type, ...: ``tasks``, empty in a direction-only pipeline) on the same pooled vector."""

    def __init__(self, config: PipelineConfig, selection: Selection, features: list[FeatureExtractor],
                 embedder: nn.Module, backbone: nn.Module, poolers: list[nn.Module], head: Head,
                 losses: list[Loss], weights: list[float], provenance: dict[str, str],
                 tasks: list[Task] | None = None, task_weights: list[float] | None = None):
        super().__init__()
        self.config = config
        self.selection = selection
        self.features = features
        self.embedder = embedder
        self.backbone = backbone
        self.poolers = nn.ModuleList(poolers)
        self.head = head
        self.losses = nn.ModuleList(losses)
        self.loss_weights = list(weights)
        #: the head output each loss takes (its ``view``): the head's main output where the loss accepts it
        self.loss_views = [head.output if head.output in type(loss).accepts
                           else sorted(type(loss).accepts & head.outputs)[0] for loss in losses]
        for loss in losses:
            loss.bind(head)  # e.g. bins_ce reads the head's bin layout
        self.provenance = provenance
        self.cls_token = "adds_cls_token" in declared(backbone)
        #: modules kept fixed (``freeze = true``): no gradient, and in eval mode even when training
        self.frozen: list[nn.Module] = []
        #: (path, module, source pipeline, kind, component name) of every ``init_from`` stage, for the engine
        self.stage_inits: list[tuple[str, nn.Module, str, str, str]] = []
        self.feature_dim = sum(f.out_dim for f in features if not f.event_level)
        self.event_dim = sum(f.out_dim for f in features if f.event_level)
        #: task name -> Task (registered after every other module: a direction-only pipeline's
        #: parameters, their order and its checkpoint keys are what they were before tasks existed)
        self.tasks = nn.ModuleDict({t.task_name: t for t in tasks or ()})
        self.task_weights = dict(zip(self.tasks, task_weights or [1.0] * len(self.tasks)))

    def encode(self, batch: Batch, trace: list[StageInfo] | None = None) -> torch.Tensor:
        """Pooled event vectors [B, P] (event features appended)."""
        h = self.embedder(batch.features, batch)
        self._trace(trace, "embedder", self.embedder, h)
        if isinstance(self.backbone, BackboneChain):
            h = self.backbone(h, batch, trace)
        else:
            h = self.backbone(h, batch)
            self._trace(trace, "backbone", self.backbone, h)
        cls = None
        if self.cls_token:
            cls, h = h[:, 0], h[:, 1:]
        pooled = []
        for pooler in self.poolers:
            pooled.append(pooler(h, batch.mask, cls))
            self._trace(trace, "pooler", pooler, pooled[-1])
        if self.event_dim:
            pooled.append(batch.event_features.to(pooled[0].dtype))
        return torch.cat(pooled, dim=-1)

    def forward(self, batch: Batch, trace: list[StageInfo] | None = None, tasks: bool = False):
        """The head's output [B, *]; with ``tasks``, ``(pred, {task name: out [B, K]})`` from one encoding
        (a keyword, so that a DistributedDataParallel wrapper passes it through)."""
        z = self.encode(batch, trace)
        pred = self.head(z)
        self._trace(trace, "head", self.head, pred)
        if not tasks:
            return pred
        outs = {}
        for name, task in self.tasks.items():
            outs[name] = task(z)
            self._trace(trace, "task", task, outs[name])
        return pred, outs

    def forward_tasks(self, batch: Batch, trace: list[StageInfo] | None = None):
        """``(pred, {task name: out})``: the direction and every task from one encoding."""
        return self(batch, trace, tasks=True)

    def task_loss(self, outs: dict[str, torch.Tensor], batch: Batch,
                  weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(sum of weight * task loss, {task name: its loss}); fp32 outside autocast, like :meth:`loss`."""
        if self.tasks and batch.truth is None:
            raise IcezooError("this batch has no truth columns for the tasks: cannot compute their losses")
        terms = {name: task.loss(outs[name], batch.truth, weight) for name, task in self.tasks.items()}
        total = sum(self.task_weights[name] * value for name, value in terms.items())
        return total, terms

    def task_outputs(self, outs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every task's named per-event columns [B], in task order (what ``icezoo predict`` writes)."""
        columns: dict[str, torch.Tensor] = {}
        for name, task in self.tasks.items():
            columns.update(task.outputs(outs[name]))
        return columns

    def truth_columns(self) -> tuple[str, ...]:
        """The truth columns the tasks need (empty without tasks: the loaders read no truth then)."""
        return tuple(dict.fromkeys(c for t in self.tasks.values() for c in type(t).columns(t.config)))

    def loss(self, pred: torch.Tensor, batch: Batch, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted sum of the loss terms, in fp32 outside autocast."""
        if batch.target is None:
            raise IcezooError("this batch has no truth (azimuth/zenith): cannot compute a loss")
        total = 0.0
        for w, loss, view in zip(self.loss_weights, self.losses, self.loss_views):
            total = total + w * loss(self.head.view(pred, view), batch.target, weight)
        return total

    def direction(self, pred: torch.Tensor) -> torch.Tensor:
        return self.head.direction(pred)

    def kappa(self, pred: torch.Tensor) -> torch.Tensor | None:
        return self.head.kappa(pred)

    def train(self, mode: bool = True) -> "Pipeline":
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    _trace = staticmethod(_trace)


def _reads_features(features: list) -> Callable:
    """compose's check of a backbone stage: the feature columns it reads by index exist."""
    columns = [c for f in features if not f.event_level for c in f.feature_names()]

    def check(spec: ComponentSpec, cfg, path: str) -> None:
        for param, col in spec.cls.feature_columns(cfg).items():
            if not 0 <= col < len(columns):
                raise IcezooError(f"{path}.{param}: column {col}, but the pulse features have {len(columns)} "
                                  f"columns (0..{len(columns) - 1}: {', '.join(columns)})")

    return check


def _accepts_head(head) -> Callable:
    """compose's check of a loss: it takes one of the head's outputs."""

    def check(spec: ComponentSpec, cfg, path: str) -> None:
        if not spec.cls.accepts & head.outputs:
            raise IcezooError(
                f"{path}: {spec.name} takes a head output of {' or '.join(sorted(spec.cls.accepts))}, "
                f"but head '{head.name}' gives {' and '.join(sorted(head.outputs))}"
            )

    return check


def compose(config: PipelineConfig, registry: Registry) -> Pipeline:
    """Build the pipeline; every error is one IcezooError line naming the path."""
    root = f"pipelines.{config.name}"
    provenance: dict[str, str] = {}
    provided = set(BATCH_PROVIDES)

    frozen: list[nn.Module] = []
    stage_inits: list[tuple[str, nn.Module, str, str, str]] = []

    def make(kind: str, in_dim: int = 0, check=None) -> list:
        """Every component of one stage, built with ``cls.build(config, in_dim)``, in table order
        (a backbone list: each stage built for the previous one's out_dim)."""
        refs = config.refs(kind)
        built = []
        for i, ref in enumerate(refs):
            key = STAGE_OF[kind].key
            path = f"{root}.{key}" if len(refs) == 1 else f"{root}.{key}.{i}"
            try:
                spec = registry.get(kind, ref.name)
            except IcezooError as exc:
                raise IcezooError(f"{path}: {exc}") from None
            provenance[f"{kind}.{spec.name}"] = f"{spec.package}=={spec.version}"
            cfg = validate_params(spec.cls, ref.params, path)
            missing = spec.cls.declared_requires(cfg) - provided
            if missing:
                need = ", ".join(sorted(missing))
                why = (" (a backbone that declares adds_cls_token, e.g. transformer with cls = true)"
                       if "cls_token" in missing else "")
                raise IcezooError(f"{path}: {spec.name} needs {need}{why}, which this pipeline does not provide")
            if check is not None:
                check(spec, cfg, path)
            if (ref.freeze or ref.init_from) and kind not in MODEL_STAGES:
                raise IcezooError(f"{path}: freeze and init_from are for stages with weights "
                                  f"({', '.join(MODEL_STAGES)}), not {kind}")
            last = i == len(refs) - 1
            if ref.concat and (kind != "backbone" or last):
                raise IcezooError(f"{path}: concat is for the stages of a backbone list before the last")
            props = spec.cls.declared_properties(cfg)
            if "adds_cls_token" in props and not last and STAGE_OF[kind].chain:
                raise IcezooError(f"{path}: {spec.name} adds a CLS token: only the last stage of a backbone list may")
            module = _build(spec, cfg, path, in_dim)
            built.append(module)
            if STAGE_OF[kind].chain:
                in_dim = module.out_dim
            if ref.freeze:
                module.requires_grad_(False)
                frozen.append(module)
            if ref.init_from:
                stage_inits.append((path, module, ref.init_from, kind, spec.name))
            if "adds_cls_token" in props:
                provided.add("cls_token")
            provided.update(props & SELECTION_PROVIDES)
        return built

    (selection,) = make("selection")
    features = make("features")
    feature_dim = sum(f.out_dim for f in features if not f.event_level)
    event_dim = sum(f.out_dim for f in features if f.event_level)
    if feature_dim == 0:
        raise IcezooError(f"{root}.features: no pulse-level feature extractor (only event-level ones)")
    (embedder,) = make("embedder", feature_dim)
    backbones = make("backbone", embedder.out_dim, check=_reads_features(features))
    concat = [ref.concat for ref in config.refs("backbone")]
    if any(concat) and "adds_cls_token" in declared(backbones[-1]):
        raise IcezooError(f"{root}.backbone: concat needs a last stage without a CLS token (the slots would not line up)")
    backbone = backbones[0] if len(backbones) == 1 else BackboneChain(backbones, concat)
    poolers = make("pooler", backbone.out_dim)
    (head,) = make("head", sum(p.out_dim for p in poolers) + event_dim)

    losses = make("loss", check=_accepts_head(head))
    weights = [ref.weight for ref in config.loss]
    tasks = make("task", head.in_dim)
    _name_tasks(tasks, root)
    pipeline = Pipeline(config, selection, features, embedder, backbone, poolers, head, losses, weights, provenance,
                        tasks, [ref.weight for ref in config.refs("task")])
    pipeline.frozen, pipeline.stage_inits = frozen, stage_inits
    return pipeline


def _name_tasks(tasks: list[Task], root: str) -> None:
    """Each task's name (its default) and output columns: unique in the pipeline, none a submission column."""
    names: dict[str, int] = {}
    columns: dict[str, str] = {}
    for i, task in enumerate(tasks):
        path = f"{root}.tasks" + (f".{i}" if len(tasks) > 1 else "")
        if task.task_name in names:
            raise IcezooError(f"{path}: a second task named '{task.task_name}' (tasks.{names[task.task_name]} "
                              f"is one): a pipeline trains each target once")
        names[task.task_name] = i
        for column in task.output_names():
            if column in RESERVED_OUTPUTS or column in columns:
                other = "the submission" if column in RESERVED_OUTPUTS else f"task '{columns[column]}'"
                raise IcezooError(f"{path}: {task.name} writes a column '{column}', which {other} writes already")
            columns[column] = task.task_name


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Pipeline", "BackboneChain", "compose", "StageInfo", "count_parameters", "Component", "declared"]
