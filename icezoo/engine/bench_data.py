"""``icezoo bench data`` and ``icezoo bench sim``: the speed of the data side, no model involved.

``bench_data`` times the training loader from parquet to padded batch tensors (aux_first selection;
kaggle_norm, qe, ice_properties features, taken from the registry), one worker, best of N passes,
wall clock and CPU time of this process, then one more pass under ``tracemalloc`` for the
numpy/Python peak (polars' own buffers show only in the peak RSS). ``bench_sim`` times the
simulator on one core. Both report the process's peak RSS (:func:`icezoo.core.memory.peak_rss_mib`).

The simulator and the loader are imported inside the functions: ``bench_sim`` pins numpy's
threads (``OMP_NUM_THREADS=1``) before numpy is loaded, and its peak RSS must not count torch.
"""

from __future__ import annotations

import os
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Iterator

from icezoo.core.memory import peak_rss_mib

#: the fixed chain ``bench data`` times (names in the registry)
BENCH_SELECTION = "aux_first"
BENCH_FEATURES = ("kaggle_norm", "qe", "ice_properties")


def bench_chain(max_pulses: int):
    """(selection, feature extractors) of the benchmark, built from the registry with default params."""
    from icezoo.zoo import registry

    reg = registry()

    def make(kind: str, name: str, **params):
        cls = reg.get(kind, name).cls
        return cls(cls.Config(**params))

    return make("selection", BENCH_SELECTION, max_pulses=max_pulses), [make("features", n) for n in BENCH_FEATURES]


def bench_data(data: str | Path | None, widths: list[int], split: str = "train", batch_size: int = 256,
               batches: str = "cycle", events: int = 40_000, passes: int = 3, echo=print) -> Iterator[dict[str, Any]]:
    """One result per ``max_pulses`` in ``widths``, yielded as each is measured. Without ``data``, a
    temporary simulated dataset of ``events`` events (removed afterwards; ``echo`` says so)."""
    with tempfile.TemporaryDirectory(prefix="icezoo-bench-data-") as tmp:
        if data is None:
            from icezoo.data.simulator import simulate

            data = Path(tmp) / "data"
            t0 = time.perf_counter()
            simulate(data, events, events_per_batch=min(50_000, events), seed=0)
            echo(f"temporary dataset: {events} events (simulator, {time.perf_counter() - t0:.1f} s) in {data}")
        from icezoo.data.io import list_batches, parse_batches

        ids = parse_batches(batches, list_batches(data, split))
        for width in widths:
            yield {"max_pulses": width, "files": len(ids), "batch_size": batch_size, "passes": max(1, passes),
                   **_time_loader(data, split, ids, width, batch_size, max(1, passes))}


def _time_loader(data, split: str, ids: list[int], width: int, batch_size: int, passes: int) -> dict[str, Any]:
    """Best wall and CPU time of ``passes`` loader passes, then the traced peak of one more."""
    from icezoo.data.loader import make_loader

    sel, feats = bench_chain(width)
    best = best_cpu = float("inf")
    n_events = n_steps = 0
    for p in range(passes):
        loader = make_loader(data, split, ids, sel, feats, batch_size, shuffle=True, seed=0, epoch=p)
        t0, c0 = time.perf_counter(), time.process_time()
        n_events = n_steps = 0
        for batch in loader:
            n_events += batch.num_events
            n_steps += 1
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    tracemalloc.start()
    try:
        for _ in make_loader(data, split, ids, sel, feats, batch_size, shuffle=True, seed=0, epoch=0):
            pass
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"events": n_events, "steps": n_steps, "wall_s": best, "cpu_s": best_cpu, "skipped": loader.skipped,
            "traced_peak_mib": traced_peak / 2**20, "peak_rss_mib": peak_rss_mib()}


def format_bench_data(r: dict[str, Any]) -> str:
    return (f"max_pulses={r['max_pulses']}: {r['events'] / r['wall_s']:,.0f} events/s wall, "
            f"{r['events'] / r['cpu_s']:,.0f} events per CPU-second ({r['events']} events, {r['steps']} batches of "
            f"<= {r['batch_size']}, best of {r['passes']}: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU; "
            f"{r['files']} file(s), {r['skipped']} skipped < 2 pulses); peak traced {r['traced_peak_mib']:.0f} MiB, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB")


def bench_sim(events: int = 20_000, seed: int = 0, noise: bool = True, legacy: bool = False) -> dict[str, Any]:
    """Simulator speed on one core (one process, numpy single-threaded): wall and CPU seconds, peak RSS."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from icezoo.data.simulator import LEGACY_KNOBS, detector, simulate

    knobs = dict(LEGACY_KNOBS) if legacy else {}
    detector()  # the detector tables are built once per process, outside the timing
    with tempfile.TemporaryDirectory(prefix="icezoo-bench-sim-") as tmp:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        simulate(Path(tmp) / "sim", events, events_per_batch=min(events, 50_000), seed=seed, noise=noise, **knobs)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    return {"events": events, "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak_rss_mib()}


def format_bench_sim(r: dict[str, Any]) -> str:
    return (f"simulate: {r['events']} events in {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU -> "
            f"{r['events'] / r['wall_s']:,.0f} events/s wall, {r['events'] / max(r['cpu_s'], 1e-9):,.0f} events/s "
            f"per CPU-second; peak RSS {r['peak_rss_mib']:,.0f} MiB")
