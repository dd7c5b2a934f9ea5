"""The built-in IceCube event simulator: realistic pulses in the Kaggle layout, no download needed.

Every score in icezoo is measured on what this package writes, so each physical choice is stated and
sourced in docs/simulator.md. In short, per event:

1. truth: the neutrino; azimuth uniform, cos(zenith) uniform (optional down-going excess), a broken
   power law 10 GeV - 10 PeV; the direction vector ``u`` points to where it came from;
2. kinematics: the CC muon and a cascade's light axis leave at the kinematic angle (median
   0.7 deg (E/TeV)^-0.7), with the lepton / hadronic split of the energy (NC cascades see only y E);
3. light sources: a muon track emitting Cherenkov light at 40.7 deg, with stochastic losses (1/v
   spectrum) as cascades along it and its energy falling until it stops, and/or a point cascade
   with emission peaked at the Cherenkov angle around its axis;
4. expected photo-electrons per DOM from the yield, distance, the ice table's depth-dependent absorption,
   the Pandel absorption factor, QE (1.35 on high-QE DeepCore DOMs) x a per-DOM efficiency and the
   down-facing PMT's angular acceptance; Poisson photo-electron counts;
5. arrival times: direct (Cherenkov-geometry) time with group index 1.356, plus a Pandel Gamma delay
   scaled by the local ice (dust: late), plus 15 ns jitter;
6. readout: DOM launches (HLC waveforms unfolded into pulses, SLC charge stamps), SMT8 and SMT3
   (DeepCore) triggers, a [-4 us, +6 us] readout window, dark noise with correlated bursts,
   afterpulses, soft saturation, charges quantised to 0.025 PE, and the Kaggle clock (trigger start
   at 9900 ns, so the window opens near 5900 ns).

Each addition of issue 11 has a switch in ``SimulatorConfig`` (``LEGACY_KNOBS``: all off). Everything
is vectorised over a chunk of candidate events (no Python loop per pulse or per event). Same seed,
same arguments -> the same bytes.

The modules follow those stages: ``constants`` (every figure with its source), ``config`` (the knobs),
``detector`` (detector and ice tables), ``candidates`` (the DOMs near a source; the drawn truth),
``kinematics`` (neutrino kinematics, muon losses), ``light`` (sources -> photo-electrons),
``readout`` (launches, pulses, triggers, noise), ``keys`` (packed sort keys), ``events`` (assembly of
a chunk, exact quotas) and ``writer`` (the Kaggle layout on disk). The names below are the public
API; tests reach the stages through their modules.
"""

from __future__ import annotations

from icezoo.core.detector import C_ICE, C_VACUUM, N_GROUP, N_SENSORS, SURFACE_Z  # noqa: F401
from icezoo.data.simulator.config import (  # noqa: F401
    DEFAULT_MIX, ENERGY_MAX, LEGACY_KNOBS, MIXES, SIMULATOR_VERSION, SPECTRAL_BREAK, SPECTRAL_INDEX,
    SPECTRAL_INDEX_LOW, SimulatorConfig, make_config, mix_knobs,
)
from icezoo.data.simulator.constants import *  # noqa: F401,F403  (the physical constants)
from icezoo.data.simulator.candidates import sample_energies  # noqa: F401
from icezoo.data.simulator.detector import BAND_EDGES, detector, dom_response  # noqa: F401
from icezoo.data.simulator.events import simulate_events, zenith_bin_weights  # noqa: F401
from icezoo.data.simulator.kinematics import (  # noqa: F401
    kinematic_median_angle, muon_energy_after, muon_photons_per_m, muon_range, stochastic_losses,
)
from icezoo.data.simulator.readout import afterpulse_times, noise_hits  # noqa: F401
from icezoo.data.simulator.writer import simulate  # noqa: F401
