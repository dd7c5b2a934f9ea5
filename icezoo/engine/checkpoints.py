"""Checkpoint -> model: the pipeline a checkpoint names, rebuilt and loaded (strictly, or by matching names).

The one module that turns checkpoints into models, for predict, evaluate, fine-tuning and resume.
What a training checkpoint holds beyond the weights is :class:`icezoo.engine.train.state.TrainState`'s business.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from icezoo.core.checkpoint import component_state, load_checkpoint, require_finite
from icezoo.core.pipelines import pipeline_from_table
from icezoo.core.errors import IcezooError
from icezoo.engine.runs import BEST, DEFAULT_RUNS_DIR, RUN_FILE, RunDir, newest_successful_run
from icezoo.zoo import build


def checkpoint_pipeline_table(config) -> dict[str, Any]:
    """The pipeline table a checkpoint stores (``PipelineConfig.to_table()`` plus its name)."""
    return {"name": config.name, **config.to_table()}


def config_from_checkpoint(ckpt: dict[str, Any], where: str):
    """Rebuild the PipelineConfig a checkpoint was trained with; one-line error when it cannot."""
    table = dict(ckpt["pipeline"])
    name = str(table.pop("name", "checkpoint"))
    try:
        return pipeline_from_table(name, table)
    except IcezooError as exc:
        raise IcezooError(f"{where}: incompatible checkpoint: {exc}") from None


def model_from_checkpoint(path: Path, map_location="cpu"):
    """(config, model, checkpoint) with the weights loaded strictly; IcezooError if anything differs.

    Component names resolve through the registry, aliases included, so a checkpoint saved under a
    component's former name (``graph_transformer``) loads into the renamed one (``mat``)."""
    ckpt = load_checkpoint(path, map_location=map_location)
    if "mask_token" in ckpt["state_dict"]:  # icezoo pretrain's: an encoder without a direction head
        raise IcezooError(f"{path}: a pretraining checkpoint (icezoo pretrain: embedder and backbone, no direction "
                          f"head); fine-tune it first: icezoo train --pipeline P --init-from RUN")
    config = config_from_checkpoint(ckpt, str(path))
    try:
        model = build(config)
    except IcezooError as exc:
        raise IcezooError(f"{path}: incompatible checkpoint (pipeline {config.name}): {exc}") from None
    load_strict(model, ckpt["state_dict"], str(path))
    return config, model, ckpt


def load_run_model(run: str, runs_dir: str | Path, which: str = "best"):
    """(run_dir, run info, config, model, checkpoint path) from a run's best (or last) checkpoint."""
    rd = RunDir.find(run, runs_dir)
    run_dir, info = rd.path, rd.info()
    path = rd.checkpoint(which)
    if not path.is_file():
        other = rd.checkpoint("last" if which == "best" else "best")
        if not other.is_file():
            raise IcezooError(f"{run_dir}: no checkpoint yet (the run has not finished an epoch)")
        if which == "best" and info.get("status") in ("failed", "done") and info.get("best_val") is None:
            raise IcezooError(f"{run_dir}: no epoch validated to a finite score (no {BEST}): the run diverged "
                              f"({info.get('status')}); retrain it (e.g. with a lower train.lr)")
        path = other
    config, model, ckpt = model_from_checkpoint(path)
    require_finite(path, ckpt["state_dict"])  # a diverged run would predict one constant direction
    return run_dir, info, config, model, path


def load_strict(model, state: dict, where: str) -> None:
    """Load every tensor; a missing, unexpected or reshaped one is one IcezooError naming an example."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad:
            k = bad[0]
            parts.append(f"{len(bad)} of another shape (e.g. {k}: {list(state[k].shape)} vs {list(own[k].shape)})")
        raise IcezooError(f"{where}: incompatible checkpoint: its tensors do not fit the pipeline: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def load_matching(model, state: dict) -> dict[str, Any]:
    """Load the tensors whose name and shape match; report by name what did not (fine-tuning)."""
    own = model.state_dict()
    loaded, shape_mismatch = [], []
    new_state = {}
    for k, v in state.items():
        if k in own:
            if tuple(own[k].shape) == tuple(v.shape):
                new_state[k] = v
                loaded.append(k)
            else:
                shape_mismatch.append({"name": k, "checkpoint": list(v.shape), "model": list(own[k].shape)})
    missing = [k for k in own if k not in state]
    unused = [k for k in state if k not in own]
    with torch.no_grad():
        model.load_state_dict(new_state, strict=False)
    return {"loaded": len(loaded), "total": len(own), "shape_mismatch": shape_mismatch,
            "missing_in_checkpoint": missing, "unused_from_checkpoint": unused}


def init_stages(model, runs_dir: Path, log) -> list[dict[str, Any]]:
    """Each ``init_from`` stage (EXP_100's frozen GNN): that component's weights from the run it names
    (:func:`init_run`: a pipeline's newest run, ``pretrain:PIPELINE``'s newest
    pretraining run, or a run), all of them and with matching shapes, or a one-line error."""
    reports = []
    for path, module, source, kind, name in model.stage_inits:
        try:
            src = init_run(source, runs_dir).checkpoint("best")
        except IcezooError as exc:
            raise IcezooError(f"{path}.init_from: {exc}") from None
        state = component_state(load_checkpoint(src), kind, name)
        if state is None:
            raise IcezooError(f"{path}.init_from: {src} has no {kind} '{name}' to take weights from")
        rep = load_matching(module, state)
        if rep["loaded"] != rep["total"] or rep["unused_from_checkpoint"]:
            first = (rep["shape_mismatch"] or rep["missing_in_checkpoint"] or rep["unused_from_checkpoint"])[0]
            raise IcezooError(f"{path}.init_from: {src}: its {name} does not match this one "
                              f"({rep['loaded']}/{rep['total']} tensors fit; first difference: {first})")
        log(f"{path}: {name} initialised from {src} ({rep['loaded']} tensors)")
        reports.append({"stage": path, "source": str(src), "loaded": rep["loaded"]})
    return reports


#: ``init_from = "pretrain:PIPELINE"``: the newest pretraining run of that pipeline
PRETRAIN_PREFIX = "pretrain:"


def init_run(spec: str, runs_dir: Path | None = None) -> RunDir:
    """The run an ``init_from`` names: ``pretrain:PIPELINE`` (that pipeline's newest finished ``icezoo
    pretrain`` run), a run (its directory, or its name in ``runs_dir``), or a pipeline (its newest
    finished training run)."""
    spec = str(spec)
    if spec.startswith(PRETRAIN_PREFIX):
        return newest_successful_run(spec[len(PRETRAIN_PREFIX):], runs_dir, pretraining=True)
    path, named = Path(spec), Path(runs_dir or DEFAULT_RUNS_DIR) / spec
    if (path / RUN_FILE).is_file() or (named / RUN_FILE).is_file():
        run = RunDir.find(spec, runs_dir)
        if not run.checkpoint("best").is_file():
            raise IcezooError(f"init_from = '{spec}': {run.path} has no {BEST} (the run has not validated an epoch)")
        return run
    return newest_successful_run(spec, runs_dir)


def init_report_text(source: str, rep: dict[str, Any]) -> str:
    """The fine-tuning report of :func:`load_matching`, one line per tensor not loaded."""
    lines = [f"init from {source}: loaded {rep['loaded']}/{rep['total']} tensors"]
    for m in rep["shape_mismatch"]:
        lines.append(f"  not loaded (shape): {m['name']} {m['checkpoint']} in checkpoint vs {m['model']} here")
    for k in rep["missing_in_checkpoint"]:
        lines.append(f"  not in checkpoint (kept fresh): {k}")
    for k in rep["unused_from_checkpoint"]:
        lines.append(f"  unused from checkpoint: {k}")
    return "\n".join(lines)


def init_source(spec: str, runs_dir: Path) -> Path:
    """A checkpoint file, a run directory or a run name -> the checkpoint to initialise from."""
    path = Path(spec)
    if path.is_file():
        return path
    run = RunDir.find(spec, runs_dir)
    for which in ("best", "last"):
        if run.checkpoint(which).is_file():
            return run.checkpoint(which)
    raise IcezooError(f"{run.path}: no checkpoint to initialise from")
