"""The simulator's knobs (``SimulatorConfig``), their defaults, the legacy set and the version that
keys the cached default dataset."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from icezoo.core.errors import IcezooError, format_validation_error
from icezoo.data.simulator.constants import (
    DOM_EFFICIENCY_SPREAD, RATE_CASCADE, RATE_STARTING, RATE_THROUGH_GOING,
)

#: the default spectrum (neutrino energy, 10 GeV - 10 PeV): chosen so the written events have
#: Kaggle's pulse-count distribution with the default event-type mix (docs/simulator.md, calibration;
#: E^-1.57 up to 3 PeV with the hand-set mix before issue 23)
SPECTRAL_INDEX = 1.71
ENERGY_MAX = 1.0e7
SPECTRAL_BREAK = 100.0
SPECTRAL_INDEX_LOW = -1.0
#: bump when the physics changes: the cached default dataset is keyed by it
SIMULATOR_VERSION = "2026.12-issue23.1"

_RATES = RATE_THROUGH_GOING + RATE_STARTING + RATE_CASCADE
#: event-type mixes by name (``icezoo simulate --mix``, ``ICEZOO_SIM_MIX`` for the default dataset):
#: ``physics``, the default, from the rates in constants (docs/simulator.md, "Event-type mix"; rounded
#: to 0.01 so that docs and --help state it exactly: 0.13 / 0.26 / 0.61); ``legacy``, the hand-set
#: mix before issue 23
MIXES = {
    "physics": {"frac_through_going": round(RATE_THROUGH_GOING / _RATES, 2),
                "frac_starting": round(RATE_STARTING / _RATES, 2),
                "frac_cascade": round(RATE_CASCADE / _RATES, 2)},
    "legacy": {"frac_through_going": 0.5, "frac_starting": 0.2, "frac_cascade": 0.3},
}
DEFAULT_MIX = MIXES["physics"]

#: knob values that reproduce the simulator before issue 11 (docs/simulator.md, ablation), its
#: hand-set event-type mix included
LEGACY_KNOBS = {**MIXES["legacy"], "energy_min": 100.0, "energy_max": 1.0e7, "spectral_index": 1.9, "spectral_break": 100.0, "kinematics": False, "stochastic": False,
                "layered_timing": False, "deepcore_trigger": False, "noise_bursts": False, "afterpulses": False,
                "dom_efficiency_spread": 0.0, "launch_readout": False}


class SimulatorConfig(BaseModel):
    """Knobs of ``icezoo simulate`` (every default documented; unknown names are an error)."""

    model_config = ConfigDict(extra="forbid")

    energy_min: float = Field(10.0, gt=0, description="lowest energy of the power law, GeV (the neutrino's)")
    energy_max: float = Field(ENERGY_MAX, gt=0, description="highest energy of the power law, GeV")
    spectral_index: float = Field(SPECTRAL_INDEX, ge=0, description="dN/dE ~ E^-index (above spectral_break)")
    spectral_break: float = Field(SPECTRAL_BREAK, gt=0, description="GeV: below it the spectrum is E^-spectral_index_low")
    spectral_index_low: float = Field(SPECTRAL_INDEX_LOW, description="dN/dE ~ E^-index_low below spectral_break")
    frac_through_going: float = Field(DEFAULT_MIX["frac_through_going"], ge=0,
                                      description="weight of through-going muon tracks (nu_mu CC outside the volume)")
    frac_starting: float = Field(DEFAULT_MIX["frac_starting"], ge=0,
                                 description="weight of starting tracks (nu_mu CC, nu_tau CC with tau -> mu, in the volume)")
    frac_cascade: float = Field(DEFAULT_MIX["frac_cascade"], ge=0,
                                description="weight of cascades (nu_e and nu_tau CC, NC of every flavour)")
    noise: bool = Field(True, description="dark-noise pulses over the readout window")
    max_pulses: int | None = Field(None, gt=0, description="keep at most this many (earliest) pulses per event; None = all")
    downgoing_excess: float = Field(
        0.0, ge=0, le=1, description="extra fraction of events forced down-going (0 = isotropic, cos zenith uniform)"
    )
    yield_scale: float = Field(1.0, gt=0, description="overall light-yield factor (calibrated default 1.0)")
    generation_radius: float = Field(800.0, gt=0, description="m: impact-disk radius of through-going tracks")
    vertex_radius: float = Field(650.0, gt=0, description="m: radius of the vertex cylinder (starting tracks, cascades)")
    vertex_half_height: float = Field(600.0, gt=0, description="m: half height of the vertex cylinder")
    # the physics of issue 11, each with a switch (False = the simulator before it)
    kinematics: bool = Field(True, description="simulate the neutrino: lepton/cascade split, CC opening angle, visible fraction")
    stochastic: bool = Field(True, description="stochastic muon losses (1/v spectrum) and the energy falling along the track")
    layered_timing: bool = Field(True, description="Pandel delays from the local ice (depth-dependent table), not bulk H2")
    deepcore_trigger: bool = Field(True, description="SMT3 DeepCore trigger besides SMT8")
    noise_bursts: bool = Field(True, description="correlated noise bursts of 3-4 hits (off: all noise Poisson)")
    afterpulses: bool = Field(True, description="PMT afterpulses 6 +- 2 us after photo-electrons")
    dom_efficiency_spread: float = Field(DOM_EFFICIENCY_SPREAD, ge=0, le=0.3,
                                         description="relative per-DOM efficiency spread, fixed per DOM and seed (0 = off)")
    launch_readout: bool = Field(True, description="DOM launches: HLC waveforms (ATWD/FADC), SLC charge stamps (off: 10 ns PE grouping)")

    @model_validator(mode="after")
    def _check(self) -> "SimulatorConfig":
        if self.energy_min >= self.energy_max:
            raise ValueError("energy_min must be below energy_max")
        if self.frac_through_going + self.frac_starting + self.frac_cascade <= 0:
            raise ValueError("at least one event-type fraction must be positive")
        return self

    @property
    def type_fractions(self) -> np.ndarray:
        """Event-type proportions (normalised) in EVENT_TYPES order: exact in the written events."""
        f = np.array([self.frac_through_going, self.frac_starting, self.frac_cascade], dtype=np.float64)
        return f / f.sum()


def mix_knobs(name: str, where: str = "--mix") -> dict:
    """The three event-type weights of a named mix (``MIXES``); an unknown name is one IcezooError line."""
    if name not in MIXES:
        raise IcezooError(f"{where}: unknown event-type mix {name!r} (known: {', '.join(MIXES)})")
    return dict(MIXES[name])


def make_config(**knobs) -> SimulatorConfig:
    """SimulatorConfig from keyword knobs; a bad knob is one IcezooError line naming it."""
    try:
        return SimulatorConfig(**knobs)
    except ValidationError as exc:
        raise IcezooError(format_validation_error("simulate", exc)) from None
