"""``icezoo bench model``: training and inference throughput, FLOPs and peak memory of a pipeline.

Batches: by default synthetic (:func:`icezoo.core.synthetic.synthetic_batch`) with *every* event
filled to ``max_pulses`` (the worst case for padding-bound models); with ``lengths="data:DIR"`` the
first batches the training loader yields from DIR's train split (its selection, features and
length bucketing), so the pulse counts and the padding are those of that dataset. A training step
is forward + fp32 loss + backward + AdamW step; inference is a forward under
``torch.inference_mode``.

FLOPs are the matmul work of the timed batches (:mod:`icezoo.engine.flops`), reported per event
and as achieved GFLOP/s; the matmul roof is one large matmul timed in the same process, precision
and threads, so the roof fraction compares like with like. Peak memory is ``max_memory_allocated``
on a GPU; on a CPU the process's peak resident set size (``ru_maxrss``) and its growth over the
benchmark (the model, optimizer state and activations), since torch's CPU allocator keeps no count.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icezoo.core.errors import IcezooError
from icezoo.core.memory import peak_rss_mib
from icezoo.core.pipelines import pipeline_config
from icezoo.core.synthetic import synthetic_batch
from icezoo.data.io import list_batches
from icezoo.data.kaggle_layout import write_submission
from icezoo.data.loader import make_loader
from icezoo.data.simulator import simulate
from icezoo.engine.checkpoints import load_run_model
from icezoo.engine.device import PRECISIONS, autocast, device_name, pick_device, set_threads
from icezoo.engine.flops import count_flops, matmul_roof
from icezoo.engine.loaders import make_eval_loader
from icezoo.engine.predict import infer, predict
from icezoo.engine.train import TrainOptions, train
from icezoo.zoo import build, registry


def _data_batches(spec: str, model, batch_size: int, n: int) -> list:
    """The first ``n`` batches the training loader yields from ``data:DIR`` (fewer if the split is smaller)."""
    if not spec.startswith("data:") or not spec[5:]:
        raise IcezooError(f"--lengths {spec!r}: expected 'max' or 'data:DIR'")
    data = Path(spec[5:])
    if not data.is_dir():
        raise IcezooError(f"--lengths {spec}: {data} is not a directory")
    loader = make_loader(data, "train", list_batches(data, "train"), model.selection, model.features, batch_size,
                         shuffle=True, seed=0)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == n:
            break
    if not batches:
        raise IcezooError(f"--lengths {spec}: no events with at least 2 pulses in {data}/train")
    return batches


def bench_config(pipeline: str | None, pipeline_file: str | None, batch_size: int | None, max_pulses: int | None,
                 overrides: dict[str, Any] | None):
    """The benched pipeline's config: a registry name or a file, with the bench's size flags and --set applied."""
    config = pipeline_config(pipeline if pipeline or not pipeline_file else None, pipeline_file, reg=registry())
    over = dict(overrides or {})
    if batch_size:
        over["train.batch_size"] = batch_size
    if max_pulses:
        over["selection.max_pulses"] = max_pulses
    return config.with_overrides(over) if over else config


def bench_model(pipeline: str | None = "default", pipeline_file: str | None = None, batch_size: int | None = None,
                max_pulses: int | None = None, precision: str = "fp32", steps: int = 10, warmup: int = 2,
                overrides: dict[str, Any] | None = None, device: str | None = None,
                threads: int | None = None, lengths: str = "max", flops: bool = True,
                phases: tuple[str, ...] = ("train", "infer")) -> dict[str, Any]:
    """Time ``steps`` training and/or inference steps of a pipeline after ``warmup`` untimed ones
    (see the module docstring for what is measured and how)."""
    if precision not in PRECISIONS:  # else an unknown name would time fp32 under its label
        raise IcezooError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    set_threads(threads)
    config = bench_config(pipeline, pipeline_file, batch_size, max_pulses, overrides)
    dev = pick_device(None, device)
    rss0 = peak_rss_mib()
    torch.manual_seed(0)
    model = build(config).to(dev)
    B, L = config.train.batch_size, config.max_pulses
    if lengths == "max":
        batches = [synthetic_batch(model.feature_dim, [L] * B, event_dim=model.event_dim, seed=0)]
    else:
        batches = _data_batches(lengths, model, B, steps)
    batches = [b.to(dev) for b in batches]
    timed = [batches[i % len(batches)] for i in range(steps)]  # the batches of the timed steps, in order
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    events = sum(b.num_events for b in timed)
    real = sum(int(b.mask.sum()) if b.pulses is None else b.pulses.num_pulses for b in timed)  # every pulse
    padded = sum(b.mask.numel() for b in timed)  # slots: pulses, or sensor tokens (batch.pulses)
    result: dict[str, Any] = {"pipeline": config.name, "batch_size": B, "max_pulses": L, "precision": precision,
                              "machine": device_name(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
                              "parameters": sum(p.numel() for p in model.parameters()), "lengths": lengths,
                              "mean_pulses": real / events, "mean_padded": padded / events}
    if any(b.pulses is not None for b in timed):
        result["mean_tokens"] = sum(int(b.mask.sum()) for b in timed) / events
        result["max_pulses"] = model.selection.config.max_pulses  # None: no pulse cap (sensor tokens)
    if flops:
        result["roof_gflops"] = matmul_roof(dev, dtype)
    steppers = _steppers(model, dev, precision)
    for phase in ("train", "infer"):
        if phase in phases:
            model.train(phase == "train")
            result.update(_time_phase(phase, steppers[phase], batches, timed, warmup, dev, flops,
                                      result.get("roof_gflops")))
    if dev.type != "cuda":
        result["peak_rss_mib"] = peak_rss_mib()
        result["rss_growth_mib"] = peak_rss_mib() - rss0
    return result


def _steppers(model, dev: torch.device, precision: str) -> dict[str, Any]:
    """One training step (forward, fp32 loss, backward, AdamW step) and one inference forward."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step(batch):
        with autocast(dev, precision):
            pred = model(batch)
        loss = model.loss(pred.float(), batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer_step(batch):
        with torch.inference_mode(), autocast(dev, precision):
            model(batch)

    return {"train": train_step, "infer": infer_step}


def _time_phase(phase: str, fn, batches: list, timed: list, warmup: int, dev: torch.device, flops: bool,
                roof_gflops: float | None) -> dict[str, Any]:
    """Warm up, time ``fn`` over the ``timed`` batches, then (with ``flops``) count their FLOPs."""
    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    out: dict[str, Any] = {}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for i in range(warmup):
        fn(batches[i % len(batches)])
    sync()
    t0 = time.perf_counter()
    for batch in timed:
        fn(batch)
    sync()
    dt = time.perf_counter() - t0
    events = sum(b.num_events for b in timed)
    out[f"{phase}_events_per_s"] = events / dt
    out[f"{phase}_step_ms"] = 1000 * dt / len(timed)
    if dev.type == "cuda":
        out[f"{phase}_peak_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    if flops:  # counted after the timing (the counter slows the step down), on the same batches
        per_batch = {key: count_flops(lambda b=b: fn(b)) for key, b in {id(b): b for b in timed}.items()}
        total = sum(per_batch[id(b)] for b in timed)
        out[f"{phase}_flops_per_event"] = total / events
        out[f"{phase}_gflops"] = total / dt / 1e9
        out[f"{phase}_roof_fraction"] = out[f"{phase}_gflops"] / roof_gflops
    return out


def format_bench(r: dict[str, Any]) -> str:
    mem = (", ".join(f"peak GPU memory {p} {r[f'{p}_peak_mib']:.0f} MiB" for p in ("train", "infer")
                     if f"{p}_peak_mib" in r)
           if "peak_rss_mib" not in r else
           f"peak RSS {r['peak_rss_mib']:.0f} MiB (+{r['rss_growth_mib']:.0f} MiB during the benchmark)")
    shape = (f"batch {r['batch_size']} x {r['max_pulses']} pulses" if r["lengths"] == "max" else
             f"batch {r['batch_size']}, lengths from {r['lengths'][5:]} (max_pulses {r['max_pulses']}, "
             f"mean {r['mean_pulses']:.1f} pulses/event, "
             + (f"in {r['mean_tokens']:.1f} sensor tokens padded to {r['mean_padded']:.1f})" if "mean_tokens" in r
                else f"padded to {r['mean_padded']:.1f})"))
    lines = [f"{r['pipeline']} ({r['parameters']:,} params), {shape}, {r['precision']} on {r['machine']} "
             f"(torch {r['torch']}, {r['threads']} threads):"]
    for phase, word in (("train", "train"), ("infer", "infer")):
        if f"{phase}_events_per_s" not in r:
            continue
        line = (f"  {word} {r[f'{phase}_events_per_s']:.1f} events/s ({r[f'{phase}_step_ms']:.0f} ms/step)")
        if f"{phase}_gflops" in r:
            line += (f", {r[f'{phase}_flops_per_event'] / 1e6:,.1f} MFLOP/event, {r[f'{phase}_gflops']:.1f} GFLOP/s = "
                     f"{100 * r[f'{phase}_roof_fraction']:.0f}% of the matmul roof")
        lines.append(line)
    if "roof_gflops" in r:
        lines.append(f"  matmul roof {r['roof_gflops']:.1f} GFLOP/s (1024^2 {r['precision']} matmul, same process); {mem}")
    else:
        lines.append(f"  {mem}")
    return "\n".join(lines)


def bench_predict(pipeline: str | None = "default", pipeline_file: str | None = None, run: str | None = None,
                  runs_dir: str = "runs", data: str | None = None, events: int = 20_000, batch_size: int = 256,
                  workers: int = 0, device: str | None = None, threads: int | None = None, echo=print) -> dict[str, Any]:
    """``icezoo predict`` end to end on a test split, timed, then its stages one by one.

    Without ``run``, the pipeline is trained for one step on a small simulated train split (weights
    do not change the speed) in a temporary runs directory. Without ``data``, a temporary simulated
    dataset with ``events`` test events (and a small train split). The total is :func:`predict`
    itself: read, select, featurise, model, write. The stages are then timed apart on the same
    split: the loader (read + select + featurise into padded batches), the model over those
    batches (inference mode, the run's precision) and the submission writer.
    """
    set_threads(threads)
    if run is not None:  # a run that is not there is an error now, not after simulating a dataset
        load_run_model(run, runs_dir)
    if data is not None and not Path(data).exists():
        raise IcezooError(f"--data {data}: no such file or directory")
    with tempfile.TemporaryDirectory(prefix="icezoo-bench-predict-") as tmp:
        tmp = Path(tmp)
        if data is None:
            t0 = time.perf_counter()
            data = str(simulate(tmp / "data", 100, events_per_batch=50_000, seed=0, test=True, test_events=events))
            echo(f"temporary dataset: {events:,} simulated test events ({time.perf_counter() - t0:.0f} s)")
        if run is None:  # a one-step run on a small simulated train split of its own
            runs_dir = str(tmp / "runs")
            train_data = str(simulate(tmp / "train", 2 * max(256, batch_size), events_per_batch=max(256, batch_size),
                                      seed=1))
            run = str(train(TrainOptions(pipeline=pipeline, pipeline_file=pipeline_file, data=train_data, max_steps=1,
                                         runs_dir=runs_dir, name="BENCH_PREDICT", progress=False, device=device)))
        out = tmp / "submission.csv"
        t0, c0 = time.perf_counter(), time.process_time()
        counts = predict(run, data, split="test", out=out, runs_dir=runs_dir, batch_size=batch_size, workers=workers,
                         device=device, echo=None)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0

        _, info, config, model, _ = load_run_model(run, runs_dir)
        dev = pick_device(None, device)
        model.to(dev)
        precision = (info.get("precision") or {}).get("final") or config.train.precision
        ids = list_batches(data, "test")
        t0 = time.perf_counter()
        batches = [b for bid in ids for b in make_eval_loader(data, "test", [bid], model, batch_size, workers=workers)]
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = infer(model, batches, dev, precision)
        t_model = time.perf_counter() - t0
        n = counts["events"]
        t0 = time.perf_counter()
        write_submission(tmp / "again.csv", np.arange(n, dtype=np.int64), np.zeros(n), np.zeros(n))
        t_write = time.perf_counter() - t0
    return {"pipeline": config.name, "events": n, "model_events": int(len(res["event_id"])), "batch_size": batch_size,
            "workers": workers, "threads": torch.get_num_threads(), "machine": device_name(dev),
            "torch": torch.__version__, "precision": precision, "wall_s": wall, "cpu_s": cpu,
            "events_per_s": n / wall, "events_per_cpu_s": n / cpu, "load_s": t_load, "model_s": t_model,
            "write_s": t_write, "peak_rss_mib": peak_rss_mib()}


def format_bench_predict(r: dict[str, Any]) -> str:
    return (f"icezoo predict, {r['pipeline']} ({r['precision']}), {r['events']:,} test events, batch {r['batch_size']}, "
            f"{r['workers']} workers, {r['threads']} threads on {r['machine']} (torch {r['torch']}):\n"
            f"  {r['events_per_s']:,.0f} events/s wall ({r['wall_s']:.2f} s), {r['events_per_cpu_s']:,.0f} events per "
            f"CPU-second of this process; peak RSS {r['peak_rss_mib']:.0f} MiB\n"
            f"  stages apart: read+select+featurise {r['load_s']:.2f} s ({r['events'] / r['load_s']:,.0f} events/s), "
            f"model {r['model_s']:.2f} s ({r['model_events'] / r['model_s']:,.0f} events/s), "
            f"write {r['write_s']:.2f} s")
