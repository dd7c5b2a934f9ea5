"""``icezoo simulate``: the built-in simulator writes a dataset in the Kaggle layout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from icezoo.core.errors import IcezooError


def cmd_simulate(
    events: int = typer.Option(..., "--events", help="number of training events to write"),
    out: Path = typer.Option(..., "--out", help="dataset directory to create (Kaggle layout)"),
    events_per_batch: Optional[int] = typer.Option(
        None, "--events-per-batch",
        help="events per batch_N.parquet (default: 50,000; smaller sets are cut into 10 files, one held out for validation)"),
    test: bool = typer.Option(False, "--test", help="also write test/ and test_meta.parquet (no truth)"),
    test_events: Optional[int] = typer.Option(None, "--test-events", help="test events (default events // 10)"),
    seed: int = typer.Option(0, "--seed", help="random seed: same seed, same bytes"),
    energy_min: Optional[float] = typer.Option(None, "--energy-min", help="GeV, lower end of the power law (default 10)"),
    energy_max: Optional[float] = typer.Option(None, "--energy-max", help="GeV, upper end of the power law (default 1e7)"),
    spectral_index: Optional[float] = typer.Option(None, "--spectral-index", help="dN/dE ~ E^-index above the break (default 1.71)"),
    mix: Optional[str] = typer.Option(
        None, "--mix", help="event-type mix: physics (default, 0.13/0.26/0.61, derived in docs/simulator.md) or legacy "
                            "(the hand-set 0.5/0.2/0.3 before issue 23); --frac-* flags still apply after it"),
    frac_through_going: Optional[float] = typer.Option(None, "--frac-through-going", help="weight of through-going tracks (default 0.13)"),
    frac_starting: Optional[float] = typer.Option(None, "--frac-starting", help="weight of starting tracks (default 0.26)"),
    frac_cascade: Optional[float] = typer.Option(None, "--frac-cascade", help="weight of cascades (default 0.61)"),
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
    legacy: bool = typer.Option(False, "--legacy", help="the simulator before issue 11 (every addition off, the legacy mix; explicit flags still apply)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out directory"),
) -> None:
    """Simulate IceCube events into the Kaggle layout (train/, train_meta.parquet, sensor_geometry.csv;
    extra truth in train_truth.parquet; with --test also test/, test_meta.parquet, test_truth.parquet)."""
    from icezoo.data.simulator import LEGACY_KNOBS, mix_knobs, simulate

    t0 = time.perf_counter()
    given = dict(energy_min=energy_min, energy_max=energy_max, spectral_index=spectral_index,
                 frac_through_going=frac_through_going, frac_starting=frac_starting, frac_cascade=frac_cascade,
                 noise=noise, max_pulses=max_pulses, downgoing_excess=downgoing_excess, yield_scale=yield_scale,
                 spectral_break=spectral_break, spectral_index_low=spectral_index_low, kinematics=kinematics,
                 stochastic=stochastic, layered_timing=layered_timing, deepcore_trigger=deepcore_trigger,
                 noise_bursts=noise_bursts, afterpulses=afterpulses, dom_efficiency_spread=dom_efficiency_spread,
                 launch_readout=launch_readout)
    # unset flags keep SimulatorConfig's defaults (or, with --legacy, the values before issue 11);
    # --mix sets the three event-type weights, explicit --frac-* flags override them
    knobs = dict(LEGACY_KNOBS) if legacy else {}
    if mix is not None:
        knobs.update(mix_knobs(mix))
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
