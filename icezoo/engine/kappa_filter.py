"""The kappa filter of EXP_33_FT_3_KAPPA: train only on the events a named run is confident about.

``train.kappa_from = "RUN"`` and ``train.min_kappa = 0.5`` keep, of the training files, the events
for which RUN's model (its ``best.pt``) predicts a von Mises-Fisher concentration above
``min_kappa``. The predictions are made once per training file and cached in RUN's directory
(``predictions/KEY/train_BATCH.npz``: event ids and kappas, written atomically), KEY naming the data
directory and the checkpoint (its size and modification time), so every epoch, every resumed run
and every later run with the same source reuses them, and a retrained source is predicted anew.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from icezoo.core.atomic import atomic_path
from icezoo.core.errors import IcezooError
from icezoo.data.io import read_meta
from icezoo.engine.runs import RunDir
from icezoo.engine.checkpoints import load_run_model
from icezoo.engine.device import pick_device
from icezoo.engine.loaders import make_eval_loader
from icezoo.engine.predict import infer


def _cache_dir(run: RunDir, checkpoint: Path, data_dir: Path) -> Path:
    st = checkpoint.stat()
    key = f"{Path(data_dir).resolve()}|{checkpoint.name}|{st.st_size}|{st.st_mtime_ns}"
    return run.predictions / hashlib.sha1(key.encode()).hexdigest()[:12]


def predicted_kappa(run: str, data_dir: Path, batch_ids: list[int], runs_dir: str | Path, device=None,
                    batch_size: int = 256, log=None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{batch_id: (event ids, kappa)}`` of RUN's model on the training files (cached)."""
    rd = RunDir.find(run, runs_dir)
    run_dir = rd.path
    ckpt = rd.checkpoint("best") if rd.checkpoint("best").is_file() else rd.checkpoint("last")
    if not ckpt.is_file():
        raise IcezooError(f"train.kappa_from = '{run}': {run_dir} has no checkpoint yet")
    cache = _cache_dir(rd, ckpt, data_dir)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    model = dev = None
    made = 0
    for bid in batch_ids:
        f = cache / f"train_{int(bid)}.npz"
        if f.is_file():
            cached, why = _read_cache(f, data_dir, int(bid))
            if cached is not None:
                out[int(bid)] = cached
                continue
            if log is not None:
                log(f"kappa filter: {f} {why}: predicted anew")
        if model is None:
            _, _, _, model, _ = load_run_model(str(run_dir), runs_dir)
            dev = pick_device(None, device)
            model.to(dev)
        res = infer(model, make_eval_loader(data_dir, "train", [int(bid)], model, batch_size), dev, "fp32")
        if len(res["kappa"]) and not np.isfinite(res["kappa"]).all():
            raise IcezooError(f"train.kappa_from = '{run}': its head predicts no kappa (use a direction_kappa head)")
        with atomic_path(f) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, event_id=res["event_id"], kappa=res["kappa"])
        out[int(bid)] = (res["event_id"], res["kappa"])
        made += 1
    if log is not None:
        log(f"kappa filter: predictions of {run_dir.name} for {len(batch_ids)} training files "
            f"({made} made, {len(batch_ids) - made} from the cache {cache})")
    return out


def _read_cache(f: Path, data_dir: Path, bid: int):
    """((event ids, kappa), None) from a cache file that holds exactly what :func:`predicted_kappa`
    writes for batch ``bid``: one finite, non-negative kappa for each event of the file with 2 or more
    pulses (from the meta). Else (None, why): a damaged or foreign file is predicted anew, never used."""
    try:
        with np.load(f, allow_pickle=False) as z:
            eid, kappa = np.asarray(z["event_id"]), np.asarray(z["kappa"])
    except Exception as exc:  # noqa: BLE001 - truncated, not a zip, pickled objects, keys missing
        return None, f"is unreadable ({type(exc).__name__})"
    if eid.ndim != 1 or kappa.shape != eid.shape or eid.dtype.kind not in "iu" or kappa.dtype.kind != "f":
        return None, "does not hold one float kappa per integer event id"
    if not np.isfinite(kappa).all() or (kappa < 0).any():
        return None, "holds kappas that are not finite or negative"
    meta = read_meta(data_dir, "train", bid)
    scored = meta["event_id"][(meta["last_pulse_index"] - meta["first_pulse_index"] + 1) >= 2]
    if not np.array_equal(np.sort(eid), np.sort(scored.astype(eid.dtype))):
        return None, f"holds {len(eid):,} events, not the file's {len(scored):,} events with 2 or more pulses"
    return (eid, kappa), None


def kept_events(run: str, min_kappa: float, data_dir: Path, batch_ids: list[int], runs_dir: str | Path,
                device=None, log=None) -> dict[int, np.ndarray]:
    """``{batch_id: event ids}`` whose predicted kappa exceeds ``min_kappa`` (for the loader's keep_events)."""
    pred = predicted_kappa(run, data_dir, batch_ids, runs_dir, device, log=log)
    keep = {b: np.sort(eid[k > min_kappa]) for b, (eid, k) in pred.items()}
    total = sum(len(e) for e, _ in pred.values())
    kept = sum(len(v) for v in keep.values())
    if log is not None:
        log(f"kappa filter: {kept:,} of {total:,} training events have kappa > {min_kappa:g}")
    if not kept:
        raise IcezooError(f"train.min_kappa = {min_kappa:g}: no training event passes (the largest kappa "
                          f"{max((float(k.max()) for _, k in pred.values() if len(k)), default=float('nan')):.3g})")
    return keep
