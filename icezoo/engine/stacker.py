"""The stacker model behind ``icezoo stack`` (:mod:`icezoo.engine.stack`): inputs, the linear / MLP /
LightGBM fits, the JSON file, and applying it (``icezoo predict --stacker``).

Inputs per event: each member's unit direction and log(1 + kappa) (0 where a member has no kappa),
and log10 of the event's pulse count. ``linear``: u = normalise(sum_m w_m v_m), one weight per
member (the Kaggle 2nd place's fixed weights). ``mlp``: u = normalise(s0 + MLP(x)), s0 the
kappa-weighted mean (:mod:`icezoo.engine.ensemble`), the MLP's last layer starting at zero (so the
fit starts as the weighted mean; the 3rd place stacked with an MLP / boosting). ``gbm`` (LightGBM,
the optional extra ``icezoo[lightgbm]``): three boosted regressors of the residual t - s0,
u = normalise(s0 + r). linear and mlp minimise the mean angular error (full-batch Adam, seeded).
The stacked kappa is the weighted mean's (the stacker moves the direction, not the confidence).
Saved as one JSON file (weights as lists, a LightGBM model as its text format): nothing in it runs code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from icezoo.core.atomic import write_text_atomic
from icezoo.core.errors import IcezooError
from icezoo.engine.ensemble import combine

METHODS = ("linear", "mlp", "gbm")
FORMAT = "icezoo-stacker"
MLP_HIDDEN = 32
STEPS = {"linear": 300, "mlp": 400}


# ------------------------------------------------------------------------------ inputs
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


def subset(m: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """Aligned predictions restricted to the events at ``rows``."""
    return {"event_id": m["event_id"][rows], "direction": m["direction"][:, rows], "kappa": m["kappa"][:, rows],
            "n_pulses": m["n_pulses"][rows]}


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


def require_lightgbm():
    try:
        import lightgbm
    except ImportError:
        raise IcezooError("--method gbm needs LightGBM: pip install -e '.[lightgbm]' (or pip install lightgbm)") from None
    return lightgbm


def _fit_gbm(x: np.ndarray, s0: np.ndarray, t: np.ndarray, seed: int) -> list[str]:
    """Three boosted regressors (LightGBM's own API, no scikit-learn) of the residual t - s0, as text models."""
    lgb = require_lightgbm()
    params = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 20,
              "seed": seed, "deterministic": True, "num_threads": 1, "verbose": -1}
    return [lgb.train(params, lgb.Dataset(x, label=t[:, c] - s0[:, c]), num_boost_round=200).model_to_string()
            for c in range(3)]


def _gbm_predict(stacker: dict[str, Any], x: np.ndarray, s0: np.ndarray) -> np.ndarray:
    lgb = require_lightgbm()
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


def apply(stacker: dict[str, Any], preds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Members' predictions (one batch file) -> the stacked prediction on their common events."""
    m = align(preds)
    direction, kappa = predict_stacked(stacker, m)
    return {"event_id": m["event_id"], "direction": direction, "kappa": kappa}



__all__ = ["METHODS", "fit", "load", "save", "apply", "predict_stacked", "features", "align", "check_members", "subset"]
