"""``icezoo evaluate``: the Kaggle score of a run on its validation split, LineFit beside it, plots.

Everything is computed in float64 from the meta file's azimuth/zenith (not from the float32
targets of the batches): the Kaggle score (mean angular error, radians), the median, the 68%
containment angle, and a bootstrap 95% interval of the mean (percentile, 1,000 resamples, fixed
seed). LineFit (``icezoo.recon.linefit``) is scored on exactly the same events, with a paired
bootstrap interval of the difference. Events with fewer than 2 pulses are not scored (the loader
skips them; ``icezoo predict`` gives them a fallback) and their number is reported.

Plots (PNG, in ``RUN/plots/``): the learning curve (training loss and validation score per epoch),
resolution vs true zenith, vs pulse count, vs energy and per
event type (when the data has a ``train_truth.parquet``, as simulated sets do), and the kappa
calibration (median error per predicted-kappa bin against the vMF expectation; coverage of the
vMF credible cones against their nominal level).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from icezoo.core.atomic import atomic_path
from icezoo.core.batch import angles_to_vector, angular_error
from icezoo.core.errors import IcezooError
from icezoo.core.outputs import check_output
from icezoo.data.io import (foreign_source, format_batches, list_batches, parse_batches, read_chunk, read_meta,
                             split_batches)
from icezoo.engine.runs import RunDir, distinct_runs, now_iso, resolve_run, unfinished_note
from icezoo.engine.checkpoints import load_run_model
from icezoo.engine.default_data import read_split
from icezoo.engine.device import pick_device
from icezoo.engine.loaders import make_eval_loader
from icezoo.engine.task_plots import saver
from icezoo.engine.vmf import vmf_cone
from icezoo.engine.predict import infer, member_predictions
from icezoo.engine.ensemble import ensemble_of, tta_angles
from icezoo.engine.stats import N_BOOT, bootstrap_ci, paired
from icezoo.engine.task_eval import print_tasks, score_tasks, truth_columns
from icezoo.recon.linefit import linefit

matplotlib.use("Agg")  # plots are files; no display
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)



def summary(err: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """mean, median, 68% containment and the bootstrap 95% interval of the mean, float64."""
    err = np.asarray(err, dtype=np.float64)
    n = len(err)
    if n == 0:
        return {"mean": None, "median": None, "containment68": None, "ci95": [None, None], "n_events": 0}
    return {"mean": float(err.mean()), "median": float(np.median(err)), "containment68": float(np.quantile(err, 0.68)),
            "ci95": bootstrap_ci(err, n_boot, seed), "n_events": int(n)}


def _source_truth(out: dict, data_dir, split: str, ids: list[int], order: dict[int, int]) -> None:
    """Energy per scored event from a GraphNeT truth table (when it has the column), for the slices."""
    src = foreign_source(data_dir)
    t = src.truth(split, ids) if src is not None else None
    if not t or "energy" not in t:
        return
    rows = np.array([order.get(int(e), -1) for e in t["event_id"]], dtype=np.int64)
    keep = rows >= 0
    energy = np.full(len(order), np.nan)
    energy[rows[keep]] = t["energy"][keep]
    out["energy"] = energy


def collect(model, data_dir: Path, split: str, ids: list[int], batch_size: int, device) -> dict[str, np.ndarray]:
    """Model and LineFit directions, float64 truth and per-event attributes for the scored events."""
    loader = make_eval_loader(data_dir, split, ids, model, batch_size, truth_columns=truth_columns(model))
    res = infer(model, loader, device, "fp32")
    skipped = int(loader.skipped)
    order = {int(e): i for i, e in enumerate(res["event_id"])}
    n = len(order)
    truth = np.full((n, 3), np.nan)
    lf = np.full((n, 3), np.nan)
    zenith = np.full(n, np.nan)
    for bid in ids:
        chunk = read_chunk(data_dir, split, bid)
        if chunk.azimuth is None:
            raise IcezooError(f"{data_dir}/{split}: batch {bid} has no truth (azimuth/zenith): cannot evaluate")
        pos = np.array([order.get(int(e), -1) for e in chunk.event_id], dtype=np.int64)
        sel = np.flatnonzero(pos >= 0)
        if not len(sel):
            continue
        sub = chunk.events(sel)
        truth[pos[sel]] = angles_to_vector(sub.azimuth.astype(np.float64), sub.zenith.astype(np.float64))
        zenith[pos[sel]] = sub.zenith
        lf[pos[sel]] = np.asarray(linefit(sub), dtype=np.float64)
    out = dict(res)
    out["task_truth"] = out.pop("truth", None)  # the tasks' truth columns (with tasks), beside the direction's
    out.update(truth=truth, linefit=lf, zenith=zenith, skipped=skipped)
    _source_truth(out, data_dir, split, ids, order)
    truth_file = Path(data_dir) / f"{split}_truth.parquet"
    if truth_file.is_file():
        cols = pl.read_parquet_schema(truth_file)
        want = [c for c in ("event_id", "energy", "event_type") if c in cols]
        if "event_id" in want and len(want) > 1:
            t = pl.read_parquet(truth_file, columns=want)
            tid = t["event_id"].to_numpy()
            rows = np.array([order.get(int(e), -1) for e in tid])
            keep = rows >= 0
            if "energy" in want:
                energy = np.full(n, np.nan)
                energy[rows[keep]] = t["energy"].to_numpy()[keep]
                out["energy"] = energy
            if "event_type" in want:
                et = np.full(n, "", dtype=object)
                et[rows[keep]] = np.asarray(t["event_type"].to_list(), dtype=object)[keep]
                out["event_type"] = et
    return out


def shared_events(members, data, batches):
    """(data_dir, event ids, split) that every loaded member is scored on (``eval_ids`` of each): one
    set for an ensemble or a stacker, or an error asking for --data when the members' differ."""
    targets = [eval_ids(info, data, batches) for _, info, *_ in members]
    if len({(str(Path(d).resolve()), tuple(ids)) for d, ids, _ in targets}) > 1:
        raise IcezooError("the runs were validated on different data or files; name the events to score them "
                          "on with --data DIR (and --batches SPEC)")
    return targets[0]


def eval_ids(info: dict, data: str | None, batches: str | None) -> tuple[Path, list[int], str]:
    """Which data and batch files to score: the run's validation split unless told otherwise."""
    split = info.get("split", {})
    missing = [k for k in ("data_dir", "val_batches") if k not in split]
    if missing and data is None:
        raise IcezooError(f"run.json of this run has no split.{missing[0]}: pass --data DIR (and --batches SPEC)")
    if data is None:
        data_dir = Path(split["data_dir"])
        if not data_dir.exists():
            raise IcezooError(f"the run's data {data_dir} is gone; pass --data DIR")
        if batches:
            return data_dir, parse_batches(batches, list_batches(data_dir, "train")), f"batches {batches}"
        return data_dir, [int(b) for b in split["val_batches"]], "val"
    data_dir = Path(data)
    available = list_batches(data_dir, "train")
    if batches:
        return data_dir, parse_batches(batches, available), f"batches {batches} of {data_dir}"
    if Path(data_dir).resolve() == Path(split.get("data_dir", "/nonexistent")).resolve():
        return data_dir, [int(b) for b in split["val_batches"]], "val"
    stored = read_split(data_dir)
    if stored is None and len(available) == 1:  # data the run never saw, in one file: score all of it
        return data_dir, available, f"all of {data_dir} (one batch file)"
    _, val = split_batches(available, "cycle", stored.val_spec if stored else None)
    return data_dir, val, f"val of {data_dir}"


def require_events(n: int, data_dir, ids: list[int], skipped: int | None = None) -> None:
    """Refuse to score zero events (a mean of nothing is NaN, and NaN is not JSON): one line, before
    anything is written."""
    if n == 0:
        why = f"all {skipped} have" if skipped else "every event has"
        raise IcezooError(f"{data_dir}: batch(es) {format_batches(ids)}: {why} fewer than 2 pulses (the model scores "
                          f"events with 2 or more): nothing to score; nothing was written")


@dataclass
class Scored:
    """A run's model scored on a split: the evaluation core that ``evaluate`` and the studies'
    ``score_run`` share. ``result`` holds the split, data, batch files, checkpoint, the summary of
    the errors and the events skipped; ``note`` warns of a run that has not finished."""

    run: RunDir
    info: dict[str, Any]
    config: Any
    model: Any
    res: dict[str, Any]
    err: np.ndarray
    result: dict[str, Any]
    note: str | None


def score(run: str | Path, runs_dir: str | Path = "runs", data: str | None = None, batches: str | None = None,
          batch_size: int = 256, device: str | None = None, warn=None) -> Scored:
    """Load a run's model and score it on ``data``/``batches`` (default: its validation split);
    ``warn`` hears the note on an unfinished run before the scoring starts."""
    run_dir, info, config, model, ckpt = load_run_model(run, runs_dir)
    note = unfinished_note(run_dir, info, ckpt)
    if note and warn is not None:
        warn(note)
    dev = pick_device(None, device)
    model.to(dev)
    data_dir, ids, split_name = eval_ids(info, data, batches)
    res = collect(model, data_dir, "train", ids, batch_size, dev)
    err = angular_error(res["direction"], res["truth"])
    require_events(len(err), data_dir, ids, res["skipped"])
    result: dict[str, Any] = {"split": split_name, "data": str(data_dir), "batches": format_batches(ids),
                              "checkpoint": str(ckpt), **summary(err), "skipped_lt2_pulses": int(res["skipped"])}
    return Scored(RunDir(run_dir), info, config, model, res, err, result, note)


def evaluate(run: str, data: str | None = None, batches: str | None = None, runs_dir: str | Path = "runs",
             batch_size: int = 256, device: str | None = None, plots: bool = True, echo=print) -> dict[str, Any]:
    """``icezoo evaluate RUN``: the score, LineFit on the same events, kappa coverage, plots; the
    result goes to metrics.json, and to run.json as the run's score when it is a finished run's
    validation score."""
    scored = score(run, runs_dir, data, batches, batch_size, device,
                   warn=lambda note: print(note + "; the evaluation is not recorded as its score", file=sys.stderr))
    run_dir, res, err, result = scored.run, scored.res, scored.err, scored.result
    if res.get("linefit") is not None:
        lf_err = angular_error(res["linefit"], res["truth"])
        lf = summary(lf_err)
        result.update(linefit_mean=lf["mean"], linefit_median=lf["median"], linefit_containment68=lf["containment68"],
                      linefit_ci95=lf["ci95"], improvement_ci95=bootstrap_ci(lf_err - err))
    else:
        lf_err = None
        result["linefit_mean"] = None
    kappa = res["kappa"]
    if np.isfinite(kappa).all() and len(kappa):
        qs = np.array([0.1, 0.25, 0.5, 0.68, 0.9])
        cover = [float(np.mean(err <= vmf_cone(kappa, q))) for q in qs]
        result["kappa_coverage"] = {f"{q:g}": c for q, c in zip(qs, cover)}
    if plots and len(err):
        result["plots"] = make_plots(run_dir.plots, res, err, lf_err, scored.config.name, run_dir.calibration())
        history = run_dir.history()
        if history:
            plot_curves(run_dir.plots / "learning_curve.png", {run_dir.name: history}, train_loss=True)
            result["plots"].append("learning_curve.png")
    tasks = score_tasks(scored.model, res, run_dir.plots if plots and len(err) else None, scored.config.name)
    if tasks is not None:  # a direction-only pipeline's result has no "tasks" key
        result["tasks"] = tasks
        result.setdefault("plots", []).extend(p for t in tasks.values() for p in t["plots"])
    result["time"] = now_iso()
    # only a finished run's evaluation is its ledger score (a snapshot mid-training is not), and only
    # when it is still finished now (a run that finishes during this evaluation drops older scores)
    run_dir.record_evaluation(result, ledger=result["split"] == "val" and scored.note is None
                              and run_dir.info().get("status") == "done")
    run_dir.log()(f"evaluate on {result['split']} ({result['n_events']} events): mean {result['mean']}, "
                  f"LineFit {result.get('linefit_mean')}", echo=False)
    if echo:
        print_result(result, run_dir.path, echo)
        if tasks is not None:
            print_tasks(tasks, echo)
    return result


def print_result(result: dict[str, Any], run_dir: Path, echo=print) -> None:
    table = Table(title=f"{run_dir.name}: {result['split']} ({result['n_events']:,} events, batches {result['batches']}; "
                        f"{result['skipped_lt2_pulses']} with < 2 pulses not scored)")
    for col in ("", "mean (Kaggle score)", "95% CI of mean", "median", "68% containment"):
        table.add_column(col)

    def fmt(v):
        return "-" if v is None else f"{v:.4f}"

    table.add_row("model", fmt(result["mean"]), f"[{fmt(result['ci95'][0])}, {fmt(result['ci95'][1])}]",
                  fmt(result["median"]), fmt(result["containment68"]))
    if result.get("linefit_mean") is not None:
        table.add_row("LineFit", fmt(result["linefit_mean"]),
                      f"[{fmt(result['linefit_ci95'][0])}, {fmt(result['linefit_ci95'][1])}]",
                      fmt(result["linefit_median"]), fmt(result["linefit_containment68"]))
    Console().print(table)
    if result.get("improvement_ci95"):
        lo, hi = result["improvement_ci95"]
        echo(f"LineFit - model: {result['linefit_mean'] - result['mean']:+.4f} rad (paired 95% CI [{lo:+.4f}, {hi:+.4f}])")
    if result.get("kappa_coverage"):
        echo("vMF cone coverage (nominal -> observed): " +
             ", ".join(f"{k} -> {v:.3f}" for k, v in result["kappa_coverage"].items()))
    if result.get("plots"):
        echo(f"plots: {', '.join(result['plots'])} in {run_dir / 'plots'}")


# ------------------------------------------------------------------------------ plots
def _binned(x: np.ndarray, y: np.ndarray, edges: np.ndarray):
    idx = np.digitize(x, edges) - 1
    centers, mean, median, count = [], [], [], []
    for b in range(len(edges) - 1):
        sel = idx == b
        if sel.sum() < 5:
            continue
        centers.append(0.5 * (edges[b] + edges[b + 1]))
        mean.append(y[sel].mean())
        median.append(np.median(y[sel]))
        count.append(int(sel.sum()))
    return np.array(centers), np.array(mean), np.array(median), np.array(count)


def make_plots(out_dir: Path, res: dict, err: np.ndarray, lf_err: np.ndarray | None, title: str,
               calibration: dict | None = None) -> list[str]:
    written = []
    save = saver(out_dir, written)  # PNG to a temporary name, then renamed: no half-written plot

    def versus(x, edges, xlabel, fname, logx=False):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for e, label, style in ((err, "model", "-o"), (lf_err, "LineFit", "--s")):
            if e is None:
                continue
            c, m, md, _ = _binned(x, e, edges)
            ax.plot(c, m, style, label=f"{label} mean", ms=3)
            ax.plot(c, md, style, label=f"{label} median", ms=3, alpha=0.5)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("angular error (rad)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        save(fig, fname)

    versus(res["zenith"], np.linspace(0, np.pi, 19), "true zenith (rad)", "resolution_vs_zenith.png")
    npul = res["n_pulses"].astype(np.float64)
    edges = np.unique(np.geomspace(2, max(3, npul.max() + 1), 16).round())
    versus(npul, edges, "pulses in the event", "resolution_vs_pulses.png", logx=True)
    energy = res.get("energy")
    if energy is not None and np.isfinite(energy).any() and (energy > 0).any():
        pos = energy[energy > 0]
        versus(energy, np.geomspace(pos.min(), pos.max() * 1.0001, 13), "true energy (GeV)",
               "resolution_vs_energy.png", logx=True)
    et = res.get("event_type")
    if et is not None and (et != "").any():
        types = sorted(t for t in set(et.tolist()) if t)
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        x = np.arange(len(types))
        ax.bar(x - 0.2, [err[et == t].mean() for t in types], 0.4, label="model")
        if lf_err is not None:
            ax.bar(x + 0.2, [lf_err[et == t].mean() for t in types], 0.4, label="LineFit")
        ax.set_xticks(x, [f"{t}\n(n={int((et == t).sum())})" for t in types], fontsize=8)
        ax.set_ylabel("mean angular error (rad)")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        save(fig, "resolution_by_event_type.png")
    kappa = res["kappa"]
    if np.isfinite(kappa).all() and len(kappa) > 20:
        _kappa_calibration(save, err, kappa, title, calibration)
    return written


def _kappa_calibration(save, err: np.ndarray, kappa: np.ndarray, title: str, calibration: dict | None = None) -> None:
    """Median error per predicted-kappa bin against the vMF median, and the coverage of the vMF
    credible cones against their nominal level (kappa_calibration.png, through ``save``); with the
    run's ``calibration`` (icezoo calibrate), the coverage after it beside the one before (on these
    events, which include the half the map was fitted on)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    lk = np.log10(np.maximum(kappa, 1e-6))
    edges = np.quantile(lk, np.linspace(0, 1, 13))
    edges[-1] += 1e-9
    c, _, md, _ = _binned(lk, err, np.unique(edges))
    a1.plot(10**c, md, "-o", ms=3, label="observed median error")
    kk = np.geomspace(max(kappa.min(), 1e-3), kappa.max() + 1e-9, 100)
    a1.plot(kk, vmf_cone(kk, 0.5), "--", label="vMF median for this kappa")
    a1.set_xscale("log")
    a1.set_xlabel("predicted kappa")
    a1.set_ylabel("angular error (rad)")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    qs = np.linspace(0.05, 0.95, 19)
    cover = [np.mean(err <= vmf_cone(kappa, q)) for q in qs]
    a2.plot(qs, cover, "-o", ms=3, label="model" if calibration is None else "model, before calibration")
    if calibration is not None:
        from icezoo.engine.vmf import cone_radius

        a2.plot(qs, [np.mean(err <= cone_radius(calibration, kappa, q)) for q in qs], "-s", ms=3,
                label=f"after calibration ({calibration['a']:.3g} kappa^{calibration['b']:.3g})")
    a2.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    a2.set_xlabel("nominal vMF cone coverage")
    a2.set_ylabel("observed coverage")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    fig.suptitle(f"{title}: kappa calibration")
    fig.tight_layout()
    save(fig, "kappa_calibration.png")


# ------------------------------------------------------------------------------ ensembles and TTA
def truth_vectors(data_dir, split: str, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(event ids sorted, float64 true unit directions) of batch files ``ids``, from the meta."""
    eids, vecs = [], []
    for bid in ids:
        meta = read_meta(data_dir, split, bid)
        if "azimuth" not in meta:
            raise IcezooError(f"{data_dir}/{split}: batch {bid} has no truth (azimuth/zenith): cannot evaluate")
        eids.append(meta["event_id"].astype(np.int64))
        vecs.append(angles_to_vector(meta["azimuth"].astype(np.float64), meta["zenith"].astype(np.float64)))
    eid, vec = np.concatenate(eids), np.concatenate(vecs)
    order = np.argsort(eid, kind="stable")
    return eid[order], vec[order]


def evaluate_members(runs: list[str], data: str | None = None, batches: str | None = None, runs_dir="runs",
                     tta: int = 1, device: str | None = None, batch_size: int = 256, echo=print) -> dict:
    """Score each run, each with ``tta`` rotations when asked, and (for several runs) their ensemble,
    on the same events; each row is compared with the best single run without TTA by a paired
    bootstrap 95% interval."""
    tta_angles(tta)  # a bad --tta is an error before any model is loaded
    distinct_runs(runs, runs_dir)
    members = [load_run_model(r, runs_dir) for r in runs]
    for run_dir, info, _, _, ckpt in members:
        note = unfinished_note(run_dir, info, ckpt)
        if note:
            print(note, file=sys.stderr)
    data_dir, ids, split_name = shared_events(members, data, batches)
    dev = pick_device(None, device)
    truth_ids, truth = truth_vectors(data_dir, "train", ids)
    views = sorted({1, tta})
    preds: dict[str, dict[str, np.ndarray]] = {}
    by_view: dict[int, list] = {n: [] for n in views}
    passes = len(members) * sum(views)
    if echo:  # the only line before the work: TTA is one model pass per view
        print(f"evaluate: {len(members)} run(s) x {' + '.join(map(str, views))} view(s) = {passes} model pass(es) "
              f"over {len(truth_ids):,} events of {split_name}", file=sys.stderr)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True, disable=not echo) as bar:
        task = bar.add_task("model passes", total=passes)
        for run_dir, info, config, model, _ in members:
            model.to(dev)
            precision = (info.get("precision") or {}).get("final") or config.train.precision
            for n in views:
                p = member_predictions(model, data_dir, "train", ids, dev, precision, n, batch_size,
                                       on_view=lambda: bar.advance(task))
                preds[run_dir.name + (f" + TTA {n}" if n > 1 else "")] = p
                by_view[n].append(p)
    singles = [run_dir.name for run_dir, *_ in members]
    if len(members) > 1:
        for n in views:
            preds["ensemble" + (f" + TTA {n}" if n > 1 else "")] = ensemble_of(by_view[n])
    errors = {}
    for label, p in preds.items():
        pos = np.searchsorted(truth_ids, p["event_id"])
        errors[label] = (p["event_id"], angular_error(p["direction"], truth[pos]))
    require_events(min(len(e) for _, e in errors.values()), data_dir, ids)
    best = min(singles, key=lambda s: errors[s][1].mean())
    result: dict = {"split": split_name, "data": str(data_dir), "tta": tta, "reference": best, "rows": {}}
    for label, (eid, err) in errors.items():
        row = summary(err)
        if label != best:
            pr = paired(eid, err, *errors[best])
            row.update(diff=pr.diff, diff_ci95=list(pr.ci95), paired_n=pr.n)
        result["rows"][label] = row
    if echo:
        table = Table(title=f"{len(members)} run(s) on {split_name} of {data_dir} (batches {ids[0]}..{ids[-1]})"
                            + (f", TTA {tta} rotations about the vertical" if tta > 1 else ""))
        for col in ("", "events", "mean (Kaggle score)", "95% CI", "median", f"Δ vs {best} [paired 95% CI]"):
            table.add_column(col)
        for label, r in result["rows"].items():
            d = "reference" if label == best else f"{r['diff']:+.4f} [{r['diff_ci95'][0]:+.4f}, {r['diff_ci95'][1]:+.4f}]"
            table.add_row(label, f"{r['n_events']:,}", f"{r['mean']:.4f}", f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]",
                          f"{r['median']:.4f}", d)
        Console().print(table)
    return result


def plot_runs(names: list[str], runs_dir: str | Path, out: Path) -> list[str]:
    """``icezoo runs --plot A B``: the named runs' validation curves overlaid in ``out``; returns
    the run names plotted. ``out`` is never one of the runs' own files (:func:`check_output`)."""
    check_output(out, "--plot-out", dirs=[resolve_run(n, Path(runs_dir)) for n in names])
    curves = {}
    for name in names:
        run = RunDir.find(name, Path(runs_dir))
        history = run.history()
        if not history:
            raise IcezooError(f"{run.path}: no finished epoch yet (no validation curve)")
        curves[run.name] = history
    plot_curves(out, curves)
    return list(curves)


def plot_curves(out: Path, curves: dict[str, list[dict[str, Any]]], train_loss: bool = False) -> Path:
    """Validation mean angular error per epoch of each run (``curves``: name -> history), and with
    ``train_loss`` the training loss on a second axis: the learning curve of one run, or several
    runs overlaid (``icezoo runs --plot A B``)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax2 = ax.twinx() if train_loss else None
    for name, history in curves.items():
        epochs = [h.get("epoch", i) + 1 for i, h in enumerate(history)]
        val = [h.get("val_mean") for h in history]
        line, = ax.plot(epochs, [np.nan if v is None else v for v in val], "-o", ms=3, label=f"{name} validation")
        if ax2 is not None:
            loss = [h.get("train_loss") for h in history]
            ax2.plot(epochs, [np.nan if v is None else v for v in loss], "--s", ms=3, color=line.get_color(),
                     alpha=0.6, label=f"{name} training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation mean angular error (rad)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if ax2 is not None:
        ax2.set_ylabel("training loss (epoch mean)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8)
    fig.tight_layout()
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return out
