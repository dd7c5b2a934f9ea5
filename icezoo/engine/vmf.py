"""The vMF cone on the sphere and the calibrated-kappa map of ``icezoo calibrate``: a leaf module
(numpy only) that evaluate, predict and the run directory share without importing each other.

For concentration kappa the angle between a vMF draw and its mean has
P(angle <= r) = (1 - exp(-kappa (1 - cos r))) / (1 - exp(-2 kappa)); :func:`vmf_cone` is its inverse.
The map is ``kappa_cal = a * kappa**b`` (:mod:`icezoo.engine.calibrate` fits it), followed by a
monotone map of the levels (quantile recalibration, Kuleshov et al. 2018, "Accurate uncertainties
for deep learning using calibrated regression"): the cone of coverage q is the calibrated kappa's
vMF cone at level ``levels.vmf`` interpolated at ``levels.nominal = q``, which corrects the part of the
miscalibration that is the errors' shape (heavier tails than a vMF) rather than their scale.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from icezoo.core.errors import IcezooError

#: the nominal coverages ``icezoo calibrate`` checks on its held-out half
LEVELS = (0.5, 0.68, 0.9)
#: the one form of map a calibration file may hold
FORM = "power"


def vmf_cone(kappa: np.ndarray, q: float | np.ndarray) -> np.ndarray:
    """Opening angle of the vMF (3D) cone holding probability q around the mean, for concentration
    kappa (the inverse of :func:`cone_probability`; kappa 0: the isotropic cone, pi/2 for q = 0.5)."""
    kappa = np.maximum(np.asarray(kappa, dtype=np.float64), 1e-9)
    c = 1.0 + np.log1p(-q * -np.expm1(-2.0 * kappa)) / kappa
    return np.arccos(np.clip(c, -1.0, 1.0))


def cone_probability(kappa: np.ndarray, r: np.ndarray) -> np.ndarray:
    """P(angle <= r) for a vMF with concentration ``kappa`` on the sphere."""
    kappa = np.maximum(np.asarray(kappa, dtype=np.float64), 1e-9)
    return -np.expm1(-kappa * (1.0 - np.cos(r))) / -np.expm1(-2.0 * kappa)


def coverage(err: np.ndarray, kappa: np.ndarray, levels=LEVELS) -> dict[str, float]:
    """Observed fraction of events whose error lies inside the vMF cone of each nominal level."""
    p = cone_probability(kappa, err)  # the event's error is inside the q-cone exactly when p <= q
    return {f"{q:g}": float(np.mean(p <= q)) for q in levels}


def neg_log_likelihood(kappa: np.ndarray, err: np.ndarray) -> float:
    """Mean negative vMF log-likelihood of angular errors ``err`` (density in cos(err))."""
    kappa = np.maximum(kappa, 1e-9)
    one_minus_c = 2.0 * np.sin(0.5 * np.asarray(err, dtype=np.float64)) ** 2  # 1 - cos, exact for small err
    return float(-np.mean(np.log(kappa) - kappa * one_minus_c - np.log(-np.expm1(-2.0 * kappa))))


def apply(cal: dict[str, Any] | None, kappa: np.ndarray) -> np.ndarray:
    """The calibrated kappa (``kappa`` itself when ``cal`` is None)."""
    kappa = np.asarray(kappa, dtype=np.float64)
    if cal is None:
        return kappa
    return cal["a"] * np.power(np.maximum(kappa, 0.0), cal["b"])


def cone_radius(cal: dict[str, Any] | None, kappa: np.ndarray, q: float) -> np.ndarray:
    """The cone (radians) holding the true direction with probability ``q`` after calibration ``cal``
    (the raw kappa's vMF cone when ``cal`` is None)."""
    if cal is None:
        return vmf_cone(kappa, q)
    return vmf_cone(apply(cal, kappa), float(np.interp(q, cal["levels"]["nominal"], cal["levels"]["vmf"])))


def calibrated_coverage(cal: dict[str, Any] | None, err: np.ndarray, kappa: np.ndarray, levels=LEVELS) -> dict[str, float]:
    """Observed fraction of events inside the calibrated cone of each nominal level."""
    return {f"{q:g}": float(np.mean(err <= cone_radius(cal, kappa, q))) for q in levels}


def check(cal: Any, path: Path) -> dict[str, Any]:
    """A calibration record read from ``path``, its shape checked: one IcezooError naming the field."""
    if not isinstance(cal, dict):
        raise IcezooError(f"{path}: unreadable (expected a JSON object)")
    if cal.get("form") != FORM:
        raise IcezooError(f"{path}: unreadable (form is {cal.get('form')!r}, expected {FORM!r})")
    for key in ("a", "b"):
        v = cal.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise IcezooError(f"{path}: unreadable ({key} is {v!r}, expected a finite number > 0)")
    lv = cal.get("levels")
    try:
        nominal, level = (np.asarray(lv[k], dtype=np.float64) for k in ("nominal", "vmf"))
        ok = nominal.ndim == 1 and nominal.shape == level.shape and len(nominal) >= 2 and \
            ((nominal >= 0) & (nominal <= 1) & (level >= 0) & (level <= 1)).all() and \
            (np.diff(nominal) > 0).all() and (np.diff(level) >= 0).all()
    except (TypeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise IcezooError(f"{path}: unreadable (levels must hold 'nominal' and 'vmf': equal-length increasing "
                          f"lists in [0, 1])")
    return cal
