"""Ensembles of runs and test-time augmentation (TTA) by rotations about the vertical axis.

Combination rule (the top Kaggle solutions' practice): per event, the kappa-weighted mean of the
members' unit direction vectors, renormalised: ``sum_i kappa_i v_i / |sum_i kappa_i v_i|``. A
von Mises-Fisher member with concentration kappa_i contributes the log-likelihood
``kappa_i v_i . u``, so this is the direction that maximises the members' summed log-likelihood:
a confident member counts for more. Where any member has no kappa for an event (an angles head,
or a non-finite value) the event gets the plain mean of the unit vectors. The combined kappa is
``|sum_i kappa_i v_i| / M`` for M members: the members' mean kappa shrunk by their disagreement,
on the scale of one member (the views are not independent measurements, so it is not summed; NaN
without kappa); an ensemble of ensembles then weighs each on that scale.
If the sum vanishes (members exactly opposed) the first member's direction is kept.

TTA: the detector is turned by ``theta_k = 2 pi k / N`` about the vertical (z) axis (every DOM
position rotated; charge, time, sensor ids and depth-dependent ice are unchanged), the model
predicts, and the prediction is turned back by ``-theta_k``; the N predictions are combined by the
same rule. The detector is not rotationally symmetric, so a turned event is a slightly different
plausible event: an ensemble of views, scored against no TTA by ``icezoo evaluate --tta N``.
"""

from __future__ import annotations

import numpy as np

from icezoo.core.errors import IcezooError


def combine(directions: list[np.ndarray], kappas: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(unit directions [N,3], combined kappa [N]) of members' directions [N,3] and kappas [N]."""
    if not directions:
        raise IcezooError("an ensemble needs at least one member")
    d = np.stack([np.asarray(v, dtype=np.float64) for v in directions])  # [M,N,3]
    if d.ndim != 3 or d.shape[-1] != 3:
        raise IcezooError(f"ensemble members must give [N,3] directions, got {d.shape[1:]}")
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    if kappas is None:
        k = np.full(d.shape[:2], np.nan)
    else:
        k = np.stack([np.asarray(x, dtype=np.float64) for x in kappas])  # [M,N]
        if k.shape != d.shape[:2]:
            raise IcezooError(f"ensemble: {k.shape} kappas for {d.shape[:2]} directions")
    weighted = np.isfinite(k).all(axis=0) & (k >= 0).all(axis=0)  # [N]: every member has a kappa
    w = np.where(weighted[None, :], np.where(np.isfinite(k), k, 0.0), 1.0)
    s = (w[..., None] * d).sum(axis=0)  # [N,3]
    norm = np.linalg.norm(s, axis=-1)
    ok = norm > 1e-12 * np.maximum(w.sum(axis=0), 1e-300)
    out = np.where(ok[:, None], s / np.where(ok, norm, 1.0)[:, None], d[0])
    kappa = np.where(weighted, norm / len(d), np.nan)
    return out, kappa


def rotation_z(theta: float) -> np.ndarray:
    """The 3x3 rotation by ``theta`` (radians, counter-clockwise seen from above) about the z axis."""
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


#: the most TTA views: each is a full pass of the model over the events, and views 2 pi / 32 apart
#: already differ by less than the detector's string spacing seen from its centre
MAX_TTA = 32


def tta_angles(n: int) -> list[float]:
    """``n`` rotations evenly spaced over the full turn, starting with the identity."""
    if n < 1:
        raise IcezooError(f"--tta {n}: at least 1 (1 = no augmentation)")
    if n > MAX_TTA:
        raise IcezooError(f"--tta {n}: at most {MAX_TTA} rotations (each is a full pass of the model over the "
                          f"events: --tta {n} would take {n}x as long as no TTA for views a few degrees apart)")
    return [2.0 * np.pi * k / n for k in range(n)]


def rotate_geometry(geometry: np.ndarray, theta: float) -> np.ndarray:
    """DOM positions [S,3] turned by ``theta`` about the vertical axis (NaN rows stay NaN)."""
    return np.asarray(geometry, dtype=np.float64) @ rotation_z(theta).T


def unrotate(directions: np.ndarray, theta: float) -> np.ndarray:
    """Directions predicted in the turned detector, turned back into the detector's frame."""
    return np.asarray(directions, dtype=np.float64) @ rotation_z(-theta).T


def ensemble_of(preds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The members' predictions combined on the events every member scored (sorted by event id); the
    task columns (``tasks``) of the members that have them by :func:`combine_task_columns`."""
    ids = preds[0]["event_id"]
    for p in preds[1:]:
        ids = np.intersect1d(ids, p["event_id"])
    take = [np.searchsorted(p["event_id"], ids) for p in preds]
    direction, kappa = combine([p["direction"][t] for p, t in zip(preds, take)],
                               [p["kappa"][t] for p, t in zip(preds, take)])
    out = {"event_id": ids, "direction": direction, "kappa": kappa}
    with_tasks = [(p["tasks"], t) for p, t in zip(preds, take) if p.get("tasks")]
    if with_tasks:  # the task columns of the members that predict them, each by its kind
        out["tasks"] = combine_task_columns([{k: v[t] for k, v in cols.items()} for cols, t in with_tasks])
    return out


# ------------------------------------------------------------------------------ task columns
def combine_gaussian(values: list[np.ndarray], sigmas: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(combined value, combined sigma) of members' estimates [N] or [N, D] with per-event sigmas [N]:
    the inverse-variance weighted mean (the maximum of the members' summed Gaussian likelihoods).
    The members saw the same pulses, so their errors are not independent and the combined sigma is
    kept on the scale of one member (the variance ``M / sum 1/sigma_i^2``, not ``1 / sum``), widened by
    the members' weighted disagreement (per axis for vectors), as the direction's kappa is shrunk by it.
    An event where any member has no finite positive sigma gets the plain mean and a NaN sigma."""
    if not values:
        raise IcezooError("an ensemble needs at least one member")
    v = np.stack([np.asarray(x, dtype=np.float64) for x in values])  # [M, N] or [M, N, D]
    m = len(v)
    if sigmas is None:
        s = np.full(v.shape[:2], np.nan)
    else:
        s = np.stack([np.asarray(x, dtype=np.float64) for x in sigmas])
        if s.shape != v.shape[:2]:
            raise IcezooError(f"ensemble: {s.shape} sigmas for {v.shape[:2]} values")
    weighted = (np.isfinite(s) & (s > 0)).all(axis=0)  # [N]
    w = np.where(weighted[None, :], 1.0 / np.where(weighted[None, :], s, 1.0) ** 2, 1.0)  # [M, N]
    wx = w.reshape(w.shape + (1,) * (v.ndim - 2))
    mean = (wx * v).sum(axis=0) / wx.sum(axis=0)
    spread = (wx * (v - mean) ** 2).sum(axis=0) / wx.sum(axis=0)
    if v.ndim > 2:
        spread = spread.mean(axis=-1)  # one sigma for all the axes, as the members give
    sigma = np.where(weighted, np.sqrt(m / np.where(weighted, w.sum(axis=0), 1.0) + spread), np.nan)
    return mean, sigma


def combine_probabilities(probs: list[np.ndarray]) -> np.ndarray:
    """Members' class probabilities [N] or [N, C] averaged: the mixture of their predictive
    distributions (it stays normalised; averaging logits would sharpen it beyond any member)."""
    if not probs:
        raise IcezooError("an ensemble needs at least one member")
    return np.stack([np.asarray(p, dtype=np.float64) for p in probs]).mean(axis=0)


def combine_task_columns(members: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The task columns (``icezoo predict``'s names) of several members, each combined by its kind:
    ``X`` with ``X_sigma`` by :func:`combine_gaussian`; ``P_x, P_y, P_z`` with ``P_sigma`` (a
    vertex) as one vector; ``p_*`` probabilities by :func:`combine_probabilities`; any other column
    by the plain mean. Every member must give the same columns."""
    cols = list(members[0])
    for i, mem in enumerate(members[1:], 2):
        if set(mem) != set(cols):
            raise IcezooError(f"ensemble: member {i} predicts columns {sorted(mem)}, member 1 {sorted(cols)}: "
                              "the runs' tasks differ")
    out: dict[str, np.ndarray] = {}
    for col in cols:
        if col in out:
            continue
        base = col[:-2] if col.endswith(("_x", "_y", "_z")) else None
        if base and all(f"{base}_{a}" in cols for a in "xyz") and f"{base}_sigma" in cols:
            names = [f"{base}_{a}" for a in "xyz"]
            vec = [np.stack([mem[n] for n in names], axis=-1) for mem in members]
            mean, sig = combine_gaussian(vec, [mem[f"{base}_sigma"] for mem in members])
            out.update({n: mean[:, i] for i, n in enumerate(names)})
            out[f"{base}_sigma"] = sig
        elif f"{col}_sigma" in cols:
            out[col], out[f"{col}_sigma"] = combine_gaussian([m[col] for m in members],
                                                             [m[f"{col}_sigma"] for m in members])
        elif col.endswith("_sigma") and col[:-6] in cols:
            continue  # written with its value
        elif col.startswith("p_"):
            out[col] = combine_probabilities([m[col] for m in members])
        else:
            out[col] = np.mean(np.stack([np.asarray(m[col], dtype=np.float64) for m in members]), axis=0)
    return {c: out[c] for c in cols}
