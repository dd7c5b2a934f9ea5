"""``icezoo bench export``: onnxruntime against torch eager on the same model and batches, in one process.

The pipeline is built (random weights: they do not change the speed), exported to ONNX in a
temporary directory (:func:`icezoo.engine.export.export_onnx`, the file ``icezoo export`` writes),
and both run inference on the same batches: torch eager through :class:`ExportModel` under
``torch.inference_mode`` (the exported graph's own forward: direction, kappa, task outputs), and an
onnxruntime CPU session with ``threads`` intra-op threads (torch gets the same number) and the graph
optimisation level asked for. The two take turns, round after round (round 0 warms up), so a
shared machine's load falls on both alike; reported: events/s of each (median over rounds) and the
median and range of the per-round ratio onnxruntime / eager, and the largest output difference.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from icezoo.core.errors import IcezooError
from icezoo.core.synthetic import synthetic_batch
from icezoo.engine.bench import _data_batches, bench_config
from icezoo.engine.device import set_threads
from icezoo.zoo import build

#: onnxruntime's graph optimisation levels by the names ``--optimization`` takes
OPT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
              "none": "ORT_DISABLE_ALL"}


def onnx_session(path: str | Path, threads: int | None, optimization: str = "all"):
    """An onnxruntime CPU session for ``path`` with ``threads`` intra-op threads (one inter-op)."""
    from icezoo.engine.export import import_onnxruntime

    if optimization not in OPT_LEVELS:
        raise IcezooError(f"--optimization {optimization}: expected one of {', '.join(OPT_LEVELS)}")
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[optimization])
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def bench_export(pipeline: str | None = "default", pipeline_file: str | None = None, batch_size: int | None = None,
                 max_pulses: int | None = None, steps: int = 10, rounds: int = 5, threads: int | None = None,
                 lengths: str = "max", overrides: dict[str, Any] | None = None,
                 optimization: str = "all") -> dict[str, Any]:
    """Inference events/s of onnxruntime and torch eager on the same ``steps`` batches, ``rounds``
    times in turn (see the module docstring)."""
    from icezoo.engine.export import ExportModel, batch_inputs, example_inputs, export_onnx, input_names

    if optimization not in OPT_LEVELS:
        raise IcezooError(f"--optimization {optimization}: expected one of {', '.join(OPT_LEVELS)}")
    set_threads(threads)
    config = bench_config(pipeline, pipeline_file, batch_size, max_pulses, overrides)
    torch.manual_seed(0)
    model = build(config).eval()
    B, L = config.train.batch_size, config.max_pulses
    if lengths == "max":
        batches = [synthetic_batch(model.feature_dim, [L] * B, event_dim=model.event_dim, seed=0)]
    else:
        batches = _data_batches(lengths, model, B, steps)
    timed = [batches[i % len(batches)] for i in range(steps)]
    names = input_names(model)
    eager = ExportModel(model).eval()
    args = [example_inputs(model, b) for b in timed]
    feeds = [batch_inputs(b, names) for b in timed]
    with tempfile.TemporaryDirectory(prefix="icezoo-bench-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, path, timed[0])
        session = onnx_session(path, torch.get_num_threads(), optimization)

    def run_eager():
        with torch.inference_mode():
            return [[t.numpy() for t in eager(*a)] for a in args]

    def run_onnx():
        return [session.run(None, f) for f in feeds]

    events = sum(b.num_events for b in timed)
    times: dict[str, list[float]] = {"eager": [], "onnx": []}
    for r in range(rounds + 1):  # round 0 warms up
        for name, fn in (("eager", run_eager), ("onnx", run_onnx)):
            t0 = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t0)
    diff = max(float(abs(torch.as_tensor(g).double() - torch.as_tensor(w).double()).max())
               for gs, ws in zip(run_onnx(), run_eager()) for g, w in zip(gs, ws))
    ratios = [e / o for e, o in zip(times["eager"], times["onnx"])]
    real = sum(int(b.mask.sum()) for b in timed)
    return {"pipeline": config.name, "batch_size": B, "max_pulses": L, "lengths": lengths, "steps": steps,
            "rounds": rounds, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "onnxruntime": _ort_version(), "optimization": optimization, "mean_pulses": real / events,
            "eager_events_per_s": events / statistics.median(times["eager"]),
            "onnx_events_per_s": events / statistics.median(times["onnx"]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "max_abs_diff": diff}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def format_bench_export(r: dict[str, Any]) -> str:
    shape = (f"batch {r['batch_size']} x {r['max_pulses']} pulses" if r["lengths"] == "max" else
             f"batch {r['batch_size']}, lengths from {r['lengths'][5:]} (max_pulses {r['max_pulses']}, "
             f"mean {r['mean_pulses']:.1f} pulses/event)")
    return "\n".join([
        f"{r['pipeline']}, {shape}, {r['steps']} batches x {r['rounds']} rounds in turn, {r['threads']} threads "
        f"(torch {r['torch']}, onnxruntime {r['onnxruntime']}, graph optimisation {r['optimization']}):",
        f"  torch eager {r['eager_events_per_s']:,.0f} events/s, onnxruntime {r['onnx_events_per_s']:,.0f} events/s: "
        f"onnxruntime {r['ratio']:.2f}x eager (rounds {r['ratio_min']:.2f}-{r['ratio_max']:.2f})",
        f"  largest output difference {r['max_abs_diff']:.1e}"])
