"""A pipeline as a model that leaves Python: plain-tensor inputs, ONNX and TorchScript files, parity.

The exported model takes the padded tensors of a :class:`icezoo.core.batch.Batch` (what the loader
builds from the selection and the features, which stay outside the model) and returns the
direction, kappa and every task output. Only the batch fields the model reads are inputs:

==============  ==========  =======  ============================================================
input           shape       dtype    meaning (as in ``icezoo.core.batch.Batch``)
==============  ==========  =======  ============================================================
features        [B, L, F]   float32  per-pulse features, in the manifest's column order
mask            [B, L]      bool     True for a real pulse, False for padding
xyzt            [B, L, 4]   float32  sensor x, y, z (m) and time (ns) from the first selected pulse
sensor_id       [B, L]      int64    sensor index; the detector's padding id in padded slots
event_features  [B, E]      float32  event-level features; an input only when the pipeline has some
==============  ==========  =======  ============================================================

``n_pulses`` and ``event_id`` are not inputs: no model component reads them. B (batch) and L
(pulses) are dynamic in both formats.

Why these exporters (torch 2.13; docs/export.md has the longer story): ONNX through
``torch.export`` (non-strict) and ``torch.onnx.export(ExportedProgram)``, the dynamo-based exporter,
because torch.export tracks the batch and pulse axes symbolically and fails loudly when the code
fixes one, where the legacy TorchScript-based ONNX exporter (still present, deprecated) records
Python-int shapes as constants without a word. ``torch.onnx.export(module, dynamo=True)`` itself
falls back to static shapes silently when the dynamic export fails, so icezoo runs torch.export
first and checks the ONNX file's axes afterwards. TorchScript through ``torch.jit.trace``
(``torch.jit.script`` cannot compile x-transformers or the Batch dataclass); a trace records one
path through the code, so parity at other batch sizes and lengths is checked, not assumed.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from icezoo.core.batch import Batch
from icezoo.core.compose import Pipeline
from icezoo.core.errors import IcezooError
from icezoo.core.synthetic import synthetic_batch

#: the exported model's possible inputs, in call order: (name, dtype, axes); "F"/"E" are fixed widths
INPUTS = (
    ("features", "float32", ("batch", "pulses", "F")),
    ("mask", "bool", ("batch", "pulses")),
    ("xyzt", "float32", ("batch", "pulses", 4)),
    ("sensor_id", "int64", ("batch", "pulses")),
    ("event_features", "float32", ("batch", "E")),
)
#: the opset of the ONNX files icezoo writes
OPSET = 18
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}


def output_names(pipeline: Pipeline) -> list[str]:
    """The exported model's outputs, in order: direction, kappa (when the head has one), task outputs."""
    names = ["direction"]
    if _has_kappa(pipeline):
        names.append("kappa")
    return names + list(_task_output_names(pipeline))


def input_names(pipeline: Pipeline) -> list[str]:
    """The exported model's inputs, in order (``event_features`` only with event-level features)."""
    return [name for name, _, _ in INPUTS if name != "event_features" or pipeline.event_dim]


def _has_kappa(pipeline: Pipeline) -> bool:
    probe = torch.ones(1, _head_width(pipeline))
    with torch.no_grad():
        return pipeline.kappa(probe) is not None


def _head_width(pipeline: Pipeline) -> int:
    return int(getattr(pipeline.head, "out_dim", 3))


def _tasks(pipeline: Pipeline):
    return getattr(pipeline, "tasks", None) or {}


def _task_output_names(pipeline: Pipeline) -> tuple[str, ...]:
    """The task output columns, in the order :meth:`Pipeline.task_outputs` gives them."""
    return tuple(task_columns(pipeline))


def task_columns(pipeline: Pipeline) -> dict[str, str]:
    """{output column: the task that gives it}, from one tiny forward pass (names do not depend on data)."""
    tasks = _tasks(pipeline)
    if not tasks:
        return {}
    probe = synthetic_batch(pipeline.feature_dim, [2, 2], event_dim=pipeline.event_dim)
    was_training = pipeline.training
    pipeline.eval()
    with torch.no_grad():
        _, outs = pipeline.forward_tasks(probe)
    pipeline.train(was_training)
    return {column: name for name, task in tasks.items() for column in task.outputs(outs[name])}


class ExportModel(nn.Module):
    """A Pipeline behind plain tensors: ``(features, mask, xyzt, sensor_id[, event_features])`` ->
    ``(direction [B, 3] unit vectors, kappa [B], task outputs [B] ...)`` as :func:`output_names` lists."""

    def __init__(self, pipeline: Pipeline):
        super().__init__()
        self.pipeline = pipeline
        self.event_dim = pipeline.event_dim
        self.has_kappa = _has_kappa(pipeline)
        self.with_tasks = bool(_tasks(pipeline))

    def forward(self, features: torch.Tensor, mask: torch.Tensor, xyzt: torch.Tensor, sensor_id: torch.Tensor,
                event_features: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        b = features.shape[0]
        if event_features is None:
            event_features = features.new_zeros(b, 0)
        batch = Batch(features=features, mask=mask, xyzt=xyzt, sensor_id=sensor_id, event_features=event_features,
                      n_pulses=mask.sum(dim=1), event_id=mask.sum(dim=1))  # neither read by any component
        p = self.pipeline
        if self.with_tasks:
            pred, outs = p.forward_tasks(batch)
            extra = tuple(p.task_outputs(outs).values())
        else:
            pred, extra = p(batch), ()
        out = (p.direction(pred),)
        if self.has_kappa:
            out += (p.kappa(pred),)
        return out + extra


def example_inputs(pipeline: Pipeline, batch: Batch) -> tuple[torch.Tensor, ...]:
    """The model's inputs taken from a Batch, in :func:`input_names` order."""
    return tuple(getattr(batch, name).contiguous() for name in input_names(pipeline))


class _EinxShim(SimpleNamespace):
    """einx for x-transformers during an export: ``where('b n, b n d, -> b n d')`` as ``torch.where``.

    einx reads every shape as a Python int (``int(x)`` over ``tensor.shape``), which fixes the batch
    and pulse axes at the example's sizes; the masking call is the one einx use on the paths icezoo's
    backbones take. Every other einx function and pattern goes to einx itself."""

    def __init__(self, einx):
        super().__init__(_einx=einx)

    def where(self, pattern, *args, **kwargs):
        if pattern.replace(" ", "") == "bn,bnd,->bnd" and not kwargs:
            mask, x, fill = args
            return torch.where(mask[..., None], x, fill)
        return self._einx.where(pattern, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.__dict__["_einx"], name)


@contextlib.contextmanager
def exportable() -> Iterator[None]:
    """Make the libraries the backbones use traceable with symbolic shapes, for the export only."""
    try:
        import x_transformers.x_transformers as xt
    except ImportError:  # pragma: no cover - a dependency; nothing to patch without it
        yield
        return
    einx = xt.einx
    xt.einx = _EinxShim(einx)
    try:
        yield
    finally:
        xt.einx = einx


def _dynamic_shapes(names: list[str]) -> dict[str, dict[int, object]]:
    batch = torch.export.Dim("batch", min=1)
    pulses = torch.export.Dim("pulses", min=1)
    shapes = {name: {0: batch, 1: pulses} for name in names}
    if "event_features" in shapes:
        shapes["event_features"] = {0: batch}
    return shapes


def check_exportable(pipeline: Pipeline) -> None:
    """Refuse, in one line, a pipeline whose model reads more than the plain tensors above."""
    sel = pipeline.selection
    if "sensor_tokens" in type(sel).declared_properties(sel.config):
        raise IcezooError(f"{pipeline.config.name}: selection '{sel.name}' makes sensor tokens whose packed pulses "
                          f"(Batch.pulses) are not an input of an exported model: not exportable yet")
    if reason := export_refusal(pipeline):
        raise IcezooError(f"{pipeline.config.name}: cannot be exported: {reason}")


def _check_example(batch: Batch) -> None:
    b, width = batch.mask.shape
    if b < 2 or width < 2:
        raise ValueError(f"the example batch must have at least 2 events and 2 pulse slots (got {b} x {width}): "
                         "torch.export fixes sizes 0 and 1")


def _exported_program(pipeline: Pipeline, example: Batch):
    """``torch.export`` of :class:`ExportModel` with dynamic batch and pulse axes; one line when
    the model's code fixes an axis or uses an operation torch.export cannot trace."""
    check_exportable(pipeline)
    _check_example(example)
    model = ExportModel(pipeline).eval()
    names = input_names(pipeline)
    args = example_inputs(pipeline, example)
    with exportable(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.export.export(model, args, dynamic_shapes=_dynamic_shapes(names), strict=False)
        except Exception as exc:  # torch.export raises many types; the reason's first line is what helps
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            where = _failing_stage(pipeline, exc)
            raise IcezooError(f"{pipeline.config.name}: torch.export cannot export this model with dynamic "
                              f"batch and pulse axes{where}: {first}") from None


def export_onnx(pipeline: Pipeline, path: str | Path, example: Batch, opset: int = OPSET) -> dict:
    """Write ``pipeline`` as an ONNX file (inputs :func:`input_names`, outputs :func:`output_names`,
    axes 0 and 1 dynamic); returns ``{"inputs", "outputs", "opset"}``. ``example`` is any batch
    with at least 2 events and 2 pulse slots (shapes only matter; its values are not stored)."""
    program = _exported_program(pipeline, example)
    names, outs = input_names(pipeline), output_names(pipeline)
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed": icezoo uses none of its ops
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, f=None, input_names=names, output_names=outs,
                                             opset_version=opset, dynamo=True, verbose=False, optimize=True)
    finally:
        registration.setLevel(level)
    onnx_program.save(str(path), external_data=False)
    _name_onnx_axes(path, names)
    return {"inputs": names, "outputs": outs, "opset": opset}


def _name_onnx_axes(path: str | Path, names: list[str]) -> None:
    """Check that the written file's batch and pulse axes are symbolic (never the example's sizes)
    and name them ``batch`` and ``pulses`` everywhere in the graph (torch.export calls them s0, s1...)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    rename: dict[str, str] = {}
    for inp in graph.input:
        if inp.name not in names:
            continue
        dims = inp.type.tensor_type.shape.dim
        axes = ("batch",) if inp.name == "event_features" else ("batch", "pulses")
        for axis, label in enumerate(axes):
            if not dims[axis].dim_param:
                raise IcezooError(f"{path}: input {inp.name} has a fixed size on axis {axis} after export "
                                  f"(the model's code fixed it): not a usable model")
            rename[dims[axis].dim_param] = label
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]
    onnx.save(model, str(path))


def export_torchscript(pipeline: Pipeline, path: str | Path, example: Batch) -> dict:
    """Write ``pipeline`` as a TorchScript file (``torch.jit.trace`` of :class:`ExportModel`);
    returns ``{"inputs", "outputs"}``. Check it with :func:`check_parity` (a trace is one path)."""
    check_exportable(pipeline)
    _check_example(example)
    model = ExportModel(pipeline).eval()
    args = example_inputs(pipeline, example)
    with exportable(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, args, check_trace=False, strict=False)
        torch.jit.save(traced, str(path))
    return {"inputs": input_names(pipeline), "outputs": output_names(pipeline)}


def exported_format(path: str | Path) -> str:
    """``onnx`` or ``torchscript`` from a model file's name."""
    suffix = Path(path).suffix
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt", ".ts"):
        return "torchscript"
    raise IcezooError(f"{path}: not an exported model file (.onnx or .pt)")


class ExportedRunner:
    """Run an exported model file on numpy inputs: onnxruntime for ONNX, ``torch.jit.load`` for TorchScript."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.format = exported_format(path)
        if self.format == "onnx":
            ort = import_onnxruntime()
            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
            try:
                self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own types for a file it cannot read
                raise IcezooError(f"{path}: onnxruntime cannot load it ({_first(exc)})") from None
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.outputs = [o.name for o in self.session.get_outputs()]
        else:
            try:
                self.module = torch.jit.load(str(path), map_location="cpu").eval()
            except Exception as exc:  # a damaged archive: RuntimeError, ValueError, zip errors
                raise IcezooError(f"{path}: torch.jit.load cannot load it ({_first(exc)})") from None

    def __call__(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs, in the model's order, for inputs by name (extra names are ignored)."""
        if self.format == "onnx":
            return self.session.run(None, {name: inputs[name] for name in self.inputs})
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in INPUT_ORDER if n in inputs]
            return [t.numpy() for t in self.module(*args)]


INPUT_ORDER = tuple(name for name, _, _ in INPUTS)


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def import_onnxruntime():
    """onnxruntime, or one line naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise IcezooError("onnxruntime is not installed: pip install 'icezoo[onnx]'") from None
    return onnxruntime


def batch_inputs(batch: Batch, names: Iterable[str] = INPUT_ORDER) -> dict[str, np.ndarray]:
    """A Batch's model inputs as numpy arrays by name."""
    return {name: getattr(batch, name).contiguous().cpu().numpy() for name in names
            if name != "event_features" or batch.event_features.shape[1]}


def check_parity(pipeline: Pipeline, path: str | Path, batches: Iterable[Batch], relative: bool = False) -> float:
    """The largest absolute difference between the torch pipeline's outputs and the exported file's
    (onnxruntime or torch.jit.load) over ``batches``: every output, in eval mode, in float32.
    ``relative``: each difference over max(1, |torch output|) (a vertex in metres has float32's
    rounding of a few hundred metres, ~3e-5, in its absolute difference)."""
    runner = ExportedRunner(path)
    model = ExportModel(pipeline).eval()
    worst = 0.0
    for batch in batches:
        inputs = batch_inputs(batch, input_names(pipeline))
        with torch.inference_mode():
            want = model(*example_inputs(pipeline, batch))
        got = runner(inputs)
        if len(got) != len(want):
            raise IcezooError(f"{path}: {len(got)} outputs, the pipeline gives {len(want)}")
        for g, w in zip(got, want):
            w = w.double().numpy()
            diff = np.abs(np.asarray(g, np.float64) - w)
            if relative:
                diff = diff / np.maximum(1.0, np.abs(w))
            worst = max(worst, float(diff.max(initial=0.0)))
    return worst


def _stages(pipeline: Pipeline) -> Iterator[tuple[str, nn.Module]]:
    """(stage, component) of every module the exported model runs (a backbone list stage by stage)."""
    yield "embedder", pipeline.embedder
    stages = getattr(pipeline.backbone, "stages", [pipeline.backbone])
    for stage in stages:
        yield "backbone", stage
    for pooler in pipeline.poolers:
        yield "pooler", pooler
    yield "head", pipeline.head
    for task in _tasks(pipeline).values():
        yield "task", task


def export_refusal(pipeline: Pipeline) -> str | None:
    """Why ``pipeline`` cannot be exported, one line naming the component (``Component.export_refusal``),
    or None. Checked before any export, so a refused model writes nothing."""
    for stage, module in _stages(pipeline):
        refusal = getattr(type(module), "export_refusal", None)
        reason = refusal(module.config) if refusal is not None and hasattr(module, "config") else None
        if reason:
            return f"{stage} {getattr(module, 'name', type(module).__name__)}: {reason}"
    return None


def _failing_stage(pipeline: Pipeline, exc: BaseException) -> str:
    """`` (in backbone gru)``: the innermost pipeline component on the failed trace's stack (torch.export
    runs the model's Python code, so its frames are there), or "" when none is."""
    stages = {id(module): f"{stage} {getattr(module, 'name', type(module).__name__)}"
              for stage, module in _stages(pipeline)}
    found = ""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            name = stages.get(id(frame.f_locals.get("self")))
            found = name or found
        exc = exc.__cause__ or exc.__context__
    return f" (in {found})" if found else ""
