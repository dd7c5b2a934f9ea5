"""Inference: model outputs over a loader, and ``icezoo predict`` (a Kaggle submission).

Submission: exactly one row per event of ``DIR/{split}_meta.parquet``, in its order, columns
``event_id,azimuth,zenith`` (radians, azimuth in [0, 2pi), zenith in [0, pi]). Events the model
cannot see (fewer than 2 pulses: the loader skips them, and LineFit is undefined for them too)
get the fixed direction (azimuth 0, zenith pi/2), and are counted. For a direction about which
nothing is known every fixed choice has the same expected angular error (pi/2 over an isotropic
sky), so the fallback is simply a fixed one. Events listed in the meta file without any pulse row get the same fallback.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from icezoo.core.batch import vector_to_angles
from icezoo.core.errors import IcezooError
from icezoo.core.outputs import check_output
from icezoo.data.io import foreign_source, load_geometry, read_meta, split_events
from icezoo.data.kaggle_layout import write_submission
from icezoo.engine.vmf import vmf_cone
from icezoo.engine.runs import RunDir, distinct_runs, resolve_run, unfinished_note
from icezoo.engine import stacker as S
from icezoo.engine.checkpoints import load_run_model
from icezoo.engine.device import autocast, pick_device
from icezoo.engine.ensemble import combine, ensemble_of, rotate_geometry, tta_angles, unrotate
from icezoo.engine.loaders import check_detector, make_eval_loader

FALLBACK_AZIMUTH = 0.0
FALLBACK_ZENITH = math.pi / 2
#: ``--uncertainty``: the coverages of the cone radii written after the Kaggle columns
CONE_LEVELS = (0.5, 0.9)


def _checked_kappa(kappa: np.ndarray) -> np.ndarray:
    if not np.isfinite(kappa).all() or (kappa < 0).any():
        raise IcezooError("--uncertainty: the pipeline's head predicts no kappa (or a non-finite one): there is "
                          "no cone to write; nothing was written")
    return kappa


def infer(model, loader, device, precision: str = "fp32") -> dict[str, np.ndarray]:
    """Run ``model`` over ``loader``: event_id, direction [N,3] float64 unit vectors, kappa (or NaN),
    target [N,3] (NaN without truth), n_pulses, selected pulse count; with tasks also ``tasks``
    ({output column: [N]}, :meth:`Pipeline.task_outputs`) and ``truth`` ({column: [N]}, where the
    loader carried the tasks' truth)."""
    ids, dirs, kappas, targets, npulses, nsel = [], [], [], [], [], []
    columns: dict[str, list[np.ndarray]] = {}
    truth: dict[str, list[np.ndarray]] = {}
    with_tasks = bool(getattr(model, "tasks", None))
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            batch = batch.to(device)
            with autocast(device, precision):
                pred = model(batch, tasks=True) if with_tasks else model(batch)
            if with_tasks:
                pred, outs = pred
                _collect(columns, model.task_outputs({k: v.double() for k, v in outs.items()}))
                _collect(truth, batch.truth or {})
            pred = pred.double()
            d = model.direction(pred)
            k = model.kappa(pred)
            ids.append(batch.event_id.cpu().numpy())
            dirs.append(d.cpu().numpy())
            kappas.append(k.cpu().numpy() if k is not None else np.full(len(d), np.nan))
            if batch.target is not None:
                targets.append(batch.target.double().cpu().numpy())
            else:
                targets.append(np.full((len(d), 3), np.nan))
            npulses.append(batch.n_pulses.cpu().numpy())
            nsel.append(batch.lengths.cpu().numpy())
    model.train(was_training)
    if not ids:
        out = {"event_id": np.zeros(0, np.int64), "direction": np.zeros((0, 3)), "kappa": np.zeros(0),
               "target": np.zeros((0, 3)), "n_pulses": np.zeros(0, np.int64), "n_selected": np.zeros(0, np.int64)}
    else:
        out = {"event_id": np.concatenate(ids).astype(np.int64), "direction": np.concatenate(dirs),
               "kappa": np.concatenate(kappas), "target": np.concatenate(targets),
               "n_pulses": np.concatenate(npulses).astype(np.int64),
               "n_selected": np.concatenate(nsel).astype(np.int64)}
    if with_tasks:
        names = (model.task_outputs({n: torch.zeros(1, t.out_dim) for n, t in model.tasks.items()}) if not ids
                 else columns)
        out["tasks"] = {k: np.concatenate(columns[k]) if ids else np.zeros(0) for k in names}
        out["truth"] = {k: np.concatenate(v).astype(np.float64) for k, v in truth.items()}
    return out


def _collect(into: dict[str, list[np.ndarray]], columns: dict[str, torch.Tensor]) -> None:
    for name, values in columns.items():
        into.setdefault(name, []).append(values.double().cpu().numpy())


def member_predictions(model, data_dir, split: str, ids: list[int], device, precision: str = "fp32", tta: int = 1,
                       batch_size: int = 256, workers: int = 0, on_view=None) -> dict[str, np.ndarray]:
    """One model's directions and kappas on batch files ``ids`` (sorted by event id), with ``tta``
    rotations of the detector about the vertical axis combined by the ensemble rule (``tta = 1``:
    none; see :mod:`icezoo.engine.ensemble`); ``on_view()`` is called after each view (progress)."""
    geometry = load_geometry(data_dir)
    views = []
    for theta in tta_angles(tta):
        geo = geometry if theta == 0 else rotate_geometry(geometry, theta)
        loader = make_eval_loader(data_dir, split, ids, model, batch_size, workers=workers, geometry=geo)
        res = infer(model, loader, device, precision)
        order = np.argsort(res["event_id"], kind="stable")
        views.append({"event_id": res["event_id"][order], "direction": unrotate(res["direction"][order], theta),
                      "kappa": res["kappa"][order], "n_pulses": res["n_pulses"][order],
                      **({"tasks": {k: v[order] for k, v in res["tasks"].items()}} if "tasks" in res else {})})
        if on_view is not None:
            on_view()
    for v in views[1:]:  # selection and min_pulses do not depend on the rotation: the same events
        if not np.array_equal(v["event_id"], views[0]["event_id"]):
            raise IcezooError("TTA: the rotated views did not score the same events")
    direction, kappa = combine([v["direction"] for v in views], [v["kappa"] for v in views])
    out = {"event_id": views[0]["event_id"], "direction": direction, "kappa": kappa, "n_pulses": views[0]["n_pulses"]}
    if "tasks" in views[0]:  # the tasks' columns of the unturned view (a vertex would turn with the detector)
        out["tasks"] = views[0]["tasks"]
    return out


def _log_written(run_dirs: list[Path], what: str, counts: dict[str, Any], stacker: str | None, echo) -> None:
    """The submission's counts into each run's log, and the one-line summary."""
    for run_dir in run_dirs:
        RunDir(run_dir).log()(f"{what}: {counts}", echo=False)
    if echo:
        by = "the model" if len(run_dirs) == 1 else f"the ensemble of {len(run_dirs)} runs"
        by += (f" stacked by {stacker}" if stacker else "") + (f" with TTA {counts['tta']}" if counts["tta"] > 1 else "")
        echo(f"wrote {counts['out']}: {counts['events']:,} events ({counts['model']:,} by {by}, "
             f"{counts['fallback_one_pulse']:,} one-pulse fallback, {counts['fallback_no_pulse']:,} no-pulse fallback) "
             f"from {counts['checkpoint']}")


def _combiner(stacker: str | None, names: list[str]):
    """How one batch file's member predictions become the submission's: one member as it is, several
    by the kappa-weighted mean, or by a fitted stacker file (checked to be fitted on these runs)."""
    if stacker is None:
        return lambda preds: preds[0] if len(preds) == 1 else ensemble_of(preds)
    fitted = S.load(stacker)
    S.check_members(fitted, names, f"--stacker {stacker}")
    return lambda preds: S.apply(fitted, preds)


def _check_paths(data_dir: Path, split: str, out: Path) -> tuple[Path, Path]:
    """The split's meta file exists and ``out`` can be written: one line otherwise, before any work."""
    meta_file = data_dir / f"{split}_meta.parquet"
    if foreign_source(data_dir) is None and not meta_file.is_file():
        raise IcezooError(f"{meta_file}: no such file (is --data a Kaggle-layout directory with a '{split}' split?)")
    if out.parent and not out.parent.exists():
        raise IcezooError(f"--out {out}: directory {out.parent} does not exist")
    if out.is_dir():
        raise IcezooError(f"--out {out}: is a directory (give a file name, e.g. {out / 'submission.csv'})")
    return data_dir, out


def _uncertainty_map(run_dirs: list[Path], tta: int, stacker: str | None):
    """``--uncertainty``: the kappa map to apply (the run's calibration, or the identity with a note
    when it has none); refused for ensembles, stackers and TTA, whose combined kappa no single
    run's calibration was fitted on."""
    if len(run_dirs) > 1 or stacker or tta > 1:
        raise IcezooError("--uncertainty needs one run without --tta or --stacker (a calibration is fitted on "
                          "one run's own kappa)")
    from icezoo.engine.vmf import cone_radius

    cal = RunDir(run_dirs[0]).calibration()
    if cal is None:
        print(f"note: {run_dirs[0]} has no calibration (icezoo calibrate): the cone radii use the raw kappa",
              file=sys.stderr)
    return lambda kappa, q: cone_radius(cal, kappa, q)


def _cone_columns(kappa_map, kappa: np.ndarray) -> dict[str, np.ndarray] | None:
    """``--uncertainty``'s columns: the calibrated cones of the model's events, the isotropic ones
    (NaN kappa) of the fallback events; None without the flag."""
    if kappa_map is None:
        return None
    seen = np.isfinite(kappa)
    return {f"cone_radius_{round(100 * q)}": np.where(seen, kappa_map(np.where(seen, kappa, 0.0), q), vmf_cone(0.0, q))
            for q in CONE_LEVELS}


def _put_extra(res: dict[str, Any], idx: np.ndarray, kappa: np.ndarray | None, task_cols: dict[str, np.ndarray],
               n: int) -> None:
    """The columns beyond the direction of one batch's events (rows ``idx``): the kappa (``--uncertainty``)
    and the tasks' outputs (NaN rows stay for the fallback events, which no model saw)."""
    if kappa is not None:
        kappa[idx] = _checked_kappa(res["kappa"])
    for name, values in (res.get("tasks") or {}).items():
        task_cols.setdefault(name, np.full(n, np.nan))[idx] = values


def predict(run: str | list[str], data: str, split: str = "test", out: str | Path = "submission.csv",
            runs_dir: str | Path = "runs", batch_size: int = 256, workers: int = 0, device: str | None = None,
            tta: int = 1, echo=print, stacker: str | None = None, uncertainty: bool = False) -> dict[str, Any]:
    """Write the submission of one run or of an ensemble of runs (the kappa-weighted mean of their
    directions, :mod:`icezoo.engine.ensemble`, or a fitted ``stacker`` file, :mod:`icezoo.engine.stacker`),
    optionally with ``tta`` rotations and (``uncertainty``, one run) the 50% and 90% vMF cone radii
    of the run's calibrated kappa after the Kaggle columns; returns counts."""
    data_dir, out = _check_paths(Path(data), split, Path(out))
    run_names = [run] if isinstance(run, str) else list(run)
    check_output(out, dirs=[data_dir, *(resolve_run(r, runs_dir) for r in run_names)])
    tta_angles(tta)  # a bad --tta fails before any work
    kappa_map = _uncertainty_map([resolve_run(r, runs_dir) for r in run_names], tta, stacker) if uncertainty \
        else None
    distinct_runs(run_names, runs_dir)
    combined = _combiner(stacker, [resolve_run(r, runs_dir).name for r in run_names])  # before any model loads
    members = [load_run_model(r, runs_dir) for r in run_names]
    for run_dir, info, _, _, ckpt in members:
        note = unfinished_note(run_dir, info, ckpt)
        if note:
            print(note, file=sys.stderr)
    dev = pick_device(None, device)
    for _, _, _, model, _ in members:
        model.to(dev)
        check_detector(model, data_dir)

    event_ids, wanted = split_events(data_dir, split)
    azimuth = np.full(len(event_ids), np.nan)
    zenith = np.full(len(event_ids), np.nan)
    kappa = np.full(len(event_ids), np.nan)  # NaN: a fallback event, whose cones are the isotropic ones
    task_cols: dict[str, np.ndarray] = {}  # the tasks' columns (NaN for the fallback events: no prediction)
    by_id = np.argsort(event_ids, kind="stable")  # event_id is unique in a split (split_events checks)

    def position(ids: np.ndarray) -> np.ndarray:
        """Rows of the submission (meta order) of these event ids."""
        return by_id[np.searchsorted(event_ids[by_id], ids)]

    n_model = n_one = n_zero = 0
    # the precision each run ended in: after a NaN-guard fallback, fp32 (not the requested bf16/fp16 that failed)
    precisions = [(info.get("precision") or {}).get("final") or config.train.precision
                  for _, info, config, _, _ in members]
    with Progress(transient=True, disable=not echo) as progress:
        task = progress.add_task(f"predict {split}" + (f" (TTA {tta} rotations)" if tta > 1 else ""),
                                 total=len(wanted))
        for bid in wanted:
            preds = [member_predictions(model, data_dir, split, [bid], dev, prec, tta, batch_size, workers)
                     for (_, _, _, model, _), prec in zip(members, precisions)]
            res = combined(preds)
            bad = np.flatnonzero(~np.isfinite(res["direction"]).all(axis=1))
            if len(bad):  # never write NaN into a submission
                raise IcezooError(f"the model's direction is not finite for {len(bad)} event(s) of "
                                  f"{data_dir / split / f'batch_{bid}.parquet'} (e.g. event {res['event_id'][bad[0]]}): "
                                  f"the run diverged; nothing was written")
            a, z = vector_to_angles(res["direction"])
            idx = position(res["event_id"])
            azimuth[idx], zenith[idx] = a, z
            _put_extra(res, idx, kappa if kappa_map is not None else None, task_cols, len(event_ids))
            n_model += len(idx)
            # events the loader skipped (< 2 pulses): the fallback; their pulse counts from the meta
            # rows the loader has already validated against the file, so the file is not read again
            meta = read_meta(data_dir, split, bid)
            todo = np.flatnonzero(np.isin(meta["event_id"], res["event_id"], invert=True))
            if len(todo):
                lengths = (meta["last_pulse_index"] - meta["first_pulse_index"] + 1)[todo]
                idx = position(meta["event_id"][todo].astype(np.int64))
                azimuth[idx], zenith[idx] = FALLBACK_AZIMUTH, FALLBACK_ZENITH
                n_one += int((lengths == 1).sum())
                n_zero += int((lengths == 0).sum())
            progress.advance(task)
    absent = np.isnan(azimuth)
    n_absent = int(absent.sum())  # in the meta file but without pulse rows at all
    azimuth[absent], zenith[absent] = FALLBACK_AZIMUTH, FALLBACK_ZENITH

    write_submission(out, event_ids, azimuth, zenith, extra={**task_cols, **(_cone_columns(kappa_map, kappa) or {})})
    counts = {"events": len(event_ids), "model": n_model, "fallback_one_pulse": n_one,
              "fallback_no_pulse": n_zero + n_absent, "out": str(out), "tta": tta,
              "run": ", ".join(str(m[0]) for m in members), "checkpoint": ", ".join(str(m[4]) for m in members)}
    _log_written([m[0] for m in members], f"predict {data_dir} {split} -> {out}", counts, stacker, echo)
    return counts
