"""``icezoo evaluate A B --brightest F``: two runs paired on the same events, overall and on the
brightest fraction F of them by pulse count (the events a pulse cap truncates; issue 26).

Both runs are scored with :func:`icezoo.engine.evaluate.score` on the same data (default: their
validation split; they must agree), then compared event by event (:func:`icezoo.engine.stats.paired`:
mean error of a minus b, percentile-bootstrap 95% interval of the per-event differences).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from icezoo.core.errors import IcezooError
from icezoo.engine.evaluate import score
from icezoo.engine.stats import paired


def _row(p) -> dict[str, Any]:
    return {"events": p.n, "mean_a": p.mean_a, "mean_b": p.mean_b, "diff": p.diff, "ci95": list(p.ci95),
            "a_better_share": p.frac_a_better}


def compare_brightest(run_a: str, run_b: str, fraction: float = 0.1, runs_dir="runs", data: str | None = None,
                      batches: str | None = None, batch_size: int = 256, device: str | None = None) -> dict[str, Any]:
    """Paired comparison of ``run_a`` and ``run_b`` on every shared event and on the ``fraction`` of
    them with the most pulses (all pulses of the event, counted before any selection)."""
    if not 0 < fraction <= 1:
        raise IcezooError(f"--brightest {fraction}: expected a fraction in (0, 1]")
    a = score(run_a, runs_dir, data, batches, batch_size, device)
    b = score(run_b, runs_dir, data, batches, batch_size, device)
    if (a.result["data"], a.result["batches"]) != (b.result["data"], b.result["batches"]):
        raise IcezooError("the two runs were scored on different events; name them with --data DIR (and --batches)")
    ids_a, ids_b = a.res["event_id"], b.res["event_id"]
    common = np.intersect1d(ids_a, ids_b)
    n_pulses = dict(zip(ids_a.tolist(), a.res["n_pulses"].tolist()))
    counts = np.array([n_pulses[int(e)] for e in common])
    k = max(1, int(np.ceil(fraction * len(common))))
    bright = common[np.argsort(-counts, kind="stable")[:k]]
    keep_a, keep_b = np.isin(ids_a, bright), np.isin(ids_b, bright)
    top = paired(ids_a[keep_a], a.err[keep_a], ids_b[keep_b], b.err[keep_b])
    caps = {name: s.config.max_pulses if "sensor_tokens" not in _props(s.model.selection) else None
            for name, s in (("a", a), ("b", b))}
    bright_counts = np.sort(counts)[::-1][:k]
    return {"a": str(a.run.path), "b": str(b.run.path), "data": a.result["data"], "batches": a.result["batches"],
            "all": _row(paired(ids_a, a.err, ids_b, b.err)), "brightest": _row(top), "fraction": fraction,
            "bright_pulses": {"min": int(bright_counts.min()), "median": float(np.median(bright_counts)),
                              "max": int(bright_counts.max())},
            "pulse_cap": caps}


def _props(selection) -> frozenset[str]:
    return selection.declared_properties(selection.config)


def format_brightest(r: dict[str, Any]) -> str:
    """Lines for the terminal: both comparisons, a - b (negative: a better)."""
    bp = r["bright_pulses"]
    lines = [f"a = {r['a']}\nb = {r['b']}\non {r['data']} batches {r['batches']}; pulse cap a: "
             f"{r['pulse_cap']['a'] or 'none'}, b: {r['pulse_cap']['b'] or 'none'}"]
    for key, what in (("all", "every shared event"),
                      ("brightest", f"the brightest {100 * r['fraction']:g}% ({bp['min']}-{bp['max']} pulses, "
                                    f"median {bp['median']:.0f})")):
        x = r[key]
        lines.append(f"  {what}: {x['events']} events, mean error a {x['mean_a']:.4f}, b {x['mean_b']:.4f} rad; "
                     f"a - b {x['diff']:+.4f} [{x['ci95'][0]:+.4f}, {x['ci95'][1]:+.4f}] (95% bootstrap), "
                     f"a better on {100 * x['a_better_share']:.0f}%")
    return "\n".join(lines)
