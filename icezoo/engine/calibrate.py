"""``icezoo calibrate RUN``: a monotone map from the model's predicted kappa to a calibrated kappa.

The form is ``kappa_cal = a * kappa**b`` (a > 0, b > 0: monotone), fitted by maximum likelihood
of the observed angular errors under the von Mises-Fisher distribution on the sphere, whose
density in ``c = cos(error)`` is ``kappa * exp(-kappa (1 - c)) / (1 - exp(-2 kappa))``, then the
monotone level map of :mod:`icezoo.engine.vmf` (quantiles of the cone statistic). It is
fitted on one half of the run's validation events (a seeded random half) and checked on the other:
the coverage of the vMF cones at nominal 0.5, 0.68 and 0.9, before and after, on the held-out half.
The map is stored with the run as JSON (``RunDir.write_calibration``) and applied
(:func:`icezoo.engine.vmf.apply`) by ``icezoo predict`` and drawn by ``icezoo evaluate``'s coverage
plot. Why this form: docs/engine.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from icezoo.core.errors import IcezooError
from icezoo.engine.evaluate import score
from icezoo.engine.runs import now_iso
from icezoo.engine.vmf import (FORM, LEVELS, apply, calibrated_coverage, cone_probability, coverage,
                               neg_log_likelihood)


def fit(kappa: np.ndarray, err: np.ndarray) -> dict[str, float]:
    """(a, b) of ``a * kappa**b`` maximising the vMF likelihood of ``err`` (Nelder-Mead on log a, log b)."""
    from scipy.optimize import minimize

    kappa = np.maximum(np.asarray(kappa, dtype=np.float64), 1e-6)
    err = np.asarray(err, dtype=np.float64)
    if len(err) < 10:
        raise IcezooError(f"calibration needs at least 10 events with a kappa, got {len(err)}")

    def loss(p):
        return neg_log_likelihood(math.exp(p[0]) * kappa ** math.exp(p[1]), err)

    best = minimize(loss, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-10, "maxiter": 4000})
    return {"a": float(math.exp(best.x[0])), "b": float(math.exp(best.x[1]))}


def split_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the fit half and the held-out half of ``n`` events (seeded, disjoint)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def fit_and_check(kappa: np.ndarray, err: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Fit on one half, coverage before/after on the other half; the calibration record (JSON-able)."""
    fit_idx, check_idx = split_halves(len(err), seed)
    cal = {"form": FORM, **fit(kappa[fit_idx], err[fit_idx])}
    # the levels: the fitting half's quantiles of the calibrated kappa's cone statistic (PIT)
    pit = cone_probability(apply(cal, kappa[fit_idx]), err[fit_idx])
    grid = np.round(np.linspace(0.01, 0.99, 99), 2)
    cal["levels"] = {"nominal": grid.tolist(), "vmf": np.quantile(pit, grid).tolist()}
    held_k, held_e = kappa[check_idx], err[check_idx]
    cal.update(fit_events=int(len(fit_idx)), check_events=int(len(check_idx)), seed=seed,
               coverage_before=coverage(held_e, held_k), coverage_kappa_only=coverage(held_e, apply(cal, held_k)),
               coverage_after=calibrated_coverage(cal, held_e, held_k),
               nll_before=neg_log_likelihood(held_k, held_e), nll_after=neg_log_likelihood(apply(cal, held_k), held_e))
    return cal


def calibrate(run: str, runs_dir: str | Path = "runs", data: str | None = None, batches: str | None = None,
              batch_size: int = 256, device: str | None = None, seed: int = 0, echo=print) -> dict[str, Any]:
    """``icezoo calibrate RUN``: fit the kappa map on half the run's validation events, check it on
    the other half, store it with the run (calibration.json) and print the held-out coverage."""
    import sys

    scored = score(run, runs_dir, data, batches, batch_size, device,
                   warn=lambda note: print(note + "; calibrating its current checkpoint", file=sys.stderr))
    kappa, err = scored.res["kappa"], scored.err
    if not len(kappa) or not np.isfinite(kappa).all():
        raise IcezooError(f"{scored.run.path}: the pipeline's head predicts no kappa: nothing to calibrate")
    cal = fit_and_check(kappa, err, seed)
    cal.update(split=scored.result["split"], data=scored.result["data"], batches=scored.result["batches"],
               checkpoint=scored.result["checkpoint"], time=now_iso())
    scored.run.write_calibration(cal)
    scored.run.log()(f"calibrate: a {cal['a']:.4g}, b {cal['b']:.4g}; held-out coverage "
                     f"{cal['coverage_before']} -> {cal['coverage_after']}", echo=False)
    if echo:
        print_calibration(cal, scored.run.calibration_file, echo)
    return cal


def print_calibration(cal: dict[str, Any], path: Path, echo=print) -> None:
    echo(f"kappa_cal = {cal['a']:.4g} * kappa^{cal['b']:.4g}  (fitted on {cal['fit_events']:,} events of "
         f"{cal['split']}, checked on the other {cal['check_events']:,})")
    echo("held-out vMF cone coverage, nominal: before -> calibrated kappa alone -> after (kappa and levels)")
    for q in cal["coverage_before"]:
        echo(f"  {q}: {cal['coverage_before'][q]:.3f} -> {cal['coverage_kappa_only'][q]:.3f} -> "
             f"{cal['coverage_after'][q]:.3f}")
    echo(f"held-out mean vMF negative log-likelihood: {cal['nll_before']:.4f} -> {cal['nll_after']:.4f}")
    echo(f"wrote {path}")
