"""The standard figures of the non-direction tasks (energy, event type, vertex, any regression),
each with a bootstrap 95% interval: pure numpy, shared by ``icezoo evaluate``, the studies and the
ledger.

Conventions (those of IceCube reconstruction papers and GraphNeT's benchmarks):

- a *resolution* is the half-width of the central 68% interval of the residuals,
  ``(q84 - q16) / 2``: for Gaussian residuals it is sigma, and unlike the standard deviation it is
  not dominated by a few failed events; the *bias* is the median residual;
- energy is compared in log10 E (GeV): residual ``log10 E_pred - log10 E_true``, per band of true
  energy (one decade by default) and overall; with a predicted sigma, the *pull coverage* is the
  share of events with ``|residual| <= sigma`` (0.683 for a calibrated Gaussian sigma);
- classification: ROC AUC (Mann-Whitney, ties counted half), accuracy and confusion matrix at the
  0.5 threshold (binary) or of the most probable class (several classes, one-vs-rest AUC each);
- vertex: the distance between predicted and true vertex (median, 68% quantile) and the per-axis
  bias and resolution, in metres (the detector frame).

Intervals: percentile bootstrap over events, :data:`icezoo.engine.stats.N_BOOT` resamples, seed 0
(the mean's interval is :func:`icezoo.engine.stats.bootstrap_ci` itself).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from icezoo.core.errors import IcezooError
from icezoo.engine.stats import N_BOOT, bootstrap_ci

#: the 68% central interval's quantiles (one Gaussian sigma either side)
Q16, Q84 = 0.158655253931457, 0.841344746068543


def bootstrap_stat(stat: Callable[..., float], arrays: tuple[np.ndarray, ...], n_boot: int = N_BOOT,
                   seed: int = 0) -> list[float | None]:
    """Percentile bootstrap 95% interval of ``stat(*arrays)``, events (rows) resampled together;
    resamples where the statistic is undefined (NaN, e.g. an AUC of one class) are dropped."""
    n = len(arrays[0])
    if n < 2:
        return [None, None]
    rng = np.random.default_rng(seed)
    vals = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, size=n)
        vals[i] = stat(*(a[idx] for a in arrays))
    vals = vals[np.isfinite(vals)]
    if len(vals) < n_boot // 2:
        return [None, None]
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return [float(lo), float(hi)]


def half_width68(r: np.ndarray) -> float:
    """Half the width of the central 68% interval: sigma for Gaussian residuals."""
    if not len(r):
        return float("nan")
    lo, hi = np.quantile(r, [Q16, Q84])
    return float(0.5 * (hi - lo))


def _median(r: np.ndarray) -> float:
    return float(np.median(r)) if len(r) else float("nan")


def _finite(*arrays: np.ndarray) -> np.ndarray:
    keep = np.ones(len(arrays[0]), dtype=bool)
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        keep &= np.isfinite(a).all(axis=tuple(range(1, a.ndim))) if a.ndim > 1 else np.isfinite(a)
    return keep


def residual_summary(residual: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Bias (median), mean, resolution (68% half-width), the 68% interval and their intervals."""
    r = np.asarray(residual, dtype=np.float64)
    if not len(r):
        return {"n_events": 0, "bias": None, "bias_ci95": [None, None], "mean": None, "mean_ci95": [None, None],
                "resolution": None, "resolution_ci95": [None, None], "interval68": [None, None]}
    lo, hi = np.quantile(r, [Q16, Q84])
    return {"n_events": int(len(r)), "bias": _median(r), "bias_ci95": bootstrap_stat(_median, (r,), n_boot, seed),
            "mean": float(r.mean()), "mean_ci95": bootstrap_ci(r, n_boot, seed), "resolution": half_width68(r),
            "resolution_ci95": bootstrap_stat(half_width68, (r,), n_boot, seed),
            "interval68": [float(lo), float(hi)]}


def _coverage(residual: np.ndarray, sigma: np.ndarray | None, n_boot: int, seed: int) -> dict[str, Any]:
    """Share of events with ``|residual| <= sigma`` and its interval (0.683 when sigma is right)."""
    if sigma is None:
        return {}
    inside = (np.abs(residual) <= sigma).astype(np.float64)
    if not len(inside):
        return {}
    return {"sigma_coverage": float(inside.mean()), "sigma_coverage_ci95": bootstrap_ci(inside, n_boot, seed),
            "median_sigma": float(np.median(sigma))}


def regression_metrics(pred: np.ndarray, true: np.ndarray, sigma: np.ndarray | None = None,
                       n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """A generic regression's figures on the events where prediction and truth are finite."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if pred.shape != true.shape:
        raise IcezooError(f"regression figures: {pred.shape} predictions for {true.shape} true values")
    keep = _finite(pred, true) if sigma is None else _finite(pred, true, sigma)
    r = pred[keep] - true[keep]
    out = residual_summary(r, n_boot, seed)
    out.update(_coverage(r, None if sigma is None else np.asarray(sigma, np.float64)[keep], n_boot, seed))
    return out


def energy_bands(log_true: np.ndarray, width: float = 1.0, min_events: int = 20) -> np.ndarray:
    """Band edges in log10 E: whole multiples of ``width`` spanning the true energies; a band with
    fewer than ``min_events`` events at either end is merged into its neighbour."""
    x = np.asarray(log_true, np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        return np.zeros(0)
    lo, hi = np.floor(x.min() / width) * width, np.ceil(x.max() / width) * width
    edges = np.arange(lo, hi + 0.5 * width, width)
    if len(edges) < 2:
        edges = np.array([lo, lo + width])
    counts = np.histogram(x, edges)[0]
    while len(edges) > 2 and counts[0] < min_events:
        edges, counts = np.delete(edges, 1), np.r_[counts[0] + counts[1], counts[2:]]
    while len(edges) > 2 and counts[-1] < min_events:
        edges, counts = np.delete(edges, -2), np.r_[counts[:-2], counts[-2] + counts[-1]]
    return edges


def energy_metrics(log_pred: np.ndarray, log_true: np.ndarray, sigma: np.ndarray | None = None,
                   edges: np.ndarray | None = None, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """log10 E figures: overall bias, resolution and 68% interval (and the sigma coverage when the
    task predicts one), and the same per band of true log10 E (``edges``; default a decade each)."""
    log_pred, log_true = np.asarray(log_pred, np.float64), np.asarray(log_true, np.float64)
    sig = None if sigma is None else np.asarray(sigma, np.float64)
    keep = _finite(log_pred, log_true) if sig is None else _finite(log_pred, log_true, sig)
    p, t, s = log_pred[keep], log_true[keep], None if sig is None else sig[keep]
    out = regression_metrics(p, t, s, n_boot, seed)
    edges = energy_bands(t) if edges is None else np.asarray(edges, np.float64)
    bands = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (t >= lo) & ((t < hi) | ((hi == edges[-1]) & (t <= hi)))
        if sel.sum() < 2:
            continue
        band = {"log10_e_min": float(lo), "log10_e_max": float(hi)}
        band.update(regression_metrics(p[sel], t[sel], None if s is None else s[sel], n_boot, seed))
        bands.append(band)
    out["bands"] = bands
    return out


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for binary ``label`` (1 = positive): the probability
    that a random positive scores above a random negative, ties counted half (average ranks).
    NaN when one class is absent."""
    score = np.asarray(score, np.float64)
    label = np.asarray(label).astype(bool)
    n_pos = int(label.sum())
    n_neg = len(label) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s))
    # average rank (1-based) of each run of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = 0.5 * (starts + ends + 1)
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    score = np.asarray(score, np.float64)
    label = np.asarray(label).astype(bool)
    order = np.argsort(-score, kind="mergesort")
    s, y = score[order], label[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last event of each tied run
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def confusion(true: np.ndarray, pred: np.ndarray, n_classes: int) -> list[list[int]]:
    """Counts, rows the true class and columns the predicted one."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(true, np.int64), np.asarray(pred, np.int64)), 1)
    return m.tolist()


def _accuracy(correct: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    c = correct.astype(np.float64)
    return {"accuracy": float(c.mean()), "accuracy_ci95": bootstrap_ci(c, n_boot, seed)}


def binary_metrics(p: np.ndarray, label: np.ndarray, classes: tuple[str, str] = ("negative", "positive"),
                   n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """ROC AUC with its interval, accuracy and confusion matrix at the 0.5 threshold; ``p`` is the
    predicted probability of ``classes[1]`` (label 1)."""
    p, y = np.asarray(p, np.float64), np.asarray(label, np.int64)
    keep = np.isfinite(p) & (y >= 0)
    p, y = p[keep], y[keep]
    if not len(p):
        return {"n_events": 0, "classes": list(classes), "auc": None, "auc_ci95": [None, None]}
    auc = roc_auc(p, y)
    out = {"n_events": int(len(p)), "classes": list(classes), "positives": int(y.sum()),
           "auc": None if np.isnan(auc) else auc, "auc_ci95": bootstrap_stat(roc_auc, (p, y), n_boot, seed)}
    pred = (p >= 0.5).astype(np.int64)
    out.update(_accuracy(pred == y, n_boot, seed))
    out["confusion"] = confusion(y, pred, 2)
    return out


def multiclass_metrics(prob: np.ndarray, label: np.ndarray, classes: list[str], n_boot: int = N_BOOT,
                       seed: int = 0) -> dict[str, Any]:
    """One-vs-rest ROC AUC per class (and their mean), accuracy and confusion matrix of the most
    probable class; ``prob`` is [N, C], ``label`` the true class index (negative: unknown, skipped)."""
    prob, y = np.asarray(prob, np.float64), np.asarray(label, np.int64)
    if prob.ndim != 2 or prob.shape[1] != len(classes):
        raise IcezooError(f"classification figures: probabilities of shape {prob.shape} for {len(classes)} classes")
    keep = np.isfinite(prob).all(axis=1) & (y >= 0)
    prob, y = prob[keep], y[keep]
    out: dict[str, Any] = {"n_events": int(len(y)), "classes": list(classes), "per_class": {}}
    if not len(y):
        return {**out, "auc": None, "auc_ci95": [None, None]}
    aucs = []
    for c, name in enumerate(classes):
        auc = roc_auc(prob[:, c], y == c)
        aucs.append(auc)
        out["per_class"][name] = {"n_events": int((y == c).sum()), "auc": None if np.isnan(auc) else auc,
                                  "auc_ci95": bootstrap_stat(roc_auc, (prob[:, c], y == c), n_boot, seed)}
    mean_auc = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")

    def macro(pr, yy):
        vals = [roc_auc(pr[:, c], yy == c) for c in range(len(classes))]
        return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")

    out.update(auc=None if np.isnan(mean_auc) else mean_auc, auc_ci95=bootstrap_stat(macro, (prob, y), n_boot, seed))
    pred = prob.argmax(axis=1)
    out.update(_accuracy(pred == y, n_boot, seed))
    out["confusion"] = confusion(y, pred, len(classes))
    return out


def vertex_metrics(pred: np.ndarray, true: np.ndarray, sigma: np.ndarray | None = None, n_boot: int = N_BOOT,
                   seed: int = 0) -> dict[str, Any]:
    """Distance between predicted and true vertex [N, 3] (median and 68% quantile with intervals)
    and per-axis bias and resolution; with a predicted per-axis sigma [N], the share of axes with
    ``|residual| <= sigma``."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.ndim != 2 or pred.shape[1] != 3:
        raise IcezooError(f"vertex figures: need [N, 3] predictions and truth, got {pred.shape} and {true.shape}")
    sig = None if sigma is None else np.asarray(sigma, np.float64)
    keep = _finite(pred, true) if sig is None else _finite(pred, true, sig)
    pred, true = pred[keep], true[keep]
    d = np.linalg.norm(pred - true, axis=1)
    q68 = (lambda x: float(np.quantile(x, 0.68)) if len(x) else float("nan"))
    out: dict[str, Any] = {"n_events": int(len(d)), "median_distance": _median(d) if len(d) else None,
                           "median_distance_ci95": bootstrap_stat(_median, (d,), n_boot, seed),
                           "distance68": q68(d) if len(d) else None,
                           "distance68_ci95": bootstrap_stat(q68, (d,), n_boot, seed), "axes": {}}
    for i, axis in enumerate("xyz"):
        out["axes"][axis] = residual_summary(pred[:, i] - true[:, i], n_boot, seed)
    if sig is not None and len(d):
        r = (pred - true).reshape(-1)
        out.update(_coverage(r, np.repeat(sig[keep], 3), n_boot, seed))
    return out


#: the figure of each task family that the ledger keeps as the task's score, lower or higher better
HEADLINE = {"energy": ("resolution", "log10 E res"), "regression": ("resolution", "res"),
            "classification": ("auc", "AUC"), "vertex": ("median_distance", "median distance")}


def headline(family: str, figures: dict[str, Any]) -> tuple[str, float | None, list]:
    """(label, value, 95% interval) of a task's one score (:data:`HEADLINE`)."""
    key, label = HEADLINE.get(family, ("resolution", "res"))
    return label, figures.get(key), figures.get(f"{key}_ci95", [None, None])


def scores_text(tasks: dict[str, dict[str, Any]]) -> str:
    """The ledger's text of an evaluation's task scores: ``energy: log10 E res 0.2104 [0.2, 0.22]; ...``."""
    parts = []
    for name, entry in tasks.items():
        label, value, ci = entry.get("label"), entry.get("score"), entry.get("score_ci95") or [None, None]
        if value is None:
            continue
        text = f"{name}: {label} {value:.4g}"
        if ci[0] is not None:
            text += f" [{ci[0]:.4g}, {ci[1]:.4g}]"
        parts.append(text)
    return "; ".join(parts)
