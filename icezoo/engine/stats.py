"""Bootstrap intervals, and paired comparisons of two models on the same validation events.

Two models scored on the same events make errors that move together (hard events are hard for
both), so the difference of their mean errors is far better measured per event: d_i = a_i - b_i,
its mean, and a percentile bootstrap 95% interval of that mean (events resampled with
replacement, the same resample for both models). Events are matched by event_id; only events
both models scored count. Intervals: percentile bootstrap, 1,000 resamples, seed 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icezoo.core.errors import IcezooError

N_BOOT = 1000

Z95 = 1.959963984540054
Z80 = 0.8416212335729143  # one-sided, for 80% power


def bootstrap_ci(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> list[float]:
    """Percentile bootstrap 95% interval of the mean of ``values``."""
    rng = np.random.default_rng(seed)
    n = len(values)
    means = np.empty(n_boot)
    step = max(1, min(n_boot, 20_000_000 // max(n, 1)))  # resamples per chunk, bounded memory
    for start in range(0, n_boot, step):
        k = min(step, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))
        means[start:start + k] = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return [float(lo), float(hi)]


@dataclass(frozen=True)
class Paired:
    """Mean of (a - b) per event, its bootstrap 95% interval, and what it rests on."""

    n: int
    mean_a: float
    mean_b: float
    diff: float
    ci95: tuple[float, float]
    sd: float  # standard deviation of the per-event differences
    frac_a_better: float  # share of events where a's error is smaller

    @property
    def excludes_zero(self) -> bool:
        return self.ci95[0] > 0 or self.ci95[1] < 0

    def events_to_resolve(self, effect: float) -> int | None:
        """Validation events needed to see a true difference of ``effect`` rad with 80% power at the
        two-sided 5% level, given the spread of the per-event differences seen here."""
        if not effect or not np.isfinite(self.sd) or self.sd == 0:
            return None
        return int(np.ceil(((Z95 + Z80) * self.sd / abs(effect)) ** 2))


def align(ids_a: np.ndarray, err_a: np.ndarray, ids_b: np.ndarray, err_b: np.ndarray):
    """(common event ids sorted, a's errors, b's errors) on the events both have."""
    ids_a, ids_b = np.asarray(ids_a, np.int64), np.asarray(ids_b, np.int64)
    for ids, name in ((ids_a, "a"), (ids_b, "b")):
        if len(np.unique(ids)) != len(ids):
            raise IcezooError(f"paired comparison: model {name} scored an event twice")
    common, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
    return common, np.asarray(err_a, np.float64)[ia], np.asarray(err_b, np.float64)[ib]


def paired(ids_a, err_a, ids_b, err_b, n_boot: int = N_BOOT, seed: int = 0) -> Paired:
    """Compare model a with model b on the events both scored (a - b: negative = a better)."""
    common, a, b = align(ids_a, err_a, ids_b, err_b)
    if not len(common):
        raise IcezooError("paired comparison: the two models share no scored event")
    d = a - b
    lo, hi = bootstrap_ci(d, n_boot, seed)
    return Paired(n=len(d), mean_a=float(a.mean()), mean_b=float(b.mean()), diff=float(d.mean()), ci95=(lo, hi),
                  sd=float(d.std(ddof=1)) if len(d) > 1 else float("nan"), frac_a_better=float(np.mean(a < b)))


def reading(p: Paired, log: str, seed_diffs: list[float] | None = None) -> str:
    """The measured difference read against the log's finding for variant a against reference b;
    with several seeds, a resolved difference also needs every seed's difference on its side."""
    if p.excludes_zero and seed_diffs and len(seed_diffs) > 1 and not (
            all(d < 0 for d in seed_diffs) or all(d > 0 for d in seed_diffs)):
        return "inconclusive (the seeds disagree)"
    if log == "same":
        return "consistent (no difference resolved)" if not p.excludes_zero else (
            "contradicted (a difference was resolved)")
    if not p.excludes_zero:
        return "inconclusive (CI includes 0)"
    measured = "better" if p.ci95[1] < 0 else "worse"
    if log == "unknown":
        return f"{measured} (log silent)"
    return "reproduced" if measured == log else "contradicted"
