"""The masked kNN of a git revision beside the working tree's, eager, in one process (issue 24 changed it).

    python benchmarks/knn_before_after.py [--rev 3d4b8b4] [--rounds 12]

Both versions must pick the same neighbours (checked); the timings alternate which runs first.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from icezoo.core.synthetic import synthetic_batch
from icezoo.nn.knn import masked_knn


def old_knn(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:icezoo/nn/knn.py"], capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "knn_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("knn_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.masked_knn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rev", default="3d4b8b4", help="the revision before the change")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = old_knn(args.rev)
    for b, length, k in [(64, 196, 8), (64, 64, 8)]:
        batch = synthetic_batch(5, [length if i % 3 else length // 2 for i in range(b)], width=length, seed=0)
        call = (batch.xyzt[..., :3], batch.mask, k)
        kw = {"time": batch.xyzt[..., 3], "include_self": False}
        a, n = before(*call, **kw), masked_knn(*call, **kw)
        if not (torch.equal(a[0], n[0]) and torch.equal(a[1], n[1])):
            sys.exit("the two versions pick different neighbours")
        times = {"before": [], "after": []}
        for r in range(args.rounds):
            pair = [("before", before), ("after", masked_knn)]
            for name, fn in pair if r % 2 else pair[::-1]:
                t0 = time.perf_counter()
                fn(*call, **kw)
                times[name].append(time.perf_counter() - t0)
        med = {name: sorted(v)[len(v) // 2] * 1e3 for name, v in times.items()}
        print(f"B={b} L={length} k={k}: before {med['before']:.1f} ms, after {med['after']:.1f} ms, "
              f"after/before {med['after'] / med['before']:.2f} (same neighbours)")


if __name__ == "__main__":
    main()
