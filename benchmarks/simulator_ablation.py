"""The simulator ablation of docs/simulator.md: the default pipeline at one fixed budget, trained on
datasets simulated with every issue-11 addition on, with each switched off, and with all of them off
(``--legacy``); scored on each dataset's own fixed validation file, LineFit on the same events.

    python benchmarks/simulator_ablation.py --work /tmp/ablation [--rows new,legacy] [--jobs 2]

Each row: ``icezoo simulate`` (train + validation files), a split file naming the last file as the
validation split, ``icezoo train`` (one torch thread), then the scores. Rows already scored are
reused (``WORK/ROW/row.json``), so an interrupted run resumes. Prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROWS = {  # row name -> extra `icezoo simulate` flags
    "legacy": ["--legacy"],
    "new": [],
    "no-kinematics": ["--no-kinematics"],
    "no-stochastic": ["--no-stochastic"],
    "no-layered-timing": ["--no-layered-timing"],
    "no-deepcore": ["--no-deepcore", "--energy-min", "100"],
    "no-noise-additions": ["--no-bursts", "--no-afterpulses", "--dom-efficiency-spread", "0"],
    "no-launch-readout": ["--no-launch-readout"],
}
BANDS = [(0, 1e3, "<1 TeV"), (1e3, 1e4, "1-10"), (1e4, 1e5, "10-100"), (1e5, float("inf"), ">100 TeV")]


def run(cmd: list[str], log: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=env)


def one_row(name: str, work: Path, n_train: int, n_val: int, per_file: int, epochs: float, seed: int) -> dict:
    out = work / name
    row_file = out / "row.json"
    if row_file.is_file():
        return json.loads(row_file.read_text())
    out.mkdir(parents=True, exist_ok=True)
    data, log = out / "data", out / "log.txt"
    n_files = n_train // per_file
    if not (data / "icezoo_split.json").is_file():
        if data.exists():
            subprocess.run(["rm", "-rf", str(data)], check=True)
        run(["icezoo", "simulate", "--events", str(n_train + n_val), "--events-per-batch", str(per_file),
             "--seed", str(seed), "--out", str(data), *ROWS[name]], log)
        split = {"train_batches": f"1:{n_files}", "val_batches": f"{n_files + 1}:{n_files + n_val // per_file}"}
        (data / "icezoo_split.json").write_text(json.dumps(split) + "\n")
    runs = out / "runs"
    if not (runs / f"ablation-{name}").is_dir():
        run(["icezoo", "train", "--data", str(data), "--batches", f"1:{n_files}", "--epochs", str(epochs),
             "--seed", "0", "--device", "cpu", "--no-progress", "--runs-dir", str(runs),
             "--name", f"ablation-{name}"], log)
    row = score(runs, f"ablation-{name}", data)
    row["name"], row["flags"] = name, " ".join(ROWS[name])
    row_file.write_text(json.dumps(row, indent=1) + "\n")
    return row


def score(runs: Path, run_name: str, data: Path) -> dict:
    import numpy as np
    import torch

    from icezoo.engine import runs as R
    from icezoo.engine.checkpoints import load_run_model
    from icezoo.engine.evaluate import collect, eval_ids
    from icezoo.core.batch import angular_error
    from icezoo.engine.stats import bootstrap_ci

    torch.set_num_threads(1)
    run_dir, info, _, model, _ = load_run_model(run_name, runs)
    data_dir, ids, _ = eval_ids(info, None, None)
    res = collect(model, data_dir, "train", ids, 256, torch.device("cpu"))
    err = angular_error(res["direction"], res["truth"])
    lf = angular_error(res["linefit"], res["truth"])
    track = np.isin(res["event_type"], ["through_going_track", "starting_track"])
    bands = []
    for lo, hi, label in BANDS:
        sel = track & (res["energy"] >= lo) & (res["energy"] < hi)
        bands.append([label, float(np.median(err[sel])) if sel.any() else None, int(sel.sum())])
    done = R.load_run(run_dir)
    return {"mean": float(err.mean()), "ci95": [float(v) for v in bootstrap_ci(err)], "median": float(np.median(err)),
            "linefit": float(lf.mean()), "ratio": float(err.mean() / lf.mean()), "n_val": int(len(err)),
            "track_median_by_energy": bands, "events_seen": done.get("events_seen"),
            "train_seconds": done.get("train_time_s"), "run": str(run_dir)}


def markdown(rows: list[dict]) -> str:
    head = ("| data | flags | validation mean [95% CI] | LineFit | ratio | median | "
            "track median by E_nu: " + " / ".join(b[2] for b in BANDS) + " (events) |")
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        bands = " / ".join("-" if m is None else f"{m:.3f} ({n})" for _, m, n in r["track_median_by_energy"])
        lines.append(f"| {r['name']} | `{r['flags'] or '(defaults)'}` | {r['mean']:.3f} [{r['ci95'][0]:.3f}, "
                     f"{r['ci95'][1]:.3f}] | {r['linefit']:.3f} | {r['ratio']:.3f} | {r['median']:.3f} | {bands} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--train-events", type=int, default=100_000)
    p.add_argument("--val-events", type=int, default=5_000)
    p.add_argument("--events-per-file", type=int, default=5_000)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    names = [n for n in a.rows.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        sys.exit(f"--rows: unknown row {unknown[0]!r} (known: {', '.join(ROWS)})")
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(lambda n: one_row(n, a.work, a.train_events, a.val_events, a.events_per_file,
                                               a.epochs, a.seed), names))
    print(markdown(rows))


if __name__ == "__main__":
    main()
