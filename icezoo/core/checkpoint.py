"""Checkpoints: names, params and provider versions plus tensors; never code.

A checkpoint is a dict of plain data (str, numbers, lists, dicts) and tensors, written with
``torch.save`` to a temporary name and renamed, read with ``torch.load(weights_only=True)``:
no class paths, pickled objects or eval-able strings, so loading one cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from icezoo.core.atomic import atomic_path
from icezoo.core.errors import IcezooError

FORMAT = "icezoo-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, pipeline: dict[str, Any], state_dict: dict[str, torch.Tensor],
                    provenance: dict[str, str] | None = None, **extra: Any) -> Path:
    """Write atomically. ``pipeline`` is ``PipelineConfig.to_table()`` plus its name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "pipeline": pipeline,
               "provenance": dict(provenance or {}), "state_dict": state_dict, **extra}
    with atomic_path(path) as tmp:  # a failed save (disk full, Ctrl-C) leaves no partial checkpoint
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint; any problem is one IcezooError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise IcezooError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, foreign pickle, code objects: all refused the same way
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise IcezooError(f"{path}: not a readable icezoo checkpoint ({first[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise IcezooError(f"{path}: not an icezoo checkpoint (no '{FORMAT}' marker)")
    if payload.get("version") != VERSION:
        raise IcezooError(f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION})")
    for key in ("pipeline", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise IcezooError(f"{path}: checkpoint field '{key}' is missing or malformed")
    return payload


def component_state(payload: dict[str, Any], kind: str, name: str) -> dict[str, torch.Tensor] | None:
    """The tensors of the first ``kind`` component called ``name`` in a checkpoint, with keys
    relative to that component (for a stage's ``init_from``), or None when it has none.

    The checkpoint's pipeline table says where each component sits in its state dict: ``embedder.``,
    ``backbone.`` (a backbone list: ``backbone.stages.J.``), ``poolers.J.``, ``head.``.
    """
    from icezoo.core.registry import normalise

    entries = payload["pipeline"].get(kind)
    listed = isinstance(entries, list)
    for j, entry in enumerate(entries if listed else [entries]):
        if isinstance(entry, dict) and normalise(str(entry.get("name", ""))) == normalise(name):
            prefix = f"poolers.{j}." if kind == "pooler" else f"{kind}.stages.{j}." if listed else f"{kind}."
            return {k[len(prefix):]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    return None
