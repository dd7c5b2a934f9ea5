"""``icezoo evaluate`` for the tasks beside the direction: each task's standard figures (by its
``family``, :mod:`icezoo.engine.task_metrics`) with bootstrap 95% intervals, its plots
(:mod:`icezoo.engine.task_plots`), its one ledger score, and the console tables.

The truth a task is scored against is the one it trains on: the loader's ``Batch.truth`` columns
(``Task.columns``), read through the task's own rules (``Task.valid``: an event without a usable
truth value, e.g. a vertex further out than the task's ``max_distance``, is not scored; the
classes of a classification from its truth column). Energy is scored in log10 E (GeV).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from icezoo.engine import task_metrics as M
from icezoo.engine import task_plots as P
from icezoo.engine.stats import N_BOOT


def _valid(task, truth: dict[str, np.ndarray]) -> np.ndarray:
    """The task's own rule for which events have a usable truth (``Task.valid``), as numpy."""
    t = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in truth.items()}
    with torch.no_grad():
        return task.valid(t).cpu().numpy().astype(bool)


def _classes(task, truth: dict[str, np.ndarray]) -> np.ndarray:
    """The true class index of every event (-1: none), by the task's own mapping of its truth column."""
    t = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in truth.items()}
    with torch.no_grad():
        y = task.classes(t) if hasattr(task, "classes") else task._classes(t)
    return np.nan_to_num(y.cpu().numpy(), nan=-1.0).astype(np.int64)


def _value_and_sigma(outputs: dict[str, np.ndarray]) -> tuple[str, np.ndarray, np.ndarray | None]:
    """(name, values, sigma or None) of a scalar regression's output columns (``X`` and ``X_sigma``)."""
    name = next(k for k in outputs if not k.endswith("_sigma"))
    return name, outputs[name], outputs.get(f"{name}_sigma")


def _figures(task, outputs: dict[str, np.ndarray], truth: dict[str, np.ndarray], n_boot: int) -> tuple[dict, tuple]:
    """(figures, what the plot needs) of one task on the scored events."""
    family = task.family
    valid = _valid(task, truth)
    if family == "energy":
        col = type(task).columns(task.config)[0]
        true = np.where(valid, np.log10(np.where(truth[col] > 0, truth[col], 1.0)), np.nan)
        _, pred, sigma = _value_and_sigma(outputs)
        return M.energy_metrics(pred, true, sigma, n_boot=n_boot), (true, pred)
    if family == "regression":
        col = type(task).columns(task.config)[0]
        name, pred, sigma = _value_and_sigma(outputs)
        true = truth[col]
        if getattr(task.config, "log10", False):
            true = np.log10(np.where(true > 0, true, 1.0))
        true = np.where(valid, true, np.nan)
        return M.regression_metrics(pred, true, sigma, n_boot=n_boot), (name, true, pred)
    if family == "vertex":
        cols = type(task).columns(task.config)
        true = np.where(valid[:, None], np.stack([truth[c] for c in cols], axis=1), np.nan)
        pred = np.stack([outputs[f"vertex_{a}"] for a in "xyz"], axis=1)
        return M.vertex_metrics(pred, true, outputs.get("vertex_sigma"), n_boot=n_boot), (true, pred)
    if family == "classification":
        labels = list(task.labels())
        y = np.where(valid, _classes(task, truth), -1)
        if len(outputs) == 1 and len(labels) == 2:  # one probability: that of its class (p_track)
            (col, p), = outputs.items()
            pos = labels.index(col[2:]) if col[2:] in labels else 1
            yy = np.where(y >= 0, (y == pos).astype(np.int64), -1)
            figures = M.binary_metrics(p, yy, (labels[1 - pos], labels[pos]), n_boot=n_boot)
            keep = yy >= 0
            return figures, ({labels[pos]: (p[keep], yy[keep] == 1)},)
        prob = np.stack([outputs[f"p_{label}"] for label in labels], axis=1)
        figures = M.multiclass_metrics(prob, y, labels, n_boot=n_boot)
        keep = y >= 0
        return figures, ({label: (prob[keep, c], y[keep] == c) for c, label in enumerate(labels)},)
    raise ValueError(f"task family '{family}' has no standard figures")


def _plot(save, name: str, family: str, figures: dict, args: tuple, title: str) -> None:
    if family == "energy":
        P.energy_plot(save, name, args[0], args[1], figures, title)
    elif family == "regression":
        P.regression_plot(save, name, args[0], args[1], args[2], title)
    elif family == "vertex":
        P.vertex_plot(save, name, args[0], args[1], figures, title)
    elif family == "classification":
        P.roc_plot(save, name, args[0], figures, title)


def evaluate_tasks(model, task_outputs: dict[str, dict[str, np.ndarray]], truth: dict[str, np.ndarray],
                   plots_dir: Path | None, title: str, n_boot: int = N_BOOT) -> dict[str, dict[str, Any]]:
    """Every task of ``model`` scored: ``{task name: {family, figures, label, score, score_ci95, plots}}``;
    ``task_outputs`` holds each task's output columns and ``truth`` the truth columns, both on the
    direction's scored events; plots go to ``plots_dir`` (None: no plots)."""
    out: dict[str, dict[str, Any]] = {}
    for name, task in model.tasks.items():
        figures, args = _figures(task, task_outputs[name], truth, n_boot)
        label, value, ci = M.headline(task.family, figures)
        entry = {"family": task.family, "label": label, "score": value, "score_ci95": ci, "figures": figures,
                 "plots": []}
        if plots_dir is not None and figures.get("n_events", 0) > 1:
            saved: list[str] = []
            _plot(P.saver(plots_dir, saved), name, task.family, figures, args, title)
            entry["plots"] = saved
        out[name] = entry
    return out


# ------------------------------------------------------------------------------ console
def _f(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def _ci(ci, spec: str = ".4f") -> str:
    return "-" if not ci or ci[0] is None else f"[{format(ci[0], spec)}, {format(ci[1], spec)}]"


def _rows(family: str, f: dict) -> list[tuple[str, str, str]]:
    """(figure, value, 95% CI) rows of one task's table."""
    if family in ("energy", "regression"):
        rows = [("bias (median residual)", _f(f["bias"], "+.4f"), _ci(f["bias_ci95"], "+.4f")),
                ("resolution (68% half-width)", _f(f["resolution"]), _ci(f["resolution_ci95"])),
                ("68% interval of the residual", _ci(f["interval68"], "+.4f"), "")]
        if "sigma_coverage" in f:
            rows.append(("|residual| <= sigma (0.683 ideal)", _f(f["sigma_coverage"], ".3f"),
                         _ci(f["sigma_coverage_ci95"], ".3f")))
        return rows
    if family == "vertex":
        rows = [("median distance to the truth", _f(f["median_distance"], ".2f"), _ci(f["median_distance_ci95"], ".2f")),
                ("68% of events within", _f(f["distance68"], ".2f"), _ci(f["distance68_ci95"], ".2f"))]
        for axis, a in f.get("axes", {}).items():
            rows.append((f"{axis} resolution (bias {_f(a['bias'], '+.1f')})", _f(a["resolution"], ".2f"),
                         _ci(a["resolution_ci95"], ".2f")))
        if "sigma_coverage" in f:
            rows.append(("|residual| <= sigma (0.683 ideal)", _f(f["sigma_coverage"], ".3f"),
                         _ci(f["sigma_coverage_ci95"], ".3f")))
        return rows
    multi = "per_class" in f
    rows = [("ROC AUC" + (" (mean one-vs-rest)" if multi else f" ({f['classes'][1]})"), _f(f.get("auc")),
             _ci(f.get("auc_ci95"))),
            ("accuracy" + (" (most probable)" if multi else " at p = 0.5"), _f(f.get("accuracy")),
             _ci(f.get("accuracy_ci95")))]
    for name, c in f.get("per_class", {}).items():
        rows.append((f"AUC {name} vs rest (n={c['n_events']:,})", _f(c["auc"]), _ci(c["auc_ci95"])))
    for name, counts in zip(f["classes"], f.get("confusion") or []):
        rows.append((f"true {name}: predicted as", ", ".join(f"{n} {c}" for n, c in zip(counts, f["classes"])), ""))
    return rows


def _bands(f: dict) -> Table | None:
    """The energy figures per band of true log10 E."""
    if not f.get("bands"):
        return None
    table = Table(title="per band of true log10 E / GeV")
    for col in ("band", "events", "bias", "resolution", "95% CI"):
        table.add_column(col)
    for b in f["bands"]:
        table.add_row(f"[{b['log10_e_min']:g}, {b['log10_e_max']:g})", f"{b['n_events']:,}", _f(b["bias"], "+.3f"),
                      _f(b["resolution"], ".3f"), _ci(b["resolution_ci95"], ".3f"))
    return table


def print_tasks(tasks: dict[str, dict[str, Any]], echo=print) -> None:
    """One table per task: its figures with their bootstrap 95% intervals (energy: and per band)."""
    console = Console()
    for name, entry in tasks.items():
        f = entry["figures"]
        unit = " in log10 E" if entry["family"] == "energy" else ""
        table = Table(title=f"task {name} ({entry['family']}{unit}, {f.get('n_events', 0):,} events with truth)")
        for col in ("figure", "value", "95% CI"):
            table.add_column(col)
        for row in _rows(entry["family"], f):
            table.add_row(*row)
        console.print(table)
        bands = _bands(f) if entry["family"] == "energy" else None
        if bands is not None:
            console.print(bands)


# ------------------------------------------------------------------------------ wiring
def truth_columns(model) -> tuple[str, ...]:
    """The truth columns the model's tasks are scored against (none for a direction-only pipeline)."""
    return tuple(model.truth_columns()) if getattr(model, "tasks", None) else ()


def per_task(model, columns: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The flat output columns of :meth:`Pipeline.task_outputs` grouped by the task that writes them."""
    out = {}
    for name, task in model.tasks.items():
        with torch.no_grad():
            names = task.outputs(torch.zeros(1, task.out_dim))
        out[name] = {c: columns[c] for c in names}
    return out


def score_tasks(model, res: dict[str, Any], plots_dir: Path | None, title: str) -> dict[str, dict[str, Any]] | None:
    """``icezoo evaluate``'s task figures of an inference result (``res["tasks"]``, ``res["task_truth"]``);
    None for a direction-only pipeline (its evaluation stays exactly what it was)."""
    if not getattr(model, "tasks", None):
        return None
    return evaluate_tasks(model, per_task(model, res["tasks"]), res.get("task_truth") or {}, plots_dir, title)
