"""``icezoo evaluate``'s plots of the non-direction tasks (PNG, in ``RUN/plots/``, written through
a temporary name like the direction's): energy true vs predicted with bias and resolution per band,
the ROC curve(s) of a classification, the vertex residuals per axis and the distance, a
regression's true vs predicted. The figures they draw are those of :mod:`icezoo.engine.task_metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import matplotlib
import numpy as np

from icezoo.core.atomic import atomic_path
from icezoo.engine.task_metrics import roc_curve

matplotlib.use("Agg")  # plots are files; no display
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)


def saver(out_dir: Path, written: list[str]) -> Callable[[Any, str], None]:
    """``save(fig, fname)``: PNG to a temporary name then renamed, the name appended to ``written``."""
    out_dir.mkdir(parents=True, exist_ok=True)

    def save(fig, fname: str) -> None:
        try:
            with atomic_path(out_dir / fname) as tmp:
                fig.savefig(tmp, dpi=110, format="png")
        finally:
            plt.close(fig)
        written.append(fname)

    return save


def _true_vs_pred(ax, true: np.ndarray, pred: np.ndarray, label: str) -> None:
    """2D histogram of predicted against true, with the diagonal."""
    keep = np.isfinite(true) & np.isfinite(pred)
    t, p = true[keep], pred[keep]
    lo, hi = float(min(t.min(), np.quantile(p, 0.005))), float(max(t.max(), np.quantile(p, 0.995)))
    if hi <= lo:
        hi = lo + 1.0
    ax.hist2d(t, p, bins=40, range=[[lo, hi], [lo, hi]], cmap="viridis", cmin=1)
    ax.plot([lo, hi], [lo, hi], "r--", lw=1, label="predicted = true")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")


def energy_plot(save, name: str, log_true: np.ndarray, log_pred: np.ndarray, figures: dict, title: str) -> None:
    """``<name>_energy.png``: true vs predicted log10 E, and bias and resolution per true-energy band."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    _true_vs_pred(a1, log_true, log_pred, "log10 E / GeV")
    bands = [b for b in figures.get("bands", []) if b.get("resolution") is not None]
    if bands:
        c = np.array([0.5 * (b["log10_e_min"] + b["log10_e_max"]) for b in bands])
        half = np.array([0.5 * (b["log10_e_max"] - b["log10_e_min"]) for b in bands])
        for key, fmt, label in (("resolution", "-o", "resolution (68% half-width)"), ("bias", "--s", "bias (median)")):
            v = np.array([b[key] for b in bands])
            ci = np.array([[np.nan if x is None else x for x in b[f"{key}_ci95"]] for b in bands])
            err = np.abs(np.vstack([v - ci[:, 0], ci[:, 1] - v]))
            a2.errorbar(c, v, xerr=half, yerr=np.nan_to_num(err), fmt=fmt, ms=3, capsize=2, label=label)
    a2.axhline(0, color="k", lw=0.8)
    a2.set_xlabel("true log10 E / GeV")
    a2.set_ylabel("log10 E residual")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    fig.suptitle(f"{title}: {name}")
    fig.tight_layout()
    save(fig, f"{name}_energy.png")


def roc_plot(save, name: str, scores: dict[str, tuple[np.ndarray, np.ndarray]], figures: dict, title: str) -> None:
    """``<name>_roc.png``: the ROC curve of each class (``scores``: class -> (score, is-that-class)),
    its AUC in the legend."""
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    per = figures.get("per_class", {})
    for cls, (s, y) in scores.items():
        fpr, tpr = roc_curve(s, y)
        auc = per.get(cls, {}).get("auc", figures.get("auc"))
        ax.plot(fpr, tpr, label=f"{cls} (AUC {auc:.3f})" if auc is not None else cls)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{title}: {name}")
    fig.tight_layout()
    save(fig, f"{name}_roc.png")


def vertex_plot(save, name: str, true: np.ndarray, pred: np.ndarray, figures: dict, title: str) -> None:
    """``<name>_vertex.png``: the residual of each axis and the distance to the true vertex."""
    keep = np.isfinite(true).all(axis=1) & np.isfinite(pred).all(axis=1)
    r = pred[keep] - true[keep]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    if len(r):
        span = float(np.quantile(np.abs(r), 0.99)) or 1.0
        for i, axis in enumerate("xyz"):
            res = figures.get("axes", {}).get(axis, {}).get("resolution")
            a1.hist(r[:, i], bins=60, range=(-span, span), histtype="step",
                    label=f"{axis} (res {res:.3g})" if res is not None else axis)
        d = np.linalg.norm(r, axis=1)
        a2.hist(d, bins=60, range=(0, float(np.quantile(d, 0.99)) or 1.0), histtype="step")
        med = figures.get("median_distance")
        if med is not None:
            a2.axvline(med, color="k", ls="--", lw=1, label=f"median {med:.3g}")
            a2.legend(fontsize=8)
    a1.set_xlabel("predicted - true vertex (m)")
    a1.set_ylabel("events")
    a1.legend(fontsize=8)
    a2.set_xlabel("distance to the true vertex (m)")
    a2.set_ylabel("events")
    fig.suptitle(f"{title}: {name}")
    fig.tight_layout()
    save(fig, f"{name}_vertex.png")


def regression_plot(save, name: str, column: str, true: np.ndarray, pred: np.ndarray, title: str) -> None:
    """``<name>_regression.png``: true vs predicted of a generic regression."""
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    _true_vs_pred(ax, true, pred, column)
    ax.set_title(f"{title}: {name}")
    fig.tight_layout()
    save(fig, f"{name}_regression.png")
