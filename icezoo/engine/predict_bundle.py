"""``icezoo predict --model BUNDLE``: a submission from an exported model, without the torch model.

The bundle's manifest drives everything before the model: the selection and feature components are
built by name with the manifest's params (the same code as a run's, so the same inputs), the
loader pads them as for a run, and onnxruntime (or ``torch.jit.load`` for a TorchScript bundle) runs
the model file. The CSV is the one ``icezoo predict RUN`` writes (same rows, columns and fallbacks;
a test holds the two within 1e-4 rad per event).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from icezoo.core.batch import vector_to_angles
from icezoo.core.errors import IcezooError
from icezoo.core.outputs import check_output
from icezoo.data.detector import check_needs, icecube86
from icezoo.data.io import foreign_source, load_geometry, read_meta, split_events
from icezoo.data.kaggle_layout import write_submission
from icezoo.data.loader import make_loader
from icezoo.engine.bundle import bundle_preprocessing, detector_record, read_bundle
from icezoo.engine.export import ExportedRunner, batch_inputs
from icezoo.engine.predict import FALLBACK_AZIMUTH, FALLBACK_ZENITH, _check_paths, _checked_kappa, _cone_columns
from icezoo.engine.vmf import cone_radius


def _detector_of(data_dir: Path):
    """The detector of ``data_dir`` (IceCube-86 for the Kaggle layout)."""
    src = foreign_source(data_dir)
    return icecube86() if src is None else src.detector()


def check_bundle_detector(manifest: dict[str, Any], data_dir: Path, where: str) -> None:
    """Refuse data from another detector than the bundle's (sensor ids and features would not mean
    what the model learnt): one line naming both."""
    want, have = manifest["detector"], detector_record(_detector_of(data_dir), "data")
    if bool(want.get("icecube86")) != have["icecube86"] or want.get("name") != have["name"]:
        raise IcezooError(f"--data {data_dir}: detector {have['name']}, but the bundle {where} was trained for "
                          f"{want.get('name')}: refusing to predict across detectors")


def _open(bundle: str | Path, threads: int | None) -> tuple[dict[str, Any], ExportedRunner]:
    manifest = read_bundle(bundle)
    runner = ExportedRunner(Path(bundle) / manifest["model"]["file"], threads=threads)
    names = [o["name"] for o in manifest["outputs"]]
    if names[:1] != ["direction"]:
        raise IcezooError(f"{bundle}: the manifest's first output is {names[:1]}, not direction")
    return manifest, runner


def _file_predictions(runner, names: list[str], loader) -> dict[str, np.ndarray]:
    """event_id, direction [N, 3] float64 and every other output by name, over one loader."""
    ids, outs = [], {n: [] for n in names}
    for batch in loader:
        got = runner(batch_inputs(batch))
        ids.append(batch.event_id.numpy())
        for name, value in zip(names, got):
            outs[name].append(np.asarray(value, dtype=np.float64))
    if not ids:
        return {"event_id": np.zeros(0, np.int64), **{n: np.zeros((0, 3) if n == "direction" else 0) for n in names}}
    return {"event_id": np.concatenate(ids).astype(np.int64), **{n: np.concatenate(v) for n, v in outs.items()}}


def predict_bundle(bundle: str | Path, data: str | Path, split: str = "test", out: str | Path = "submission.csv",
                   batch_size: int = 256, workers: int = 0, threads: int | None = None, uncertainty: bool = False,
                   echo=print) -> dict[str, Any]:
    """Write the submission of a bundle on ``data``'s ``split``; returns counts. ``uncertainty``: the
    50% and 90% cone radii of the bundle's calibrated kappa after the Kaggle columns."""
    data_dir, out = _check_paths(Path(data), split, Path(out))
    check_output(out, dirs=[data_dir, Path(bundle)])
    manifest, runner = _open(bundle, threads)
    names = [o["name"] for o in manifest["outputs"]]
    kappa_map = _bundle_cones(manifest, names, bundle) if uncertainty else None
    check_bundle_detector(manifest, data_dir, str(bundle))
    selection, features = bundle_preprocessing(manifest, str(bundle))
    check_needs([selection, *features], _detector_of(data_dir), data_dir)
    event_ids, wanted = split_events(data_dir, split)
    n = len(event_ids)
    azimuth, zenith, kappa = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    tasks = {name: np.full(n, np.nan) for name in names if name not in ("direction", "kappa")}
    by_id = np.argsort(event_ids, kind="stable")
    geometry = load_geometry(data_dir)
    n_model = n_one = n_zero = 0
    with Progress(transient=True, disable=not echo) as progress:
        task = progress.add_task(f"predict {split} with {Path(bundle).name}", total=len(wanted))
        for bid in wanted:
            loader = make_loader(data_dir, split, [bid], selection, features, batch_size, shuffle=False, seed=0,
                                 epoch=0, rank=0, world_size=1, num_workers=workers, start_step=0, min_pulses=2,
                                 geometry=geometry)
            res = _file_predictions(runner, names, loader)
            if not np.isfinite(res["direction"]).all():
                raise IcezooError(f"{bundle}: the model's direction is not finite on {data_dir / split} batch {bid}: "
                                  f"nothing was written")
            idx = by_id[np.searchsorted(event_ids[by_id], res["event_id"])]
            azimuth[idx], zenith[idx] = vector_to_angles(res["direction"])
            if "kappa" in res:
                kappa[idx] = _checked_kappa(res["kappa"]) if kappa_map is not None else res["kappa"]
            for name in tasks:
                tasks[name][idx] = res[name]
            n_model += len(idx)
            meta = read_meta(data_dir, split, bid)
            todo = np.flatnonzero(np.isin(meta["event_id"], res["event_id"], invert=True))
            if len(todo):
                lengths = (meta["last_pulse_index"] - meta["first_pulse_index"] + 1)[todo]
                fidx = by_id[np.searchsorted(event_ids[by_id], meta["event_id"][todo].astype(np.int64))]
                azimuth[fidx], zenith[fidx] = FALLBACK_AZIMUTH, FALLBACK_ZENITH
                n_one += int((lengths == 1).sum())
                n_zero += int((lengths == 0).sum())
            progress.advance(task)
    absent = np.isnan(azimuth)
    azimuth[absent], zenith[absent] = FALLBACK_AZIMUTH, FALLBACK_ZENITH
    if kappa_map is not None:
        kappa[absent | ~np.isfinite(kappa)] = np.nan
    extra = {**tasks, **(_cone_columns(kappa_map, kappa) or {})}
    write_submission(out, event_ids, azimuth, zenith, extra=extra or None)
    counts = {"events": n, "model": n_model, "fallback_one_pulse": n_one, "fallback_no_pulse": n_zero + int(absent.sum()),
              "out": str(out), "bundle": str(bundle)}
    if echo:
        echo(f"wrote {out}: {n:,} events ({n_model:,} by the bundle {bundle} through {runner.format}, {n_one:,} "
             f"one-pulse fallback, {counts['fallback_no_pulse']:,} no-pulse fallback)")
    return counts


def _bundle_cones(manifest: dict[str, Any], names: list[str], bundle) -> Any:
    """``--uncertainty``: the cone radii of the bundle's calibration (raw kappa, with a note, without one)."""
    if "kappa" not in names:
        raise IcezooError(f"--uncertainty: the bundle {bundle} has no kappa output: there is no cone to write")
    cal = manifest.get("calibration")
    if cal is None:
        print(f"note: {bundle} has no calibration: the cone radii use the raw kappa", file=sys.stderr)
    return lambda k, q: cone_radius(cal, k, q)
