"""``icezoo stack``: a learned combination of ensemble members (the 2nd and 3rd places' stackers).

The Kaggle 2nd place combined its models with fixed linear weights fitted on validation data; the
3rd place fed the models' cached predictions (and event features) to an MLP / gradient boosting.
icezoo's plain ensemble is the kappa-weighted mean (:mod:`icezoo.engine.ensemble`); a stacker is
fitted and judged against it on the members' validation predictions:

* The members' predictions on their common validation events are computed once and cached in each
  run (``RUN/predictions/val-KEY.npz``, numpy without pickles; the key hashes the checkpoint's path,
  size and time, the data directory and the batch files).
* Events are split in two halves by a seeded permutation: the stacker is fitted on one and scored on
  the other, paired (same events) against the kappa-weighted mean and against the member that is
  best *on the fitting half* (bootstrap 95% intervals, :mod:`icezoo.engine.stats`).
* The inputs, the methods and the file: :mod:`icezoo.engine.stacker`. ``icezoo predict RUN1 RUN2
  --stacker FILE`` applies it to the same runs, in the same order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from icezoo.core.atomic import atomic_path, writable_target
from icezoo.core.batch import angular_error
from icezoo.core.errors import IcezooError
from icezoo.data.io import format_batches
from icezoo.engine.checkpoints import load_run_model
from icezoo.engine.device import pick_device
from icezoo.engine.ensemble import combine
from icezoo.engine.evaluate import shared_events, truth_vectors
from icezoo.engine.predict import member_predictions
from icezoo.engine.runs import RunDir
from icezoo.engine.stacker import METHODS, align, fit, predict_stacked, require_lightgbm, save, subset
from icezoo.engine.stats import paired


# ------------------------------------------------------------------------------ member predictions
def _cache_key(ckpt: Path, data_dir: Path, ids: list[int]) -> str:
    st = Path(ckpt).stat()
    text = f"{Path(ckpt).resolve()}|{st.st_size}|{st.st_mtime_ns}|{Path(data_dir).resolve()}|{list(ids)}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cached_predictions(member, data_dir: Path, ids: list[int], device, batch_size: int) -> dict[str, np.ndarray]:
    """One member's validation predictions (sorted by event id), from its cache or computed and cached."""
    run_dir, info, config, model, ckpt = member
    path = RunDir(run_dir).predictions / f"val-{_cache_key(ckpt, data_dir, ids)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("event_id", "direction", "kappa", "n_pulses")}
    model.to(device)
    precision = (info.get("precision") or {}).get("final") or config.train.precision
    p = member_predictions(model, data_dir, "train", ids, device, precision, 1, batch_size)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: np.asarray(p[k]) for k in ("event_id", "direction", "kappa", "n_pulses")})
    return p


# ------------------------------------------------------------------------------ the command
def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fitting rows, scoring rows): a seeded permutation cut in half."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def score(stacker: dict[str, Any], m: dict[str, Any], truth: np.ndarray, fit_rows, test_rows, names) -> dict:
    """The stacker, the kappa-weighted mean and the fit-half best member on the scoring half, paired."""
    fit_err = [angular_error(m["direction"][i][fit_rows], truth[fit_rows]).mean() for i in range(len(names))]
    best = int(np.argmin(fit_err))
    te = subset(m, test_rows)
    t = truth[test_rows]
    ids = te["event_id"]
    stacked, _ = predict_stacked(stacker, te)
    wmean, _ = combine(list(te["direction"]), list(te["kappa"]))
    err = {"stacker": angular_error(stacked, t), "kappa-weighted mean": angular_error(wmean, t),
           f"best member ({names[best]})": angular_error(te["direction"][best], t)}
    rows = {}
    for label, e in err.items():
        rows[label] = {"n_events": int(len(e)), "mean": float(e.mean()), "median": float(np.median(e))}
    for label in list(err)[1:]:
        p = paired(ids, err["stacker"], ids, err[label])
        rows[label].update(stacker_minus_this=p.diff, ci95=list(p.ci95), stacker_better_share=p.frac_a_better)
    return {"best_member": names[best], "rows": rows}


def stack(runs: list[str], method: str, out: str | Path, runs_dir: str | Path = "runs", data: str | None = None,
          batches: str | None = None, seed: int = 0, device: str | None = None, batch_size: int = 256,
          echo=print) -> dict[str, Any]:
    """Fit a stacker on half of the members' validation events, score it on the other half, save it."""
    if method not in METHODS:
        raise IcezooError(f"--method {method}: one of {', '.join(METHODS)}")
    if method == "gbm":
        require_lightgbm()  # missing: one line before any work
    if len(runs) < 2:
        raise IcezooError("icezoo stack: give at least two runs (the members to combine)")
    out = Path(out)
    if not out.parent.is_dir():
        raise IcezooError(f"--out {out}: directory {out.parent} does not exist")
    writable_target(out)  # a directory or a device named as --out: one line before any work
    members = [load_run_model(r, runs_dir) for r in runs]
    data_dir, ids, split_name = shared_events(members, data, batches)
    dev = pick_device(None, device)
    m = align([cached_predictions(mem, data_dir, ids, dev, batch_size) for mem in members])
    tid, tvec = truth_vectors(data_dir, "train", ids)
    truth = tvec[np.searchsorted(tid, m["event_id"])]
    if len(m["event_id"]) < 20:
        raise IcezooError(f"icezoo stack: only {len(m['event_id'])} common validation events; need at least 20")
    fit_rows, test_rows = split_halves(len(m["event_id"]), seed)
    stacker = fit(method, subset(m, fit_rows), truth[fit_rows], seed)
    names = [run_dir.name for run_dir, *_ in members]
    stacker["members"] = [{"run": n, "checkpoint": str(ck)} for n, (_, _, _, _, ck) in zip(names, members)]
    stacker["data"] = {"dir": str(data_dir), "split": split_name, "batches": format_batches(ids),
                       "fit_events": int(len(fit_rows)), "score_events": int(len(test_rows))}
    stacker["report"] = score(stacker, m, truth, fit_rows, test_rows, names)
    save(out, stacker)
    if echo:
        print_report(stacker, out, echo)
    return stacker


def print_report(stacker: dict[str, Any], out: Path, echo=print) -> None:
    from rich.console import Console
    from rich.table import Table

    d = stacker["data"]
    table = Table(title=f"{stacker['method']} stacker of {', '.join(m['run'] for m in stacker['members'])}: fitted on "
                        f"{d['fit_events']:,} events, scored on the other {d['score_events']:,} ({d['split']} of "
                        f"{d['dir']}, batches {d['batches']})")
    for col in ("", "events", "mean (rad)", "median", "stacker - this [paired 95% CI]", "stacker better on"):
        table.add_column(col)
    for label, r in stacker["report"]["rows"].items():
        diff = "" if "ci95" not in r else f"{r['stacker_minus_this']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]"
        share = "" if "ci95" not in r else f"{r['stacker_better_share']:.1%}"
        table.add_row(label, f"{r['n_events']:,}", f"{r['mean']:.4f}", f"{r['median']:.4f}", diff, share)
    Console().print(table)
    echo(f"wrote {out}   apply: icezoo predict {' '.join(m['run'] for m in stacker['members'])} --stacker {out}")


__all__ = ["stack", "cached_predictions", "split_halves", "score", "print_report"]
