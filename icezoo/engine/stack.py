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
* Inputs per event: each member's unit direction and log(1 + kappa) (0 where a member has no
  kappa), and log10 of the event's pulse count (the event feature every member saw).
* Methods. ``linear``: u = normalise(sum_m w_m v_m), one weight per member (2nd place).
  ``mlp``: u = normalise(s0 + MLP(x)), s0 the kappa-weighted mean, the MLP's last layer starting at
  zero (so it starts as the weighted mean). ``gbm`` (LightGBM, the optional extra
  ``icezoo[lightgbm]``): three boosted regressors of the residual t - s0, u = normalise(s0 + r).
  linear and mlp minimise the mean angular error (full-batch Adam, seeded). The stacked kappa is
  the weighted mean's (the stacker moves the direction, not the confidence).
* Saved as one JSON file (weights as lists, a LightGBM model as its text format): nothing in it runs
  code. ``icezoo predict RUN1 RUN2 --stacker FILE`` applies it to the same runs, in the same order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from icezoo.core.atomic import atomic_path, writable_target, write_text_atomic
from icezoo.core.batch import angular_error
from icezoo.core.errors import IcezooError
from icezoo.engine import runs as R
from icezoo.engine.ensemble import combine
from icezoo.engine.stats import paired

METHODS = ("linear", "mlp", "gbm")
FORMAT = "icezoo-stacker"
MLP_HIDDEN = 32
STEPS = {"linear": 300, "mlp": 400}


# ------------------------------------------------------------------------------ member predictions
def _cache_key(ckpt: Path, data_dir: Path, ids: list[int]) -> str:
    st = Path(ckpt).stat()
    text = f"{Path(ckpt).resolve()}|{st.st_size}|{st.st_mtime_ns}|{Path(data_dir).resolve()}|{list(ids)}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cached_predictions(member, data_dir: Path, ids: list[int], device, batch_size: int) -> dict[str, np.ndarray]:
    """One member's validation predictions (sorted by event id), from its cache or computed and cached."""
    from icezoo.engine.predict import member_predictions

    run_dir, info, config, model, ckpt = member
    path = run_dir / "predictions" / f"val-{_cache_key(ckpt, data_dir, ids)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("event_id", "direction", "kappa", "n_pulses")}
    model.to(device)
    precision = (info.get("precision") or {}).get("final") or config.train.precision
    p = member_predictions(model, data_dir, "train", ids, device, precision, 1, batch_size)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: np.asarray(p[k]) for k in ("event_id", "direction", "kappa", "n_pulses")})
    return p


def align(preds: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """The members' predictions on the events every member scored: ids [N], directions [M, N, 3],
    kappas [M, N], pulse counts [N]."""
    ids = preds[0]["event_id"]
    for p in preds[1:]:
        ids = np.intersect1d(ids, p["event_id"])
    take = [np.searchsorted(p["event_id"], ids) for p in preds]
    d = np.stack([np.asarray(p["direction"], np.float64)[t] for p, t in zip(preds, take)])
    k = np.stack([np.asarray(p["kappa"], np.float64)[t] for p, t in zip(preds, take)])
    return {"event_id": ids, "direction": d / np.linalg.norm(d, axis=-1, keepdims=True), "kappa": k,
            "n_pulses": np.asarray(preds[0]["n_pulses"])[take[0]]}


def features(m: dict[str, Any]) -> np.ndarray:
    """Stacker inputs [N, 4M + 1]: per member the unit direction and log(1 + kappa), then log10 pulses."""
    k = np.where(np.isfinite(m["kappa"]) & (m["kappa"] >= 0), m["kappa"], 0.0)
    cols = [np.concatenate([m["direction"][i], np.log1p(k[i])[:, None]], -1) for i in range(len(k))]
    cols.append(np.log10(np.maximum(m["n_pulses"], 1)).astype(np.float64)[:, None])
    return np.concatenate(cols, -1)


# ------------------------------------------------------------------------------ the models
def _normalise(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _angular(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.arccos((u * t).sum(-1).clamp(-1 + 1e-7, 1 - 1e-7)).mean()


def _mlp(n_in: int) -> nn.Module:
    net = nn.Sequential(nn.Linear(n_in, MLP_HIDDEN), nn.GELU(), nn.Linear(MLP_HIDDEN, MLP_HIDDEN), nn.GELU(),
                        nn.Linear(MLP_HIDDEN, 3)).double()
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def _torch_predict(stacker: dict[str, Any], x: np.ndarray, d: np.ndarray, s0: np.ndarray) -> np.ndarray:
    state = {k: torch.tensor(v, dtype=torch.float64) for k, v in stacker["state"].items()}
    if stacker["method"] == "linear":
        u = _normalise(torch.einsum("m,mnc->nc", state["w"], torch.as_tensor(d)))
    else:
        net = _mlp(x.shape[1])
        net.load_state_dict({k: v for k, v in state.items() if k not in ("mean", "std")})
        xs = (torch.as_tensor(x) - state["mean"]) / state["std"]
        with torch.no_grad():
            u = _normalise(torch.as_tensor(s0) + net(xs))
    return u.detach().numpy()


def _fit_torch(method: str, x: np.ndarray, d: np.ndarray, s0: np.ndarray, t: np.ndarray, seed: int,
               steps: int | None = None) -> dict:
    torch.manual_seed(seed)
    xt, dt, st, tt = (torch.as_tensor(a, dtype=torch.float64) for a in (x, d, s0, t))
    if method == "linear":
        w = nn.Parameter(torch.full((len(d),), 1.0 / len(d), dtype=torch.float64))
        params, predict = [w], lambda: _normalise(torch.einsum("m,mnc->nc", w, dt))
    else:
        mean, std = xt.mean(0), xt.std(0).clamp_min(1e-6)
        net = _mlp(x.shape[1])
        xs = (xt - mean) / std
        params, predict = list(net.parameters()), lambda: _normalise(st + net(xs))
    opt = torch.optim.Adam(params, lr=1e-2 if method == "linear" else 3e-3)
    for _ in range(STEPS[method] if steps is None else steps):
        opt.zero_grad()
        loss = _angular(predict(), tt)
        loss.backward()
        opt.step()
    if method == "linear":
        return {"w": w.detach().tolist()}
    state = {k: v.detach().tolist() for k, v in net.state_dict().items()}
    state.update(mean=mean.tolist(), std=std.tolist())
    return state


def _lightgbm():
    try:
        import lightgbm
    except ImportError:
        raise IcezooError("--method gbm needs LightGBM: pip install -e '.[lightgbm]' (or pip install lightgbm)") from None
    return lightgbm


def _fit_gbm(x: np.ndarray, s0: np.ndarray, t: np.ndarray, seed: int) -> list[str]:
    lgb = _lightgbm()
    models = []
    for c in range(3):
        reg = lgb.LGBMRegressor(n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=20,
                                random_state=seed, deterministic=True, n_jobs=1, verbose=-1)
        reg.fit(x, t[:, c] - s0[:, c])
        models.append(reg.booster_.model_to_string())
    return models


def _gbm_predict(stacker: dict[str, Any], x: np.ndarray, s0: np.ndarray) -> np.ndarray:
    lgb = _lightgbm()
    r = np.stack([lgb.Booster(model_str=s).predict(x) for s in stacker["gbm"]], -1)
    u = s0 + r
    return u / np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-12)


def predict_stacked(stacker: dict[str, Any], m: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(directions [N, 3], kappas [N]) of the stacker on aligned member predictions ``m``."""
    s0, kappa = combine(list(m["direction"]), list(m["kappa"]))
    x = features(m)
    if x.shape[1] != stacker["n_features"]:
        raise IcezooError(f"stacker: {x.shape[1]} inputs for a stacker fitted on {stacker['n_features']}")
    if stacker["method"] == "gbm":
        return _gbm_predict(stacker, x, s0), kappa
    return _torch_predict(stacker, x, m["direction"], s0), kappa


def fit(method: str, m: dict[str, Any], truth: np.ndarray, seed: int = 0, steps: int | None = None) -> dict[str, Any]:
    """A stacker (a JSON-able dict) fitted on aligned member predictions ``m`` and true directions
    (``steps``: Adam steps of linear/mlp, default :data:`STEPS`)."""
    if method not in METHODS:
        raise IcezooError(f"--method {method}: one of {', '.join(METHODS)}")
    s0, _ = combine(list(m["direction"]), list(m["kappa"]))
    x = features(m)
    out: dict[str, Any] = {"format": FORMAT, "version": 1, "method": method, "n_features": int(x.shape[1]),
                           "seed": seed}
    if method == "gbm":
        out["gbm"] = _fit_gbm(x, s0, truth, seed)
    else:
        out["state"] = _fit_torch(method, x, m["direction"], s0, truth, seed, steps)
    return out


# ------------------------------------------------------------------------------ saving and loading
def save(path: Path, stacker: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(stacker, indent=1) + "\n")


def load(path: str | Path) -> dict[str, Any]:
    """A stacker file, checked: one IcezooError naming the file and field if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise IcezooError(f"--stacker {path}: no such file (make one with icezoo stack RUN1 RUN2 --out {path})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IcezooError(f"{path}: not a stacker file (invalid JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise IcezooError(f"{path}: not a stacker file (field 'format' is not {FORMAT!r})")
    need = {"method": str, "members": list, "n_features": int}
    for field, typ in need.items():
        if not isinstance(data.get(field), typ):
            raise IcezooError(f"{path}: field '{field}' is missing or not a {typ.__name__}")
    if data["method"] not in METHODS:
        raise IcezooError(f"{path}: field 'method' is {data['method']!r}, not one of {', '.join(METHODS)}")
    body = "gbm" if data["method"] == "gbm" else "state"
    if not isinstance(data.get(body), (list if body == "gbm" else dict)):
        raise IcezooError(f"{path}: field '{body}' is missing or malformed")
    return data


def check_members(stacker: dict[str, Any], names: list[str], where: str) -> None:
    """The runs given must be the stacker's members, in its order."""
    want = [mem["run"] for mem in stacker["members"]]
    if names != want:
        raise IcezooError(f"{where}: fitted on runs {', '.join(want)} (in that order), given {', '.join(names)}")


# ------------------------------------------------------------------------------ the command
def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fitting rows, scoring rows): a seeded permutation cut in half."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def _subset(m: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    return {"event_id": m["event_id"][rows], "direction": m["direction"][:, rows], "kappa": m["kappa"][:, rows],
            "n_pulses": m["n_pulses"][rows]}


def score(stacker: dict[str, Any], m: dict[str, Any], truth: np.ndarray, fit_rows, test_rows, names) -> dict:
    """The stacker, the kappa-weighted mean and the fit-half best member on the scoring half, paired."""
    fit_err = [angular_error(m["direction"][i][fit_rows], truth[fit_rows]).mean() for i in range(len(names))]
    best = int(np.argmin(fit_err))
    te = _subset(m, test_rows)
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
    from icezoo.engine.checkpoints import load_run_model
    from icezoo.engine.device import pick_device
    from icezoo.engine.evaluate import eval_ids, truth_vectors

    if method not in METHODS:
        raise IcezooError(f"--method {method}: one of {', '.join(METHODS)}")
    if method == "gbm":
        _lightgbm()  # missing: one line before any work
    if len(runs) < 2:
        raise IcezooError("icezoo stack: give at least two runs (the members to combine)")
    out = Path(out)
    if not out.parent.is_dir():
        raise IcezooError(f"--out {out}: directory {out.parent} does not exist")
    writable_target(out)  # a directory or a device named as --out: one line before any work
    members = [load_run_model(r, runs_dir) for r in runs]
    targets = [eval_ids(info, data, batches) for _, info, *_ in members]
    if len({(str(Path(d).resolve()), tuple(ids)) for d, ids, _ in targets}) > 1:
        raise IcezooError("the runs were validated on different data or files; name the events with --data DIR "
                          "(and --batches SPEC)")
    data_dir, ids, split_name = targets[0]
    dev = pick_device(None, device)
    m = align([cached_predictions(mem, data_dir, ids, dev, batch_size) for mem in members])
    tid, tvec = truth_vectors(data_dir, "train", ids)
    truth = tvec[np.searchsorted(tid, m["event_id"])]
    if len(m["event_id"]) < 20:
        raise IcezooError(f"icezoo stack: only {len(m['event_id'])} common validation events; need at least 20")
    fit_rows, test_rows = split_halves(len(m["event_id"]), seed)
    stacker = fit(method, _subset(m, fit_rows), truth[fit_rows], seed)
    names = [run_dir.name for run_dir, *_ in members]
    stacker["members"] = [{"run": n, "checkpoint": str(ck)} for n, (_, _, _, _, ck) in zip(names, members)]
    stacker["data"] = {"dir": str(data_dir), "split": split_name, "batches": R._ranges(ids),
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


def apply(stacker: dict[str, Any], preds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Members' predictions (one batch file) -> the stacked prediction on their common events."""
    m = align(preds)
    direction, kappa = predict_stacked(stacker, m)
    return {"event_id": m["event_id"], "direction": direction, "kappa": kappa}


__all__ = ["METHODS", "stack", "fit", "load", "save", "apply", "predict_stacked", "split_halves", "features",
           "align", "check_members"]
