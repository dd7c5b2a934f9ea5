"""``icezoo simulate``, ``icezoo linefit`` and ``icezoo bench sim``: the built-in simulator and the
classical LineFit baselines from the command line. Heavy imports happen inside the commands."""

from __future__ import annotations

import functools
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer

from icezoo.core.errors import IcezooError


def _peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def simulate_cmd(
    events: int = typer.Option(..., "--events", help="number of training events to write"),
    out: Path = typer.Option(..., "--out", help="dataset directory to create (Kaggle layout)"),
    events_per_batch: Optional[int] = typer.Option(
        None, "--events-per-batch",
        help="events per batch_N.parquet (default: 50,000; smaller sets are cut into 10 files, one held out for validation)"),
    test: bool = typer.Option(False, "--test", help="also write test/ and test_meta.parquet (no truth)"),
    test_events: Optional[int] = typer.Option(None, "--test-events", help="test events (default events // 10)"),
    seed: int = typer.Option(0, "--seed", help="random seed: same seed, same bytes"),
    energy_min: Optional[float] = typer.Option(None, "--energy-min", help="GeV, lower end of the power law (default 100)"),
    energy_max: Optional[float] = typer.Option(None, "--energy-max", help="GeV, upper end of the power law (default 1e7)"),
    spectral_index: Optional[float] = typer.Option(None, "--spectral-index", help="dN/dE ~ E^-index (default 1.9)"),
    frac_through_going: Optional[float] = typer.Option(None, "--frac-through-going", help="weight of through-going tracks (default 0.5)"),
    frac_starting: Optional[float] = typer.Option(None, "--frac-starting", help="weight of starting tracks (default 0.2)"),
    frac_cascade: Optional[float] = typer.Option(None, "--frac-cascade", help="weight of cascades (default 0.3)"),
    noise: Optional[bool] = typer.Option(None, "--noise/--no-noise", help="dark-noise pulses (default on)"),
    max_pulses: Optional[int] = typer.Option(None, "--max-pulses", help="keep at most N earliest pulses per event (default all)"),
    downgoing_excess: Optional[float] = typer.Option(None, "--downgoing-excess", help="extra fraction forced down-going (default 0)"),
    yield_scale: Optional[float] = typer.Option(None, "--yield-scale", help="overall light-yield factor (default 1.0)"),
    spectral_break: Optional[float] = typer.Option(None, "--spectral-break", help="GeV: E^-index-low below it (default 100)"),
    spectral_index_low: Optional[float] = typer.Option(None, "--spectral-index-low", help="spectral index below the break (default -1)"),
    kinematics: Optional[bool] = typer.Option(None, "--kinematics/--no-kinematics", help="neutrino kinematics: lepton/cascade split, opening angle (default on)"),
    stochastic: Optional[bool] = typer.Option(None, "--stochastic/--no-stochastic", help="stochastic muon losses, energy falling along the track (default on)"),
    layered_timing: Optional[bool] = typer.Option(None, "--layered-timing/--no-layered-timing", help="Pandel delays from the local ice table (default on)"),
    deepcore_trigger: Optional[bool] = typer.Option(None, "--deepcore/--no-deepcore", help="SMT3 DeepCore trigger besides SMT8 (default on)"),
    noise_bursts: Optional[bool] = typer.Option(None, "--bursts/--no-bursts", help="correlated noise bursts (default on; off: Poisson)"),
    afterpulses: Optional[bool] = typer.Option(None, "--afterpulses/--no-afterpulses", help="PMT afterpulses (default on)"),
    dom_efficiency_spread: Optional[float] = typer.Option(None, "--dom-efficiency-spread", help="per-DOM efficiency spread (default 0.1; 0 = off)"),
    launch_readout: Optional[bool] = typer.Option(None, "--launch-readout/--no-launch-readout", help="DOM launch readout and soft saturation (default on; off: 10 ns PE grouping)"),
    legacy: bool = typer.Option(False, "--legacy", help="the simulator before issue 11 (every addition off; explicit flags still apply)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out directory"),
) -> None:
    """Simulate IceCube events into the Kaggle layout (train/, train_meta.parquet, sensor_geometry.csv;
    extra truth in train_truth.parquet; with --test also test/, test_meta.parquet, test_truth.parquet)."""
    from icezoo.data.simulator import LEGACY_KNOBS, simulate

    t0 = time.perf_counter()
    given = dict(energy_min=energy_min, energy_max=energy_max, spectral_index=spectral_index,
                 frac_through_going=frac_through_going, frac_starting=frac_starting, frac_cascade=frac_cascade,
                 noise=noise, max_pulses=max_pulses, downgoing_excess=downgoing_excess, yield_scale=yield_scale,
                 spectral_break=spectral_break, spectral_index_low=spectral_index_low, kinematics=kinematics,
                 stochastic=stochastic, layered_timing=layered_timing, deepcore_trigger=deepcore_trigger,
                 noise_bursts=noise_bursts, afterpulses=afterpulses, dom_efficiency_spread=dom_efficiency_spread,
                 launch_readout=launch_readout)
    # unset flags keep SimulatorConfig's defaults (or, with --legacy, the values before issue 11)
    knobs = dict(LEGACY_KNOBS) if legacy else {}
    knobs.update({k: v for k, v in given.items() if v is not None})
    from icezoo.data.io import MAX_EVENTS_PER_FILE, default_events_per_batch

    test_events_per_batch = events_per_batch
    if events_per_batch is None:  # training files cut small enough to train; the test split in full files
        events_per_batch = default_events_per_batch(events)
        test_events_per_batch = MAX_EVENTS_PER_FILE
    from icezoo.core.outputs import check_output

    check_output(out)  # a dataset is never created inside another dataset or a run directory
    try:
        path = simulate(out, events, events_per_batch=events_per_batch, seed=seed, test=test, test_events=test_events,
                        overwrite=overwrite, test_events_per_batch=test_events_per_batch, **knobs)
    except OSError as exc:  # read-only or full filesystem: nothing half-written is left (temporary directory)
        from icezoo.core.atomic import os_reason

        raise IcezooError(f"--out {out}: cannot write the dataset ({os_reason(exc)})") from None
    dt = time.perf_counter() - t0
    typer.echo(f"wrote {events} events to {path} in {dt:.1f} s ({events / dt:,.0f} events/s)")


def _truth_for(data: Path, split: str, event_id, chunk_azimuth, chunk_zenith):
    """(azimuth, zenith) truth: from the chunk (train meta) or, for a simulated test split, from
    DIR/test_truth.parquet; None when there is none."""
    import numpy as np

    if chunk_azimuth is not None:
        return chunk_azimuth, chunk_zenith
    truth_file = data / f"{split}_truth.parquet"
    if not truth_file.is_file():
        return None
    ids, order, azimuth, zenith = _truth_table(truth_file)
    pos = np.searchsorted(ids, event_id, sorter=order)
    pos = order[np.clip(pos, 0, len(ids) - 1)]
    if not np.array_equal(ids[pos], event_id):
        raise IcezooError(f"{truth_file}: does not cover every event of the {split} split")
    return azimuth[pos], zenith[pos]


@functools.lru_cache(maxsize=2)
def _truth_table(truth_file: Path):
    """event_id (with its sort order), azimuth, zenith of a truth file: read once per command, not per batch."""
    import numpy as np
    import polars as pl

    try:
        tr = pl.read_parquet(truth_file, columns=["event_id", "azimuth", "zenith"])
    except Exception as exc:  # noqa: BLE001
        raise IcezooError(f"{truth_file}: cannot read event_id/azimuth/zenith ({str(exc).splitlines()[0]})") from None
    ids = tr["event_id"].to_numpy()
    return ids, np.argsort(ids), tr["azimuth"].to_numpy(), tr["zenith"].to_numpy()


def linefit_cmd(
    data: Path = typer.Option(..., "--data", help="Kaggle-layout dataset directory"),
    improved: bool = typer.Option(False, "--improved", help="improved LineFit (cleaning, Huber fit, refit)"),
    split: str = typer.Option("train", "--split", help="train or test"),
    out: Optional[Path] = typer.Option(None, "--out", help="write predictions (event_id,azimuth,zenith) CSV"),
) -> None:
    """LineFit baseline: prints the mean angular error on a split with truth, or writes predictions."""
    import numpy as np

    from icezoo.core.batch import angles_to_vector, angular_error, vector_to_angles
    from icezoo.recon.linefit import linefit, linefit_improved, read_dataset_chunks

    if split not in ("train", "test"):
        raise IcezooError(f"--split: expected 'train' or 'test', got {split!r}")
    if out is not None and out.is_dir():
        raise IcezooError(f"--out {out}: is a directory (give a file name, e.g. {out / 'linefit.csv'})")
    if out is not None:
        from icezoo.core.outputs import check_output

        check_output(out, dirs=[data])
    from icezoo.data.io import split_events

    fit = linefit_improved if improved else linefit
    ids, azs, zes, errs = [], [], [], []
    have_truth = True
    t0 = time.perf_counter()
    _, batch_ids = split_events(data, split)  # the checks predict makes: unique event_id, no missing batch file
    for _, chunk in read_dataset_chunks(data, split, batch_ids):
        u = fit(chunk)
        az, ze = vector_to_angles(u)
        ids.append(chunk.event_id)
        azs.append(az)
        zes.append(ze)
        truth = _truth_for(Path(data), split, chunk.event_id, chunk.azimuth, chunk.zenith) if have_truth else None
        if truth is None:
            have_truth = False
        else:
            errs.append(angular_error(u, angles_to_vector(*truth)))
    dt = time.perf_counter() - t0
    event_id, azimuth, zenith = np.concatenate(ids), np.concatenate(azs), np.concatenate(zes)
    name = "linefit_improved" if improved else "linefit"
    if out is not None:
        from icezoo.data.kaggle_layout import write_submission

        write_submission(out, event_id, azimuth, zenith)
        typer.echo(f"wrote {len(event_id)} predictions to {out}")
    if have_truth and errs:
        err = np.concatenate(errs)
        typer.echo(f"{name} on {split}: mean angular error {err.mean():.4f} rad over {len(err)} events "
                   f"({len(err) / dt:,.0f} events/s)")
    elif out is None:
        raise IcezooError(f"{data}: the {split} split has no truth to score; give --out to write predictions")


def bench_sim_cmd(
    events: int = typer.Option(20_000, "--events", help="events to simulate"),
    seed: int = typer.Option(0, "--seed"),
    noise: bool = typer.Option(True, "--noise/--no-noise"),
    legacy: bool = typer.Option(False, "--legacy", help="the simulator before issue 11 (every addition off)"),
) -> None:
    """Simulator speed: events/s on one core (one process, numpy single-threaded) and peak memory."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from icezoo.data.simulator import LEGACY_KNOBS, detector, simulate

    knobs = dict(LEGACY_KNOBS) if legacy else {}
    detector()
    with tempfile.TemporaryDirectory(prefix="icezoo-bench-sim-") as tmp:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        simulate(Path(tmp) / "sim", events, events_per_batch=min(events, 50_000), seed=seed, noise=noise, **knobs)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    typer.echo(f"simulate: {events} events in {wall:.2f} s wall, {cpu:.2f} s CPU -> "
               f"{events / wall:,.0f} events/s wall, {events / max(cpu, 1e-9):,.0f} events/s per CPU-second; "
               f"peak RSS {_peak_rss_mib():,.0f} MiB")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add ``simulate`` and ``linefit`` to the main app and ``sim`` to ``icezoo bench``."""
    app.command("simulate")(simulate_cmd)
    app.command("linefit")(linefit_cmd)
    bench.command("sim")(bench_sim_cmd)
