"""``icezoo export``: a finished run as a model bundle (model file, manifest.json, MODEL.md).

The bundle is a directory, written atomically (built under a temporary name, then renamed):

* ``model.onnx`` or ``model.pt``: the exported model (:mod:`icezoo.engine.export`);
* ``manifest.json``: everything needed to use it without icezoo's registry (format: docs/export.md),
  versioned by ``format_version``; the SHA-256 of the model file ties the two together;
* ``MODEL.md``: the model card (:mod:`icezoo.engine.model_card`).

A reader (:func:`read_bundle`) refuses a bundle from a newer format version, one whose model file
does not match the manifest's hash, and anything that is not a bundle, in one line each.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import math
from pathlib import Path
from typing import Any

import torch

from icezoo.core.atomic import atomic_directory
from icezoo.core.errors import IcezooError
from icezoo.core.outputs import check_output
from icezoo.core.pipelines import validate_params
from icezoo.core.synthetic import synthetic_batch
from icezoo.core.version import __version__
from icezoo.data.detector import icecube86
from icezoo.data.formats import foreign_source
from icezoo.engine import export as X
from icezoo.engine.checkpoints import checkpoint_pipeline_table, model_from_checkpoint
from icezoo.engine.model_card import model_card
from icezoo.engine.runs import RunDir, now_iso, read_json
from icezoo.nn.mlp import InputStandardizer
from icezoo.zoo import registry

#: the bundle format this icezoo writes and the newest it reads
FORMAT = "icezoo-model-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CARD = "MODEL.md"
#: exported outputs must match the torch model within this (float32), on batches unlike the example
PARITY_TOLERANCE = 1e-4
#: what each standard output means (task outputs: their task's words, else "task output")
OUTPUT_MEANING = {
    "direction": "unit vector (x, y, z) pointing to where the neutrino came from, detector frame: "
                 "azimuth = atan2(y, x) mod 2 pi, zenith = arccos(z)",
    "kappa": "von Mises-Fisher concentration of the direction (1/rad^2; larger = more certain); "
             "uncalibrated: apply the manifest's calibration map for cone radii",
}


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ writing
def _finished_run(run: str, runs_dir: str | Path, which: str) -> tuple[RunDir, dict[str, Any], Path]:
    """The run, its info and the checkpoint to export; a run that never finished is refused."""
    if which not in ("best", "last"):
        raise IcezooError(f"--checkpoint {which}: choose best or last")
    rd = RunDir.find(run, runs_dir)
    info = rd.info()
    status = info.get("status")
    if status != "done":
        raise IcezooError(f"{rd.path}: the run never finished (status {status!r}); export a finished run "
                          f"(its checkpoint is a snapshot, not a result)")
    path = rd.checkpoint(which)
    if not path.is_file():
        raise IcezooError(f"{path}: no such checkpoint (the run has no {which} checkpoint; try --checkpoint "
                          f"{'last' if which == 'best' else 'best'})")
    return rd, info, path


def _example(pipeline) -> Any:
    """The batch whose shapes the export traces (values do not matter; axes stay dynamic)."""
    return synthetic_batch(pipeline.feature_dim, [24, 17, 9, 20], width=24, event_dim=pipeline.event_dim)


def _parity_batches(pipeline) -> list:
    """Uneven events with padding, at sizes other than :func:`_example`'s (one event included)."""
    shapes = [([2, 40, 13, 5, 64, 9, 31], 64), ([7], 7), ([3, 2, 30], 33)]
    return [synthetic_batch(pipeline.feature_dim, lengths, width=w, seed=11 + i, event_dim=pipeline.event_dim)
            for i, (lengths, w) in enumerate(shapes)]


def _write_model(pipeline, fmt: str, path: Path) -> dict[str, Any]:
    if fmt == "onnx":
        X.import_onnxruntime()  # the parity check below runs it: say so before the export's seconds
        return X.export_onnx(pipeline, path, _example(pipeline))
    return X.export_torchscript(pipeline, path, _example(pipeline))


def export_run(run: str, out: str | Path, fmt: str = "onnx", runs_dir: str | Path = "runs", which: str = "best",
               overwrite: bool = False, echo=print) -> dict[str, Any]:
    """Write the bundle of ``run``'s ``which`` checkpoint to ``out``; returns the manifest."""
    if fmt not in X.MODEL_FILES:
        raise IcezooError(f"--format {fmt}: unknown format (choose {' or '.join(X.MODEL_FILES)})")
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise IcezooError(f"--out {out}: exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise IcezooError(f"--out {out}: is a file, not a bundle directory")
    if out.is_dir() and overwrite and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise IcezooError(f"--out {out}: is a directory but not a bundle (no {MANIFEST}); --overwrite replaces "
                          f"only bundles")
    rd, info, ckpt_path = _finished_run(run, runs_dir, which)
    check_output(out, dirs=[rd.path])  # never inside the run (or any run, dataset or study)
    config, pipeline, _ = model_from_checkpoint(ckpt_path)
    pipeline.eval()
    name = X.MODEL_FILES[fmt]
    with atomic_directory(out, replace=overwrite) as tmp:
        written = _write_model(pipeline, fmt, tmp / name)
        diff = X.check_parity(pipeline, tmp / name, _parity_batches(pipeline), relative=True)
        if not diff <= PARITY_TOLERANCE:
            raise IcezooError(f"{run}: the exported model differs from the torch model by {diff:.2e} "
                              f"(> {PARITY_TOLERANCE:g}) on the parity batches: not written")
        manifest = build_manifest(pipeline, config, rd, info, ckpt_path, which, fmt, name, written, tmp / name)
        manifest["parity"] = {"max_abs_diff": diff, "tolerance": PARITY_TOLERANCE,
                              "measure": "|exported - torch| / max(1, |torch|), every output",
                              "batches": "3 synthetic batches, 1-7 events of 2-64 pulses, padded, shapes "
                                         "other than the export example's"}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
        (tmp / CARD).write_text(model_card(manifest))
    if echo:
        echo(f"wrote {out}: {name} ({fmt}, {manifest['model']['bytes']:,} bytes), {MANIFEST}, {CARD} from "
             f"{ckpt_path} (parity max |diff| {diff:.1e})")
    return manifest


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def build_manifest(pipeline, config, rd: RunDir, info: dict, ckpt: Path, which: str, fmt: str, name: str,
                   written: dict, model_path: Path) -> dict[str, Any]:
    """The manifest of a bundle (every field is described in docs/export.md)."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created": now_iso(),
        "model": {"file": name, "format": fmt, "sha256": sha256(model_path), "bytes": model_path.stat().st_size,
                  "opset": written.get("opset")},
        "pipeline": {"name": config.name, "description": config.description,
                     "table": checkpoint_pipeline_table(config)},
        **preprocessing(pipeline),
        "detector": run_detector(info),
        "inputs": input_specs(pipeline, written["inputs"]),
        "outputs": output_specs(pipeline, written["outputs"]),
        "calibration": rd.calibration(),
        "validation": validation(info),
        "training": training(info),
        "run": {"name": rd.name, "checkpoint": which, "checkpoint_file": str(ckpt), "status": info.get("status"),
                "git_commit": info.get("git_commit", "")},
        "versions": versions(fmt),
    }


def preprocessing(pipeline) -> dict[str, Any]:
    """Selection and feature steps with their params and columns (what runs before the model), and
    the normalisation constants the model holds (the embedder's standardisation statistics)."""
    sel = pipeline.selection
    features = [{"name": f.name, "params": f.config.model_dump(mode="json"), "columns": list(f.feature_names()),
                 "event_level": f.event_level, "description": _first_line(type(f))} for f in pipeline.features]
    return {
        "selection": {"name": sel.name, "params": sel.config.model_dump(mode="json"), "max_pulses": sel.max_pulses,
                      "description": _first_line(type(sel))},
        "features": features,
        "feature_columns": [c for f in features if not f["event_level"] for c in f["columns"]],
        "event_feature_columns": [c for f in features if f["event_level"] for c in f["columns"]],
        "normalisation": standardisation(pipeline),
        "min_pulses": 2,
    }


def _first_line(cls) -> str:
    """A component's description: the first paragraph of its docstring, on one line."""
    return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


def standardisation(pipeline) -> dict[str, Any]:
    """The per-column statistics any ``InputStandardizer`` inside the model applies (inside the
    exported model too: informational), keyed by its module path."""
    out = {}
    for path, module in pipeline.named_modules():
        if isinstance(module, InputStandardizer):
            out[path] = {"mean": module.mean.tolist(), "var": module.var.tolist(), "eps": module.eps,
                         "applied": "inside the model: (x - mean) / sqrt(var + eps) over real pulses"}
    return {"in_model": out, "features": "each feature's own fixed constants: see its description and params"}


def run_detector(info: dict) -> dict[str, Any]:
    """The detector of the run's training data (IceCube-86 for Kaggle-layout data)."""
    split = info.get("split") or {}
    data = split.get("data_dir") or split.get("data")
    det, source = icecube86(), "Kaggle-layout training data"
    if data and Path(data).exists():
        src = foreign_source(data)
        if src is not None:
            det, source = src.detector(), f"{src.format} training data"
    elif data:
        source = "assumed: the training data is no longer at its path"
    return detector_record(det, source)


def detector_record(det, source: str) -> dict[str, Any]:
    return {"name": det.name, "icecube86": det.icecube86, "n_sensors": det.n_sensors, "pad_sensor": det.pad_sensor,
            "sensor_types": dict(det.types), "provides": sorted(det.provides), "from": source}


def input_specs(pipeline, names: list[str]) -> list[dict[str, Any]]:
    widths = {"F": pipeline.feature_dim, "E": pipeline.event_dim}
    meaning = {"features": "per-pulse features, columns as feature_columns", "mask": "true for a real pulse",
               "xyzt": "sensor x, y, z (m) and time (ns) relative to the first selected pulse",
               "sensor_id": "sensor index; detector.pad_sensor in padded slots",
               "event_features": "event-level features, columns as event_feature_columns"}
    out = []
    for name, dtype, axes in X.INPUTS:
        if name in names:
            out.append({"name": name, "dtype": dtype, "shape": [widths.get(a, a) for a in axes],
                        "dynamic_axes": {str(i): a for i, a in enumerate(axes) if a in ("batch", "pulses")},
                        "meaning": meaning[name]})
    return out


def output_specs(pipeline, names: list[str]) -> list[dict[str, Any]]:
    """Each output's name, dtype, shape and meaning; a task output also names its task and family."""
    owners = X.task_columns(pipeline)
    out = []
    for name in names:
        spec = {"name": name, "dtype": "float32", "shape": ["batch", 3] if name == "direction" else ["batch"]}
        if name in owners:
            task = pipeline.tasks[owners[name]]
            spec.update(task=owners[name], family=getattr(task, "family", ""),
                        meaning=TASK_MEANING.get(_column_kind(name), "") + _first_line(type(task)))
        else:
            spec["meaning"] = OUTPUT_MEANING[name]
        out.append(spec)
    return out


#: the units of the standard task columns (docs/components.md, Tasks), before the task's own description
TASK_MEANING = {"energy": "log10(E / GeV). ", "sigma": "its predicted uncertainty (same units). ",
                "p": "probability of the class named after p_. ", "vertex": "metres, detector frame. "}


def _column_kind(column: str) -> str:
    if column.endswith("_sigma"):
        return "sigma"
    if column.startswith("p_"):
        return "p"
    return column.split("_")[0]


def validation(info: dict) -> dict[str, Any]:
    """The run's score, naming its data and events (an evaluation when there is one, with its CI)."""
    split = info.get("split") or {}
    ev = info.get("evaluation") or {}
    if ev.get("mean") is not None:
        return {"metric": "mean angular error (rad)", "mean": ev["mean"], "ci95": ev.get("ci95"),
                "median": ev.get("median"), "n_events": ev.get("n_events"), "split": ev.get("split"),
                "data": ev.get("data"), "batches": ev.get("batches"), "linefit_mean": ev.get("linefit_mean"),
                "improvement_ci95": ev.get("improvement_ci95"), "source": "icezoo evaluate"}
    return {"metric": "mean angular error (rad)", "mean": _finite(info.get("best_val")), "ci95": None,
            "split": "val", "data": split.get("data_dir"), "batches": split.get("val_batches"),
            "source": "validation during training (no CI: run icezoo evaluate before exporting)"}


def training(info: dict) -> dict[str, Any]:
    """What the model was trained on and for how long (the budget)."""
    split = info.get("split") or {}
    keys = ("step", "events_seen", "train_time_s", "device", "world_size", "started", "finished")
    return {"data": split.get("data_dir"), "train_batches": split.get("train_batches"),
            "pulsemap": split.get("pulsemap"), "truth_table": split.get("truth_table"),
            "precision": (info.get("precision") or {}).get("final"), **{k: info.get(k) for k in keys}}


def versions(fmt: str) -> dict[str, str]:
    out = {"icezoo": __version__, "torch": torch.__version__}
    for dist in (("onnx", "onnxruntime", "onnxscript") if fmt == "onnx" else ()):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


# ------------------------------------------------------------------------------ reading
def read_bundle(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of the bundle at ``path``, checked: a bundle of a format version this icezoo
    reads, whose model file exists and (``verify``) matches the manifest's SHA-256."""
    path = Path(path)
    if not path.is_dir():
        raise IcezooError(f"{path}: no such bundle directory" if not path.exists()
                          else f"{path}: not a bundle directory (icezoo export writes one)")
    mfile = path / MANIFEST
    if not mfile.is_file():
        raise IcezooError(f"{path}: not a model bundle (no {MANIFEST})")
    manifest = read_json(mfile)
    if manifest.get("format") != FORMAT:
        raise IcezooError(f"{mfile}: not an icezoo model bundle manifest (format {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise IcezooError(f"{mfile}: format_version is missing or not an integer")
    if version > FORMAT_VERSION:
        raise IcezooError(f"{mfile}: bundle format_version {version} is newer than this icezoo reads "
                          f"({FORMAT_VERSION}): upgrade icezoo")
    model = manifest.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("file"), str) or Path(model["file"]).name != model["file"]:
        raise IcezooError(f"{mfile}: model.file is missing or not a file name in the bundle")
    if model.get("format") not in X.MODEL_FILES:
        raise IcezooError(f"{mfile}: model.format {model.get('format')!r} is not one this icezoo reads")
    file = path / model["file"]
    if not file.is_file():
        raise IcezooError(f"{file}: missing (the manifest names it)")
    if verify and sha256(file) != model.get("sha256"):
        raise IcezooError(f"{file}: its SHA-256 does not match the manifest's (a changed or damaged model file)")
    _check_fields(manifest, mfile)
    return manifest


#: the manifest fields a reader needs, and their JSON types (lists hold objects)
REQUIRED = {"selection": dict, "features": list, "detector": dict, "inputs": list, "outputs": list}


def _check_fields(manifest: dict[str, Any], mfile: Path) -> None:
    for key, kind in REQUIRED.items():
        value = manifest.get(key)
        if not isinstance(value, kind):
            raise IcezooError(f"{mfile}: field '{key}' is missing or not a JSON {'array' if kind is list else 'object'}")
        if kind is list and not all(isinstance(v, dict) and isinstance(v.get("name"), str) for v in value):
            raise IcezooError(f"{mfile}: every entry of '{key}' must be an object with a 'name'")
    if not isinstance(manifest["selection"].get("name"), str):
        raise IcezooError(f"{mfile}: selection.name is missing")


def bundle_preprocessing(manifest: dict[str, Any], where: str):
    """(selection, feature extractors) built by name from the manifest's params (no torch model),
    checked to give the manifest's columns."""
    reg = registry()

    def make(kind: str, entry: dict, path: str):
        try:
            spec = reg.get(kind, entry["name"])
            cfg = validate_params(spec.cls, entry.get("params") or {}, path)
        except (IcezooError, KeyError, TypeError) as exc:
            raise IcezooError(f"{where}: {path}: {exc}") from None
        return spec.cls.build(cfg, 0)

    selection = make("selection", manifest["selection"], "selection")
    features = [make("features", f, f"features.{i}") for i, f in enumerate(manifest["features"])]
    for i, (f, entry) in enumerate(zip(features, manifest["features"])):
        if list(f.feature_names()) != list(entry.get("columns", [])):
            raise IcezooError(f"{where}: features.{i} ({entry['name']}): this icezoo gives columns "
                              f"{list(f.feature_names())}, the bundle was trained on {entry.get('columns')}")
    return selection, features
