"""Checkpoints: names, params and provider versions plus tensors; never code.

A checkpoint is a dict of plain data (str, numbers, lists, dicts) and tensors, written with
``torch.save`` to a temporary name and renamed, read with ``torch.load(weights_only=True)``:
no class paths, pickled objects or eval-able strings, so loading one cannot run code.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from icezoo.core.atomic import atomic_path, readable_file
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
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a failed write (disk full) as RuntimeError
            raise IcezooError(f"{path}: cannot write the checkpoint ({_write_failure(tmp, exc)})") from None
    return path


def _write_failure(tmp: Path, exc: BaseException) -> str:
    """The OS's reason a checkpoint write failed (torch hides errno): a full disk when it is full."""
    import shutil

    try:
        if shutil.disk_usage(tmp.parent).free < 1 << 20:
            return "No space left on device"
    except OSError:
        pass
    return str(exc).strip().splitlines()[0][:120] if str(exc).strip() else exc.__class__.__name__


def _why_unloadable(exc: BaseException) -> str:
    """What went wrong in torch.load, in our words: torch's own text suggests ``weights_only=False``
    (running the file's code), which icezoo never does, so none of it is passed on."""
    text = str(exc)
    if "weights_only" in text or "Unsupported global" in text or isinstance(exc, pickle.UnpicklingError):
        return "it holds pickled Python objects, not only tensors"
    if "zip archive" in text or "PytorchStreamReader" in text:
        return "truncated or damaged archive"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return "not a torch file"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint; any problem is one IcezooError naming the file."""
    path = readable_file(path)
    if not path.is_file():
        raise IcezooError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error below says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, foreign pickle, code objects: all refused the same way
        raise IcezooError(f"{path}: not an icezoo checkpoint, or a corrupt one ({_why_unloadable(exc)}); "
                          f"icezoo loads plain tensors and data only") from None
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
    from icezoo.core.names import normalise

    entries = payload["pipeline"].get(kind)
    listed = isinstance(entries, list)
    for j, entry in enumerate(entries if listed else [entries]):
        if isinstance(entry, dict) and normalise(str(entry.get("name", ""))) == normalise(name):
            prefix = f"poolers.{j}." if kind == "pooler" else f"{kind}.stages.{j}." if listed else f"{kind}."
            return {k[len(prefix):]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    return None


def require_finite(path: str | Path, state_dict: dict[str, torch.Tensor]) -> None:
    """A model whose weights hold NaN or inf predicts one constant direction (or NaN): refuse it."""
    for name, tensor in state_dict.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise IcezooError(f"{path}: the weights are not finite ({name} holds NaN or inf): the run diverged; "
                              f"retrain it (e.g. with a lower train.lr)")
