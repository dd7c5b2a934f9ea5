"""``icezoo bench model``: training and inference throughput and peak memory of a pipeline.

Measured on synthetic batches from :func:`icezoo.core.synthetic.synthetic_batch` with *every*
event filled to ``max_pulses`` (the worst case for padding-bound models; real events are shorter,
so real throughput is higher). A training step is forward + fp32 loss + backward + AdamW step;
inference is a forward under ``torch.inference_mode``. Peak memory is ``max_memory_allocated`` on a
GPU; on a CPU the process's peak resident set size (``ru_maxrss``) and its growth over the
benchmark (the model, optimizer state and activations), since torch's CPU allocator keeps no count.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import torch

from icezoo.core.errors import IcezooError
from icezoo.core.synthetic import synthetic_batch
from icezoo.engine.device import PRECISIONS, autocast, device_name, pick_device
from icezoo.zoo import build, pipeline_config


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_model(pipeline: str | None = "default", pipeline_file: str | None = None, batch_size: int | None = None,
                max_pulses: int | None = None, precision: str = "fp32", steps: int = 10, warmup: int = 2,
                overrides: dict[str, Any] | None = None, device: str | None = None,
                threads: int | None = None) -> dict[str, Any]:
    if precision not in PRECISIONS:  # else an unknown name would time fp32 under its label
        raise IcezooError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if threads:
        torch.set_num_threads(threads)
    config = pipeline_config(pipeline if pipeline or not pipeline_file else None, pipeline_file)
    over = dict(overrides or {})
    if batch_size:
        over["train.batch_size"] = batch_size
    if max_pulses:
        over["selection.max_pulses"] = max_pulses
    if over:
        config = config.with_overrides(over)
    dev = pick_device(None, device)
    rss0 = _rss_mib()
    torch.manual_seed(0)
    model = build(config).to(dev)
    B, L = config.train.batch_size, config.max_pulses
    batch = synthetic_batch(model.feature_dim, [L] * B, event_dim=model.event_dim, seed=0).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def train_step():
        with autocast(dev, precision):
            pred = model(batch)
        loss = model.loss(pred.float(), batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer_step():
        with torch.inference_mode(), autocast(dev, precision):
            model(batch)

    result: dict[str, Any] = {"pipeline": config.name, "batch_size": B, "max_pulses": L, "precision": precision,
                              "machine": device_name(dev), "torch": torch.__version__,
                              "parameters": sum(p.numel() for p in model.parameters())}
    for phase, fn in (("train", train_step), ("infer", infer_step)):
        model.train(phase == "train")
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(warmup):
            fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        dt = time.perf_counter() - t0
        result[f"{phase}_events_per_s"] = B * steps / dt
        result[f"{phase}_step_ms"] = 1000 * dt / steps
        if dev.type == "cuda":
            result[f"{phase}_peak_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    if dev.type != "cuda":
        result["peak_rss_mib"] = _rss_mib()
        result["rss_growth_mib"] = _rss_mib() - rss0
    return result


def format_bench(r: dict[str, Any]) -> str:
    mem = (f"peak GPU memory train {r['train_peak_mib']:.0f} MiB, infer {r['infer_peak_mib']:.0f} MiB"
           if "train_peak_mib" in r else
           f"peak RSS {r['peak_rss_mib']:.0f} MiB (+{r['rss_growth_mib']:.0f} MiB during the benchmark)")
    return (f"{r['pipeline']} ({r['parameters']:,} params), batch {r['batch_size']} x {r['max_pulses']} pulses, "
            f"{r['precision']} on {r['machine']} (torch {r['torch']}):\n"
            f"  train {r['train_events_per_s']:.1f} events/s ({r['train_step_ms']:.0f} ms/step), "
            f"infer {r['infer_events_per_s']:.1f} events/s ({r['infer_step_ms']:.0f} ms/step); {mem}")
