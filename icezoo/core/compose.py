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
from icezoo.core.components import STAGE_OF, Component, Config, FeatureExtractor, Head, Loss, Selection
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
    """features -> embedder -> backbone -> poolers (+ event features) -> head; losses on the head output."""

    def __init__(self, config: PipelineConfig, selection: Selection, features: list[FeatureExtractor],
                 embedder: nn.Module, backbone: nn.Module, poolers: list[nn.Module], head: Head,
                 losses: list[Loss], weights: list[float], provenance: dict[str, str]):
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

    def forward(self, batch: Batch, trace: list[StageInfo] | None = None) -> torch.Tensor:
        pred = self.head(self.encode(batch, trace))
        self._trace(trace, "head", self.head, pred)
        return pred

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
            path = f"{root}.{kind}" if len(refs) == 1 else f"{root}.{kind}.{i}"
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
    pipeline = Pipeline(config, selection, features, embedder, backbone, poolers, head, losses, weights, provenance)
    pipeline.frozen, pipeline.stage_inits = frozen, stage_inits
    return pipeline


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Pipeline", "BackboneChain", "compose", "StageInfo", "count_parameters", "Component", "declared"]
