"""The built-in IceCube event simulator: realistic pulses in the Kaggle layout, no download needed.

Every score in icezoo is measured on what this module writes, so each physical choice is stated and
sourced in docs/simulator.md (figures from ../shared/physics.md). In short, per event:

1. truth: the neutrino; azimuth uniform, cos(zenith) uniform (optional down-going excess), a broken
   power law 10 GeV - 3 PeV; the direction vector ``u`` points to where it came from;
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
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from functools import lru_cache
from typing import NamedTuple
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from icezoo.core.detector import C_ICE, C_VACUUM, N_GROUP, N_SENSORS, SURFACE_Z  # group speed C_ICE = 0.2210 m/ns
from icezoo.core.errors import IcezooError, format_validation_error
from icezoo.core.memory import keep_freed_memory
from icezoo.data import kaggle_layout

# ----------------------------------------------------------------------------------------------
# Physical constants (../shared/physics.md unless stated)
# ----------------------------------------------------------------------------------------------
N_PHASE = 1.3195  # phase index at 400 nm
COS_C = 1.0 / N_PHASE  # Cherenkov angle 40.7 deg
SIN_C = math.sqrt(1.0 - COS_C**2)
TAN_C = SIN_C / COS_C
#: Pandel "H2" parameters (AMANDA): they govern the *timing* (delay shape), depth-independent.
PANDEL_TAU = 556.7  # ns
PANDEL_LAMBDA = 33.29  # m
PANDEL_ABS = 98.0  # m
PANDEL_RHO = 1.0 / PANDEL_TAU + C_ICE / PANDEL_ABS  # 1/ns, 1/rho = 246.8 ns
JITTER_NS = 15.0
#: bare-muon light: detectable photons per metre (nominal DOM acceptance); EM cascade = 5.25 m/GeV
MUON_PHOTONS_PER_M = 2.5e3
CASCADE_M_PER_GEV = 5.25
HADRONIC_FACTOR = 0.88  # hadronic / EM light (physics.md: ~0.88 at 10 TeV; used at all energies)
#: muon energy loss dE/dx = a + b E in ice (PDG muon tables: a ~ 0.24 GeV/m, b ~ 3.2e-4 /m)
MUON_LOSS_A = 0.24
MUON_LOSS_B = 3.2e-4
#: stochastic losses: dN/(dv ds) = b / v in the lost fraction v (normalised so the mean loss rate is
#: b E); a loss is sampled when v > v_min = min(STOCH_V_CUT, STOCH_E_CUT / E0) (E0: the muon's energy
#: where sampling starts; the PROPOSAL-style e_cut/v_cut pair); below it the loss is continuous
STOCH_V_CUT = 0.05
STOCH_E_CUT = 0.5  # GeV
#: losses are sampled where the muon is within this distance of the detector centre (m); farther
#: away the muon is continuous (no DOM sees a loss there)
STOCH_RADIUS = 1200.0
#: through-going muons enter that sphere with at least this energy (GeV; speed cut, the neutrino
#: energies are drawn accordingly, see _entering_muons): with a 50 GeV cut, none of 1,500 written
#: through-going muons had entered with less than 150 GeV (1% below 223 GeV)
MUON_MIN_ENTRY_ENERGY = 150.0
#: CC kinematics: median angle between the neutrino and the muon (or a cascade's light axis),
#: 0.7 deg x (E_nu / TeV)^-0.7 (the issue's figure; IceCube's usual kinematic-angle estimate)
KIN_MEDIAN_DEG, KIN_INDEX = 0.7, 0.7
#: share of neutral-current interactions among cascade events (sigma_NC/sigma_CC ~ 0.31, flavours
#: 1:1:1 with nu_e and nu_tau CC as cascades: 0.93 / (2 + 0.93))
NC_FRACTION_CASCADES = 1.0 / 3.0
#: DOM: 13-inch glass sphere (IceCube instrumentation paper), geometric cross-section in m^2
DOM_AREA = math.pi * 0.1651**2
HQE_FACTOR = 1.35
NOISE_RATE_NS = 560e-9  # dark rate per ns, standard DOM (all noise: uncorrelated + bursts)
NOISE_RATE_HQE_NS = 780e-9  # high-QE DOM
#: of the 560 Hz, ~250 Hz are uncorrelated (Poisson); the rest comes in correlated bursts of 3-4
#: hits (physics.md); high-QE DOMs scale both parts by 780/560. The gaps between the hits of a
#: burst are exponential with this mean (our assumption: the sources give no time scale)
NOISE_UNCORRELATED_NS = 250e-9
BURST_SIZES = (3, 4)
BURST_GAP_NS = 2000.0
#: afterpulses: probability per photo-electron (IceCube PMT paper, NIM A 618 (2010) 139: ~0.06)
#: and delay ~ Gaussian 6 +- 2 us (physics.md)
AFTERPULSE_PROB = 0.06
AFTERPULSE_DELAY_NS, AFTERPULSE_SPREAD_NS = 6000.0, 2000.0
#: per-DOM efficiency: relative spread (Gaussian, clipped at +-3 sigma), fixed per DOM and seed
DOM_EFFICIENCY_SPREAD = 0.1
#: readout: local coincidence +-1 us on the same string within 2 DOMs; SMT8 = 8 HLC hits in 5 us
HLC_WINDOW_NS = 1000
HLC_SPAN = 2
SMT_HITS = 8
SMT_WINDOW_NS = 5000
#: DeepCore trigger SMT3: 3 HLC hits within 2.5 us on the DeepCore fiducial DOMs (DeepCore design
#: paper, Astropart. Phys. 35 (2012) 615): the lower 50 DOMs of strings 79-86 and the lower 22 DOMs
#: (DOMs 39-60) of the 7 surrounding standard strings
SMT3_HITS = 3
SMT3_WINDOW_NS = 2500
DEEPCORE_STRINGS_STANDARD = (26, 27, 35, 36, 37, 45, 46)
READOUT_BEFORE_NS = 4000
READOUT_AFTER_NS = 6000
#: Kaggle clock: the trigger window starts at this time, so the readout window opens near 5900 ns
TRIGGER_TIME_NS = 9900
#: legacy readout (``launch_readout=False``): photo-electrons of one DOM in the same bin of this
#: width (from the DOM's first PE) form one pulse
PULSE_MERGE_NS = 10
#: DOM launch readout (IceCube instrumentation paper, JINST 12 (2017) P03012): a launch records
#: 6.4 us of FADC waveform (25 ns samples) and, for HLC launches, 427 ns of ATWD (3.3 ns samples);
#: an SLC launch sends only the three FADC samples around the peak (a 75 ns charge stamp)
LAUNCH_NS = 6400
ATWD_NS = 427
ATWD_MERGE_NS = 50
FADC_MERGE_NS = 75
SLC_STAMP_NS = 75
#: photo-electrons sampled per (source, DOM) at most; beyond, each sample carries n/cap of the charge
PE_SAMPLE_CAP = 1024
#: speed cut (approximation): DOMs whose best-case light from a source (best acceptance, QE 1.35,
#: clearest ice within 150 m of their ~370 m depth band) is below this many PE are not simulated
MIN_EXPECTED_PE = 1e-2
#: the exact Poisson-thinning bound uses the clearest ice within this many metres of a DOM's depth
#: (a path through clearer ice could exceed it; the keep probability is then clipped at 1: not seen
#: on 1,000 test events)
DOM_CLARITY_WINDOW_M = 75
#: (speed only, exact result) string segments whose per-DOM thinning bound is below this many PE
#: are sampled as a Poisson point process instead of DOM by DOM; segment bounds carry this slack
#: against float32 rounding of the per-DOM bound
FAINT_SEGMENT_PE = 0.5
SEGMENT_DOMS = 12
BOUND_SLACK = 1.001
#: single-PE charge: Gaussian peak + exponential low tail (shape as in the IceCube SPE calibration,
#: JINST 15 (2020) P06032); quantised to 0.025 like the Kaggle charges (float16 storage)
SPE_PEAK, SPE_WIDTH, SPE_TAIL_FRACTION, SPE_TAIL_SCALE = 1.0, 0.3, 0.15, 0.4
CHARGE_QUANTUM = 0.025
#: pulse charges saturate at this scale (PMT/digitiser saturation; Kaggle batch 1 has max 2762 PE):
#: q_s tanh(q / q_s) with the launch readout (our shape: linear below ~1000 PE), a clip without it
CHARGE_SATURATION = 3000.0
#: cascade angular emission: Gaussian in cos(angle to the shower axis) around cos(theta_c)
CASCADE_PROFILE_WIDTH = 0.25

EVENT_TYPES = ("through_going_track", "starting_track", "cascade")
#: written events are stratified in this many equal cos-zenith bins (exact direction distribution)
ZENITH_BINS = 20
#: candidate events simulated at once (bounds memory; results do not depend on the batch size)
CHUNK_CANDIDATES = 2048
_SPLITS = {"train": 1, "test": 2}
_TIME_OFFSET = 1 << 23  # relative times are packed as non-negative 24-bit integers in sort keys
_T_BITS = 24


#: the default spectrum (neutrino energy, 10 GeV - 10 PeV): chosen so the written events have
#: Kaggle's pulse-count distribution (docs/simulator.md, calibration)
SPECTRAL_INDEX = 1.57
ENERGY_MAX = 3.0e6
SPECTRAL_BREAK = 100.0
SPECTRAL_INDEX_LOW = -1.0
#: bump when the physics changes: the cached default dataset is keyed by it
SIMULATOR_VERSION = "2026.12-issue11.4"

#: knob values that reproduce the simulator before issue 11 (docs/simulator.md, ablation)
LEGACY_KNOBS = {"energy_min": 100.0, "energy_max": 1.0e7, "spectral_index": 1.9, "spectral_break": 100.0, "kinematics": False, "stochastic": False,
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
    frac_through_going: float = Field(0.5, ge=0, description="weight of through-going muon tracks")
    frac_starting: float = Field(0.2, ge=0, description="weight of starting tracks (CC nu_mu in the volume)")
    frac_cascade: float = Field(0.3, ge=0, description="weight of cascades (nu_e CC, NC)")
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


# ----------------------------------------------------------------------------------------------
# Detector and ice tables
# ----------------------------------------------------------------------------------------------
def _resource(name: str) -> Path:
    return Path(__file__).resolve().parents[1] / "resources" / name


class _Detector:
    """IC86 geometry, per-DOM QE and noise rate, per-string z lookup, ice table."""

    def __init__(self) -> None:
        geo = np.loadtxt(_resource("sensor_geometry.csv"), delimiter=",", skiprows=1)
        if geo.shape != (N_SENSORS, 4):
            raise IcezooError(f"{_resource('sensor_geometry.csv')}: expected {N_SENSORS} rows of sensor_id,x,y,z")
        self.x, self.y, self.z = geo[:, 1].copy(), geo[:, 2].copy(), geo[:, 3].copy()
        self.x32, self.y32, self.z32 = (a.astype(np.float32) for a in (self.x, self.y, self.z))
        sid = np.arange(N_SENSORS)
        string, dom = sid // 60, sid % 60
        hqe = (string >= 78) & (dom >= 10)  # lower 50 DOMs of strings 79-86
        self.qe = np.where(hqe, HQE_FACTOR, 1.0)
        self.qe32 = self.qe.astype(np.float32)
        self.noise_rate = np.where(hqe, NOISE_RATE_HQE_NS, NOISE_RATE_NS)
        # the noise split into uncorrelated hits and bursts (same shares on high-QE DOMs)
        self.noise_uncorrelated = self.noise_rate * (NOISE_UNCORRELATED_NS / NOISE_RATE_NS)
        self.burst_rate = (self.noise_rate - self.noise_uncorrelated) / float(np.mean(BURST_SIZES))
        # DeepCore fiducial DOMs of the SMT3 trigger
        self.deepcore_fiducial = ((string >= 78) & (dom >= 10)) | (np.isin(string + 1, DEEPCORE_STRINGS_STANDARD) & (dom >= 38))
        self.string_x = self.x.reshape(86, 60).mean(1)
        self.string_y = self.y.reshape(86, 60).mean(1)
        self.string_r_max = float(np.hypot(self.string_x, self.string_y).max()) + 1.0
        self.dom_z_max = float(np.abs(self.z).max()) + 1.0
        # per string, its sensor ids in ascending z (row s*60 .. s*60+59)
        order = np.lexsort((self.z, string))
        self.zkey_sensor = sid[order]
        # below[s, i]: number of DOMs of string s strictly below z = i - 1000 m (1 m grid)
        grid = np.arange(-1000.0, 1002.0)
        zs = self.z[order].reshape(86, 60)
        self.below = np.stack([np.searchsorted(zs[k], grid, side="left") for k in range(86)]).astype(np.int64)
        self.below32 = self.below.astype(np.int32)
        self.zs = zs  # [86, 60] DOM heights per string, ascending
        # largest horizontal distance of a DOM from its string's mean position (strings are not
        # quite vertical: ~0.4 m), plus slack for float32 rounding: margin of the segment bounds
        self.xy_margin = float(np.hypot(self.x - np.repeat(self.string_x, 60), self.y - np.repeat(self.string_y, 60)).max()) + 0.5
        # sensor ids run down each string (id s*60 + 59 - i is the i-th lowest DOM of string s): the
        # candidate expansion computes sensor ids from this instead of looking them up
        if not (self.zkey_sensor.reshape(86, 60) == np.arange(86)[:, None] * 60 + 59 - np.arange(60)).all():
            raise IcezooError(f"{_resource('sensor_geometry.csv')}: DOMs must be numbered top to bottom on each string")
        ice = np.loadtxt(_resource("ice_transparency.csv"), delimiter=",", skiprows=1)
        self.ice_depth, self.ice_scat, self.ice_abs = ice[:, 0], ice[:, 1], ice[:, 2]
        # reference ice of the layered timing: the table's median lengths (Pandel H2 ~ average ice)
        self.scat_ref, self.abs_ref = float(np.median(self.ice_scat)), float(np.median(self.ice_abs))

        # 1 m grid in z of 1/absorption and 1/scattering, and their running integrals, so that the
        # average along any straight path is (F(z2) - F(z1)) / (z2 - z1): exact for the table
        self.grid_z0 = -1000.0
        zg = np.arange(-1000.0, 1001.0)
        depth = SURFACE_Z - zg
        self.inv_abs_grid = 1.0 / np.interp(depth, self.ice_depth, self.ice_abs)
        self.inv_scat_grid = 1.0 / np.interp(depth, self.ice_depth, self.ice_scat)
        self.cum_abs = np.concatenate([[0.0], np.cumsum(0.5 * (self.inv_abs_grid[1:] + self.inv_abs_grid[:-1]))])
        self.cum_scat = np.concatenate([[0.0], np.cumsum(0.5 * (self.inv_scat_grid[1:] + self.inv_scat_grid[:-1]))])
        self.inv_abs32, self.inv_scat32 = self.inv_abs_grid.astype(np.float32), self.inv_scat_grid.astype(np.float32)
        # DOM classes for the thinning bound (speed only, exact result): clearest ice within
        # DOM_CLARITY_WINDOW_M of the DOM's depth, rounded to one of 32 log-spaced levels of
        # 1/absorption (clearer), and its QE
        iz = np.clip(np.rint(self.z - self.grid_z0).astype(np.int64), 0, len(zg) - 1)
        inv_min = np.array([self.inv_abs_grid[max(0, i - DOM_CLARITY_WINDOW_M): i + DOM_CLARITY_WINDOW_M + 1].min() for i in iz])
        levels = np.geomspace(1.0 / 400.0, 1.0 / 10.0, 32)
        level = np.clip(np.searchsorted(levels, inv_min, side="right") - 1, 0, 31)
        key = level * 2 + hqe
        uniq, self.dom_class = np.unique(key, return_inverse=True)
        self.class_inv_abs = levels[uniq // 2]
        self.class_qe = np.where(uniq % 2 == 1, HQE_FACTOR, 1.0)
        # per class, the bound exp(-k path) * pref >= QE * attenuation (with d_eff >= 0.8395 path + 2.255)
        log_term = np.log1p(PANDEL_TAU * C_ICE * self.class_inv_abs) / PANDEL_LAMBDA
        self.class_k = (self.class_inv_abs + 0.8395 * log_term).astype(np.float32)
        self.class_pref = (self.class_qe * np.exp(-2.255 * log_term)).astype(np.float32)
        # the same per DOM (one gather per candidate instead of two)
        self.dom_k32, self.dom_pref32 = self.class_k[self.dom_class], self.class_pref[self.dom_class]
        # per (string, depth band): the smallest k and largest prefactor of its DOMs (2 m slack at
        # the band edges), for the per-segment bounds
        lo_b, hi_b = _band_limits()
        self.band_k = np.zeros((86, len(lo_b)))
        self.band_masks = []
        for b in range(len(lo_b)):
            inb = ((self.z >= lo_b[b] - 2.0) & (self.z <= hi_b[b] + 2.0)).reshape(86, 60)
            k = np.where(inb, self.dom_k32.reshape(86, 60), np.inf).min(1)
            self.band_k[:, b] = np.where(np.isfinite(k), k, self.class_k.min())
            self.band_masks.append(inb)
        self.band_pref = self.band_max(self.dom_pref32)
        self.min_inv_scat = float(1.0 / self.ice_scat.max())
        self.cum_abs32, self.cum_scat32 = self.cum_abs.astype(np.float32), self.cum_scat.astype(np.float32)

    def band_max(self, per_dom: np.ndarray) -> np.ndarray:
        """[86, bands]: the largest value of a per-DOM quantity on each string within each depth band."""
        return np.stack([np.where(inb, per_dom.reshape(86, 60), 0.0).max(1) for inb in self.band_masks], -1)

    def inv_lengths(self, z_from: np.ndarray, z_to: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Average 1/absorption and 1/scattering length along a straight path between two heights
        (depth = 1948.07 - z), from the running integrals of the ice table on a 1 m grid."""
        n = len(self.cum_abs) - 1
        i0 = np.clip(np.rint(z_from - self.grid_z0), 0, n).astype(np.int32)
        i1 = np.clip(np.rint(z_to - self.grid_z0), 0, n).astype(np.int32)
        di = i1 - i0
        flat = di == 0
        mid = (i0 + i1) >> 1
        span = np.where(flat, 1, di).astype(np.float32)
        inv_a = np.where(flat, self.inv_abs32[mid], (self.cum_abs32[i1] - self.cum_abs32[i0]) / span)
        inv_s = np.where(flat, self.inv_scat32[mid], (self.cum_scat32[i1] - self.cum_scat32[i0]) / span)
        return inv_a, inv_s


@lru_cache(maxsize=1)
def detector() -> _Detector:
    """The shared detector tables (loaded once)."""
    return _Detector()


class _DomResponse:
    """Per-DOM light response of one dataset: QE times a relative efficiency fixed per DOM and seed
    (Gaussian spread, clipped at +-3 sigma), and the thinning-bound prefactors that include it (so the
    bounds stay as tight as without the spread)."""

    def __init__(self, seed: int, spread: float) -> None:
        det = detector()
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7160]))
        eff = 1.0 + spread * np.clip(rng.standard_normal(N_SENSORS), -3.0, 3.0)
        self.efficiency = eff
        self.qe32 = (det.qe * eff).astype(np.float32)
        self.dom_pref32 = (det.dom_pref32 * eff).astype(np.float32) * np.float32(1.0 + 1e-6)
        self.band_pref = det.band_max(self.dom_pref32)


@lru_cache(maxsize=4)
def dom_response(seed: int = 0, spread: float = 0.0) -> _DomResponse:
    """The per-DOM response for a dataset seed (spread 0: every DOM at its nominal QE)."""
    return _DomResponse(seed, spread)


def _cascade_profile_norm() -> float:
    c = np.linspace(-1.0, 1.0, 20001)
    g = np.exp(-0.5 * ((c - COS_C) / CASCADE_PROFILE_WIDTH) ** 2)
    return float(1.0 / np.trapezoid(g, c) * 2.0)  # mean over the sphere = 1


_CASCADE_NORM = _cascade_profile_norm()


def _acceptance(cos_eta: np.ndarray) -> np.ndarray:
    """Relative angular acceptance of the down-facing PMT: 1 for light from straight below
    (cos_eta = 1), ~0.27 from the side, 0.02 from above (hole-ice/bubble-column leakage)."""
    return 0.02 + 0.98 * (0.5 * (1.0 + cos_eta)) ** 2


_MEAN_ACCEPTANCE = 0.02 + 0.98 / 3.0  # sphere average of _acceptance


def _acceptance_bound(dist: np.ndarray) -> np.ndarray:
    """Largest possible mixed acceptance at a path length (least scattering in the table)."""
    w = np.exp(-dist / detector().ice_scat.max())
    return w + (1.0 - w) * _MEAN_ACCEPTANCE


def _attenuation(dist, d_eff, inv_abs):
    """Surviving fraction of the light: direct-path absorption times the Pandel normalisation
    (1 + tau c/lambda_a)^(-d_eff/lambda) for the longer scattered paths (absorption from the table)."""
    return np.exp(-dist * inv_abs - d_eff / PANDEL_LAMBDA * np.log1p(PANDEL_TAU * C_ICE * inv_abs))


def muon_photons_per_m(energy: np.ndarray, radiative_b: float | np.ndarray = MUON_LOSS_B) -> np.ndarray:
    """Detectable photons per metre of muon track: bare muon with its sub-threshold losses
    (2.5e3 * (1 + 0.987 (0.188 + 0.0206 ln E))) plus continuous radiative losses b*E as EM light
    (5.25 m/GeV; with stochastic losses only their part below the sampling threshold, b v_min E)."""
    e = np.maximum(energy, 1.0)
    return MUON_PHOTONS_PER_M * (1.0 + 0.987 * (0.188 + 0.0206 * np.log(e)) + CASCADE_M_PER_GEV * radiative_b * e)


def muon_range(energy: np.ndarray) -> np.ndarray:
    """Mean muon range (m) for dE/dx = a + b E."""
    return np.log1p(energy * MUON_LOSS_B / MUON_LOSS_A) / MUON_LOSS_B


#: three depth bands for the candidate search: each band's reach uses the clearest ice within 150 m of it
BAND_EDGES = np.linspace(-560.0, 560.0, 4)


_REACH_D = np.linspace(0.5, 3000.0, 6000)


def _reach_curves(inv_a: float, qe: float) -> tuple[np.ndarray, np.ndarray]:
    """log of the best-case PE per unit source light vs distance (track: perpendicular distance,
    cascade: distance) for ice no murkier than 1/inv_a and this QE; decreasing in distance."""
    d = _REACH_D
    out = []
    for cascade in (False, True):
        if cascade:
            dist = d
            geo = DOM_AREA / (4 * np.pi * d**2) * max(_CASCADE_NORM, 1.0)
        else:
            dist = d / SIN_C
            geo = DOM_AREA / (2 * np.pi * d * SIN_C)
        out.append(np.log(geo * qe * _acceptance_bound(dist) * _attenuation(dist, 0.8395 * dist + 2.255, inv_a))[::-1])
    return out[0], out[1]


@lru_cache(maxsize=1)
def _band_reach_tables():
    """Per depth band (clearest ice within 150 m of it, high QE): reach curves."""
    det = detector()
    tables = []
    for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:]):
        i0 = int(np.clip(lo - 150 - det.grid_z0, 0, len(det.inv_abs_grid) - 1))
        i1 = int(np.clip(hi + 150 - det.grid_z0, 0, len(det.inv_abs_grid) - 1))
        tables.append(_reach_curves(float(det.inv_abs_grid[i0: i1 + 1].min()), HQE_FACTOR))
    return tables


def _reach(light: np.ndarray, cascade: bool, tables) -> np.ndarray:
    """[M, len(tables)] distance (m) beyond which a source of this brightness gives less than
    MIN_EXPECTED_PE (best acceptance, clearest ice of the class): farther DOMs are not simulated."""
    need = np.log(MIN_EXPECTED_PE) - np.log(np.maximum(light, 1e-30))
    d = _REACH_D[::-1]
    return np.stack([np.interp(need, t[int(cascade)], d, left=d[0], right=0.0) for t in tables], -1)


def _band_reach(light: np.ndarray, cascade: bool) -> np.ndarray:
    return _reach(light, cascade, _band_reach_tables())


# ----------------------------------------------------------------------------------------------
# Candidate (event, DOM) pairs near a source
# ----------------------------------------------------------------------------------------------
def _band_limits() -> tuple[np.ndarray, np.ndarray]:
    lo_b, hi_b = BAND_EDGES[:-1].copy(), BAND_EDGES[1:].copy()
    lo_b[0], hi_b[-1] = -1e4, 1e4
    return lo_b, hi_b


def _banded(ev, st, dmin2, zc, inv_a, reach) -> dict:
    """Segments of strings near a source, band by band. A pair's squared distance at height z is
    ``dmin2 + (z - zc)^2 / inv_a`` (closest approach dmin2 at zc), so a band of reach r covers
    ``zc +- sqrt((r^2 - dmin2) * inv_a)``; only bands that reach the pair at all give a segment.
    Returns per segment: event, string, band, its lowest DOM's rank on the string (``lo``), its
    number of DOMs (``n``) and ``d2``, a lower bound of the squared distance of its DOMs' string
    points from the source (the closest height of its DOMs to ``zc``)."""
    det = detector()
    lo_b, hi_b = _band_limits()
    r2 = reach[ev] ** 2
    flat = np.flatnonzero(r2 >= dmin2[:, None])  # flat indices: cheaper than 2-d ones
    pe, band = np.divmod(flat, r2.shape[1])
    half = np.sqrt((r2.ravel()[flat] - dmin2[pe]) * inv_a[pe])
    zlo = np.maximum(zc[pe] - half, lo_b[band])
    zhi = np.minimum(zc[pe] + half, hi_b[band])
    ok = np.flatnonzero(zlo <= zhi)
    pe, band, zlo, zhi = pe[ok], band[ok], zlo[ok], zhi[ok]
    string = st[pe]
    n_z = det.below.shape[1] - 1
    ilo = np.clip(np.ceil(zlo - det.grid_z0), 0, n_z).astype(np.int64)
    ihi = np.clip(np.floor(zhi - det.grid_z0) + 1, 0, n_z).astype(np.int64)
    below = det.below32.ravel()
    row = string * det.below32.shape[1]
    lo = below[row + ilo]
    n = below[row + ihi] - lo
    ok = np.flatnonzero(n > 0)
    pe, band, string, lo, n = pe[ok], band[ok], string[ok], lo[ok], n[ok]
    # pieces of at most SEGMENT_DOMS DOMs, so that each piece's bound is close to its DOMs' bounds
    pieces = (n + (SEGMENT_DOMS - 1)) // SEGMENT_DOMS
    which = np.repeat(np.arange(len(n)), pieces)
    first = (np.repeat(np.cumsum(pieces) - pieces, pieces) - np.arange(len(which))) * -SEGMENT_DOMS
    pe, band, string = pe[which], band[which], string[which]
    lo, n = lo[which] + first, np.minimum(n[which] - first, SEGMENT_DOMS)
    zs, at = det.zs.ravel(), string * det.zs.shape[1] + lo
    z_bottom, z_top = zs[at], zs[at + n - 1]
    dz = np.maximum(np.maximum(z_bottom - zc[pe], zc[pe] - z_top), 0.0)
    return {"ev": ev[pe], "st": string, "band": band, "lo": lo, "n": n, "d2": dmin2[pe] + dz * dz / inv_a[pe]}


def _expand_segments(seg: dict, which: np.ndarray | None = None):
    """All (event, sensor) pairs of the segments ``which`` (all if None), int32."""
    ev, string, lo, n = (seg[k] if which is None else seg[k][which] for k in ("ev", "st", "lo", "n"))
    total = int(n.sum())
    starts = (np.cumsum(n) - n).astype(np.int32)
    # the (lo + j)-th lowest DOM of the string has sensor id string * 60 + 59 - (lo + j)
    sen = np.repeat((string * 60 + 59 - lo + starts).astype(np.int32), n)
    sen -= np.arange(total, dtype=np.int32)
    return np.repeat(ev.astype(np.int32), n), sen


def _track_candidates(pos, vdir, reach):
    """Segments of strings (``_banded``) within their band's reach of the line through pos along vdir."""
    det = detector()
    wx = det.string_x[None, :] - pos[:, 0:1]
    wy = det.string_y[None, :] - pos[:, 1:2]
    vz = vdir[:, 2:3]
    along = wx * vdir[:, 0:1] + wy * vdir[:, 1:2]
    a = np.maximum(1.0 - vz**2, 1e-12)  # sin^2 of the zenith; ~0 for a vertical track
    # distance^2 from the track of the string point at height z: dmin2 + a (z - zc)^2, where
    # zc - z0 = along vz / a (closest approach) and dmin2 = |w|^2 - along^2 - (along vz)^2 / a
    # (>= 0: rounding left it a hair below zero for tracks through a string's axis, whose segments the
    # NaN distance bound then dropped, the brightest DOMs of the event with them)
    dmin2 = np.maximum(wx**2 + wy**2 - along**2 - (along * vz) ** 2 / a, 0.0)
    flat = np.flatnonzero(dmin2 <= (reach.max(1) ** 2)[:, None])  # flat indices: cheaper than 2-d ones
    ev, st = np.divmod(flat, dmin2.shape[1])
    along = along.ravel()[flat]
    a_e = a[:, 0][ev]
    zc = pos[:, 2][ev] + along * vz[:, 0][ev] / a_e
    return _banded(ev, st, dmin2.ravel()[flat], zc, 1.0 / a_e, reach)


def _sphere_candidates(pos, reach):
    """Segments of strings (``_banded``) within their band's reach of the point pos."""
    det = detector()
    h2 = (det.string_x[None, :] - pos[:, 0:1]) ** 2 + (det.string_y[None, :] - pos[:, 1:2]) ** 2
    flat = np.flatnonzero(h2 <= (reach.max(1) ** 2)[:, None])
    ev, st = np.divmod(flat, h2.shape[1])
    return _banded(ev, st, h2.ravel()[flat], pos[:, 2][ev], np.ones(len(ev)), reach)


# ----------------------------------------------------------------------------------------------
# Light sources -> expected PE, direct time and effective distance per (event, DOM)
# ----------------------------------------------------------------------------------------------
class _Context(NamedTuple):
    """Per-dataset settings the light sources need: the DOM response and the timing model."""

    resp: _DomResponse
    layered_timing: bool


def _context(cfg: SimulatorConfig | None = None, seed: int = 0) -> _Context:
    if cfg is None:
        return _Context(dom_response(0, 0.0), False)
    return _Context(dom_response(seed, cfg.dom_efficiency_spread), cfg.layered_timing)


def _light_terms(dist, cos_eta, z_from, z_to, sen, ctx: _Context):
    """Shared per-DOM factors (float32): the unscattered fraction (which keeps the emission direction),
    mixed acceptance x QE x efficiency x attenuation, and the Pandel delay's shape and scale.

    Layered timing: the Pandel lambda scales with the path's average effective scattering length and
    the Pandel absorption length with its average absorption length, both relative to the table's
    median (32.4 m, 111.8 m), so light through the dust layer is late as well as dim; otherwise the
    bulk H2 numbers at every depth."""
    det = detector()
    inv_a, inv_s = det.inv_lengths(z_from, z_to)
    d_eff = 0.8395 * dist + 3.094 - 3.946 * cos_eta + 4.636 * cos_eta * cos_eta
    w_dir = np.exp(-dist * inv_s)
    acc = _MEAN_ACCEPTANCE + w_dir * (_acceptance(cos_eta) - _MEAN_ACCEPTANCE)
    att = np.exp(-dist * inv_a - d_eff * (1.0 / PANDEL_LAMBDA) * np.log1p(PANDEL_TAU * C_ICE * inv_a))
    if ctx.layered_timing:
        shape = d_eff * inv_s * np.float32(det.scat_ref / PANDEL_LAMBDA)
        scale = 1.0 / (np.float32(1.0 / PANDEL_TAU) + inv_a * np.float32(C_ICE * det.abs_ref / PANDEL_ABS))
    else:
        shape = d_eff * np.float32(1.0 / PANDEL_LAMBDA)
        scale = np.full(len(d_eff), 1.0 / PANDEL_RHO, dtype=np.float32)
    return w_dir, acc * ctx.resp.qe32[sen] * att, shape, scale


def _thin(rng, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poisson thinning, step 1: counts n_b ~ Poisson(bound) and the rows where n_b > 0. Step 2
    (``_thinned_counts``) keeps each of those PEs with probability mu / bound, which makes the
    count exactly Poisson(mu) while mu is only computed where n_b > 0 (most faint DOMs see none).

    Faint rows (bound < 8) use one uniform each: n_b = 0 when u < exp(-bound), else the Poisson
    inverse CDF at u (exact, and cheap because almost all rows stop at zero)."""
    bright = bound >= 8.0
    u = rng.random(len(bound), dtype=np.float32)
    p = np.exp(-bound)  # P(0)
    sel = np.flatnonzero((u >= p) | bright)
    b, u, c = bound[sel], u[sel], p[sel]
    n_b = np.zeros(len(sel), dtype=np.int64)
    faint = np.flatnonzero(~bright[sel])
    # inverse CDF: n_b = the smallest k with CDF(k) > u = 1 + #{k >= 1: CDF(k) <= u} (CDF increases,
    # so a row once done stays done); rows are dropped only when at least half are done, since
    # compacting five arrays costs more than carrying a few finished rows along
    term, cdf, live = c[faint].astype(np.float64), c[faint].astype(np.float64), faint
    b_l, u_l = b[faint], u[faint]  # compacted alongside ``live``
    steps = np.ones(len(faint), dtype=np.int64)
    k = 1
    while len(live) and k < 100:
        term = term * b_l / k
        cdf = cdf + term
        more = u_l >= cdf
        n_more = np.count_nonzero(more)
        if n_more == 0:
            break
        steps += more
        k += 1
        if 2 * n_more <= len(live):
            n_b[live] = steps
            i = np.flatnonzero(more)
            live, term, cdf, b_l, u_l, steps = live[i], term[i], cdf[i], b_l[i], u_l[i], steps[i]
    n_b[live] = steps
    hot = np.flatnonzero(bright[sel])
    n_b[hot] = rng.poisson(b[hot])
    return n_b, sel


def _thinned_counts(rng, n_b, mu, bound):
    return rng.binomial(n_b, np.minimum(mu / bound, 1.0))


def _columns32(a: np.ndarray) -> list[np.ndarray]:
    """Columns of a [M, 3] float array as contiguous float32 arrays (per event: gathered per DOM)."""
    return [np.ascontiguousarray(a[:, k], dtype=np.float32) for k in range(a.shape[1])]


def _offsets(p32, ev, sen):
    """DOM minus source position per (event, DOM) pair, float32 (in-place, no extra temporaries)."""
    det = detector()
    out = []
    for q, pk in zip((det.x32, det.y32, det.z32), p32):
        w = q[sen]
        w -= pk[ev]
        out.append(w)
    return out


def _track_geometry(p32, v32, ev, sen):
    """Perpendicular distance d of the DOM from the track and the emission point s_e on the track
    (float32; the same arithmetic for the thinning bound and the exact expectation)."""
    wx, wy, wz = _offsets(p32, ev, sen)
    vx, vy, vz = v32
    s_c = wx * vx[ev]
    tmp = wy * vy[ev]
    s_c += tmp
    np.multiply(wz, vz[ev], out=tmp)
    s_c += tmp
    d = wx
    d *= wx
    np.multiply(wy, wy, out=tmp)
    d += tmp
    np.multiply(wz, wz, out=tmp)
    d += tmp
    np.multiply(s_c, s_c, out=tmp)
    d -= tmp
    np.maximum(d, np.float32(1.0), out=d)
    np.sqrt(d, out=d)
    np.multiply(d, np.float32(1.0 / TAN_C), out=tmp)
    np.subtract(s_c, tmp, out=s_c)  # emission point on the track
    return d, s_c


def _sample_counts(rng, seg: dict, bmax: np.ndarray, bound_fn):
    """Step 1 of the Poisson thinning for every DOM of the segments: counts n_b ~ Poisson(bound) per
    (event, DOM), returned only where n_b > 0, with the bound (``bound_fn(ev, sen)``, float32).

    Segments whose per-DOM bound ``bmax`` (an upper bound of ``bound_fn`` on all their DOMs) is at
    least FAINT_SEGMENT_PE are expanded DOM by DOM (``_thin``). The faint ones, most of the DOMs, are
    sampled as a Poisson point process instead: Poisson(bmax * n) points per segment of n DOMs, each
    on a uniformly drawn DOM (so Poisson(bmax) per DOM, independently) and kept with probability
    bound / bmax, which leaves exactly Poisson(bound) per DOM; only the points are computed."""
    bright = np.flatnonzero(bmax >= FAINT_SEGMENT_PE)
    ev, sen = _expand_segments(seg, bright)
    bound = bound_fn(ev, sen)
    n_b, ok = _thin(rng, bound)
    ev, sen, bound = ev[ok], sen[ok], bound[ok]
    faint = np.flatnonzero(bmax < FAINT_SEGMENT_PE)
    f_n, f_b = seg["n"][faint], bmax[faint]
    n_pts, some = _thin(rng, f_b * f_n)  # Poisson(bmax * n) points per faint segment (where > 0)
    k = np.repeat(some, n_pts)  # the faint segment of each point
    f_n, f_b, faint = f_n[k], f_b[k], faint[k]
    j = np.minimum((rng.random(len(k)) * f_n).astype(np.int32), f_n - 1)
    p_ev = seg["ev"][faint].astype(np.int32)
    p_sen = (seg["st"][faint] * 60 + 59 - seg["lo"][faint] - j).astype(np.int32)
    p_bound = bound_fn(p_ev, p_sen)
    keep = np.flatnonzero(rng.random(len(k)) * f_b < p_bound)
    _, first, count = np.unique(p_ev[keep].astype(np.int64) * N_SENSORS + p_sen[keep], return_index=True,
                                return_counts=True)
    sel = keep[first]
    return (np.concatenate([ev, p_ev[sel]]), np.concatenate([sen, p_sen[sel]]),
            np.concatenate([n_b, count]), np.concatenate([bound, p_bound[sel]]))


def _segment_bound_terms(seg: dict, resp: _DomResponse) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per segment: a lower bound (>= 1 m) of its DOMs' distance from the source (their string
    points' distance minus the DOMs' largest offset from the string line), and the best prefactor and
    smallest k of the DOM classes of its string and band."""
    det = detector()
    d_lo = np.maximum(np.sqrt(seg["d2"]) - det.xy_margin, 1.0)
    at = seg["st"] * det.band_k.shape[1] + seg["band"]  # flat indices: cheaper than 2-d ones
    return d_lo, resp.band_pref.ravel()[at], det.band_k.ravel()[at]


def _track_sources(rng, pos, vdir, energy, s_min, s_max, scale, ctx: _Context | None = None,
                   radiative_b: float | np.ndarray = MUON_LOSS_B):
    """Muon track segments (pos + s vdir, s in [s_min, s_max], t = s/c): per DOM that sees light,
    the PE count, direct Cherenkov time and the Pandel delay's shape and scale (float32 arithmetic).
    ``radiative_b``: the part of the radiative losses emitted as continuous light."""
    det = detector()
    ctx = ctx or _context()
    light = muon_photons_per_m(energy, radiative_b) * scale
    seg = _track_candidates(pos, vdir, _band_reach(light, cascade=False))
    p32, v32 = _columns32(pos), _columns32(vdir)
    light_c = light * (DOM_AREA / (2 * np.pi * SIN_C))
    light_c32, s_max32 = light_c.astype(np.float32), s_max.astype(np.float32)
    s_min32 = None if np.all(np.isneginf(s_min)) else s_min.astype(np.float32)

    def bound_fn(ev, sen):
        """Upper bound of the expected PE (best acceptance, clearest ice of the DOM's class):
        light A / (2 pi sin_c d) * pref * exp(-k dist), dist = d / sin_c the photon path; 0 where
        the emission point is off the track."""
        d, s_e = _track_geometry(p32, v32, ev, sen)
        bound = det.dom_k32[sen]
        bound *= d
        bound *= np.float32(-1.0 / SIN_C)
        np.exp(bound, out=bound)
        bound *= ctx.resp.dom_pref32[sen]
        bound *= light_c32[ev]
        bound /= d
        inside = s_e <= s_max32[ev]
        if s_min32 is not None:
            inside &= s_e >= s_min32[ev]
        bound *= inside
        return bound

    d_lo, pref, k = _segment_bound_terms(seg, ctx.resp)
    bmax = light_c[seg["ev"]] / d_lo * pref * np.exp(-k * d_lo / SIN_C) * BOUND_SLACK
    ev, sen, n_b, bound = _sample_counts(rng, seg, bmax, bound_fn)
    d, s_e = _track_geometry(p32, v32, ev, sen)  # the same values as in the bound
    dist = d * np.float32(1.0 / SIN_C)  # photon path from the emission point
    qz = det.z32[sen]
    ez = p32[2][ev] + s_e * v32[2][ev]
    cos_eta = (qz - ez) / dist  # > 0: light from below, into the PMT face
    _, factor, shape, tscale = _light_terms(dist, cos_eta, ez, qz, sen, ctx)
    mu = light.astype(np.float32)[ev] * np.float32(DOM_AREA / (2 * np.pi * SIN_C)) / d * factor
    t_geo = (s_e + dist * np.float32(N_GROUP)) * np.float32(1.0 / C_VACUUM)
    return ev, sen, _thinned_counts(rng, n_b, mu, bound), t_geo, shape, tscale


def _cascade_geometry(p32, ev, sen):
    """DOM minus cascade position, distance (at least 1 m) and its inverse (float32)."""
    wx, wy, wz = _offsets(p32, ev, sen)
    dist = wx * wx
    tmp = wy * wy
    dist += tmp
    np.multiply(wz, wz, out=tmp)
    dist += tmp
    np.maximum(dist, np.float32(1.0), out=dist)
    np.sqrt(dist, out=dist)
    np.divide(np.float32(1.0), dist, out=tmp)
    return wx, wy, wz, dist, tmp


def _cascade_sources(rng, pos, vdir, photons, ctx: _Context | None = None, reach: np.ndarray | None = None):
    """Point cascades at pos (t = 0) with ``photons`` detectable photons in total, emission peaked
    at the Cherenkov angle around vdir, washed out by scattering with distance (float32).
    ``reach``: the caller's ``_band_reach(photons, cascade=True)``, when it has it."""
    det = detector()
    ctx = ctx or _context()
    seg = _sphere_candidates(pos, _band_reach(photons, cascade=True) if reach is None else reach)
    p32 = _columns32(pos)
    photons_c = photons * (DOM_AREA / (4 * np.pi))
    photons_c32 = photons_c.astype(np.float32)
    peak_excess = max(_CASCADE_NORM - 1.0, 0.0)

    def bound_fn(ev, sen):
        """Upper bound: photons A / (4 pi r^2) * (best forward peak, fading with the least
        scattering) * pref * exp(-k r)."""
        _, _, _, dist, inv_d = _cascade_geometry(p32, ev, sen)
        peak_bound = dist * np.float32(-det.min_inv_scat)
        np.exp(peak_bound, out=peak_bound)
        peak_bound *= np.float32(peak_excess)
        peak_bound += np.float32(1.0)
        bound = det.dom_k32[sen]
        bound *= dist
        np.negative(bound, out=bound)
        np.exp(bound, out=bound)
        bound *= peak_bound
        bound *= ctx.resp.dom_pref32[sen]
        bound *= inv_d
        bound *= inv_d
        bound *= photons_c32[ev]
        return bound

    d_lo, pref, k = _segment_bound_terms(seg, ctx.resp)
    bmax = (photons_c[seg["ev"]] / (d_lo * d_lo) * (1.0 + peak_excess * np.exp(-d_lo * det.min_inv_scat))
            * pref * np.exp(-k * d_lo) * BOUND_SLACK)
    ev, sen, n_b, bound = _sample_counts(rng, seg, bmax, bound_fn)
    wx, wy, wz, dist, inv_d = _cascade_geometry(p32, ev, sen)  # the same values as in the bound
    pz = p32[2][ev]
    qz = det.z32[sen]
    vx, vy, vz = (c[ev] for c in _columns32(vdir))
    cos_phi = (wx * vx + wy * vy + wz * vz) * inv_d
    cos_eta = -wz * inv_d  # direction DOM -> source against the PMT axis (0, 0, -1)
    w_dir, factor, shape, tscale = _light_terms(dist, cos_eta, pz, qz, sen, ctx)
    x = (cos_phi - np.float32(COS_C)) * np.float32(1.0 / CASCADE_PROFILE_WIDTH)
    ang = 1.0 + w_dir * (np.float32(_CASCADE_NORM) * np.exp(np.float32(-0.5) * x * x) - 1.0)
    mu = photons.astype(np.float32)[ev] * np.float32(DOM_AREA / (4 * np.pi)) * inv_d * inv_d * ang * factor
    t_geo = dist * np.float32(N_GROUP / C_VACUUM)
    return ev, sen, _thinned_counts(rng, n_b, mu, bound), t_geo, shape, tscale


def _spe_charges(rng: np.random.Generator, n: int) -> np.ndarray:
    """Single-photo-electron charges: Gaussian peak at 1 PE plus an exponential low tail (float32)."""
    q = rng.standard_normal(n, dtype=np.float32)
    q *= np.float32(SPE_WIDTH)
    q += np.float32(SPE_PEAK)
    tail = np.flatnonzero(rng.random(n, dtype=np.float32) < np.float32(SPE_TAIL_FRACTION))
    q[tail] = rng.standard_exponential(len(tail), dtype=np.float32) * np.float32(SPE_TAIL_SCALE)
    return np.maximum(q, np.float32(0.0), out=q)


def _quantise(q: np.ndarray, soft: bool = True) -> np.ndarray:
    """Charges as Kaggle stores them: multiples of 0.025 PE, at least 0.025, saturating at
    CHARGE_SATURATION (soft: q_s tanh(q / q_s), linear for small pulses; else a hard clip)."""
    q = np.asarray(q, dtype=np.float64)
    q = CHARGE_SATURATION * np.tanh(q / CHARGE_SATURATION) if soft else np.minimum(q, CHARGE_SATURATION)
    return np.round(np.maximum(np.round(q / CHARGE_QUANTUM), 1.0) * CHARGE_QUANTUM, 3)


def _hlc(ev: np.ndarray, sen: np.ndarray, t: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Hard local coincidence per pulse: a pulse on a DOM within 2 positions on the same string
    within +-1 us. ``key`` = packed (event, sensor, time), sorted ascending."""
    dom = sen % 60
    hlc = np.zeros(len(t), dtype=bool)
    n = len(key)
    if n == 0:
        return hlc
    # a pulse's own key plus the offset to the neighbour DOM, minus the window: the first pulse of
    # the neighbour at or after t - 1 us is a coincidence when it is not later than t + 1 us
    probe = key - HLC_WINDOW_NS
    padded = np.append(key, np.iinfo(np.int64).max)
    for off in (-2, -1, 1, 2):
        shift = off << _T_BITS
        lo = np.searchsorted(key, probe + shift, side="left")
        hit = padded[lo] <= key + (shift + HLC_WINDOW_NS)
        hit &= (dom + off >= 0) & (dom + off < 60)
        hlc |= hit
    return hlc


def _pack(ev, sen, t):
    return ((ev.astype(np.int64) * N_SENSORS + sen) << _T_BITS) + (t + _TIME_OFFSET)


# ----------------------------------------------------------------------------------------------
# One chunk of candidate events of one type
# ----------------------------------------------------------------------------------------------
def _draw_truth(rng, cfg: SimulatorConfig, m: int, zbin: np.ndarray):
    """Directions (Kaggle convention; cos zenith uniform within each candidate's zenith bin,
    azimuth uniform) and power-law energies for m candidate events."""
    az = rng.uniform(0.0, 2 * np.pi, m)
    cos_ze = -1.0 + (zbin + rng.random(m)) * (2.0 / ZENITH_BINS)
    ze = np.arccos(np.clip(cos_ze, -1.0, 1.0))
    u = np.stack([np.cos(az) * np.sin(ze), np.sin(az) * np.sin(ze), np.cos(ze)], -1)
    energy = sample_energies(rng, cfg, m)
    return az, ze, u, energy


def _power_law(r: np.ndarray, g: float, lo: float, hi: float) -> np.ndarray:
    """Inverse CDF of dN/dE ~ E^-g on [lo, hi] at the uniforms r."""
    if abs(g - 1.0) < 1e-9:
        return lo * (hi / lo) ** r
    k = 1.0 - g
    return (lo**k + r * (hi**k - lo**k)) ** (1.0 / k)


def _power_law_mass(g: float, lo: float, hi: float, ref: float) -> float:
    """Integral of (E / ref)^-g over [lo, hi]."""
    if hi <= lo:
        return 0.0
    if abs(g - 1.0) < 1e-9:
        return ref * math.log(hi / lo)
    return ref ** g * (hi ** (1 - g) - lo ** (1 - g)) / (1 - g)


def sample_energies(rng, cfg: SimulatorConfig, m: int) -> np.ndarray:
    """The generation spectrum: a broken power law, E^-spectral_index_low below spectral_break and
    E^-spectral_index above (continuous at the break), between energy_min and energy_max."""
    lo, hi = cfg.energy_min, cfg.energy_max
    brk = min(max(cfg.spectral_break, lo), hi)
    w_low = _power_law_mass(cfg.spectral_index_low, lo, brk, brk)
    w_high = _power_law_mass(cfg.spectral_index, brk, hi, brk)
    low = rng.random(m) < w_low / (w_low + w_high)
    r = rng.random(m)
    return np.where(low, _power_law(r, cfg.spectral_index_low, lo, brk) if w_low > 0 else lo,
                    _power_law(r, cfg.spectral_index, brk, hi) if w_high > 0 else hi)


def _vertices(rng, cfg: SimulatorConfig, m: int) -> np.ndarray:
    r = cfg.vertex_radius * np.sqrt(rng.random(m))
    phi = rng.uniform(0, 2 * np.pi, m)
    z = rng.uniform(-cfg.vertex_half_height, cfg.vertex_half_height, m)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


# ----------------------------------------------------------------------------------------------
# Neutrino kinematics and muon propagation
# ----------------------------------------------------------------------------------------------
def kinematic_median_angle(e_nu: np.ndarray) -> np.ndarray:
    """Median angle (rad) between the neutrino and the CC muon (or a cascade's light axis):
    0.7 deg x (E_nu / TeV)^-0.7."""
    return np.radians(KIN_MEDIAN_DEG) * (np.asarray(e_nu, dtype=np.float64) / 1000.0) ** -KIN_INDEX


def _kinematic_angles(rng, e_nu: np.ndarray) -> np.ndarray:
    """Angles with the median ``kinematic_median_angle``: a 2-D Gaussian on the sky (Rayleigh in the
    angle, sigma = median / sqrt(2 ln 2)), capped at pi."""
    sigma = kinematic_median_angle(e_nu) / math.sqrt(2.0 * math.log(2.0))
    return np.minimum(sigma * np.sqrt(-2.0 * np.log1p(-rng.random(len(e_nu)))), np.pi)


def _basis(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to the unit vectors u and to each other."""
    ref = np.where(np.abs(u[:, 2:3]) < 0.9, np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]]))
    e1 = np.cross(u, ref)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(u, e1)


def _deflect(u: np.ndarray, theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit vectors at angle theta from the unit vectors u, at azimuth phi around them."""
    e1, e2 = _basis(u)
    return (np.cos(theta)[:, None] * u
            + np.sin(theta)[:, None] * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2))


def muon_energy_after(energy: np.ndarray, dist: np.ndarray, b: float | np.ndarray = MUON_LOSS_B) -> np.ndarray:
    """Muon energy after ``dist`` metres of continuous losses dE/dx = a + b E (0 once stopped)."""
    c = MUON_LOSS_A / b
    return np.maximum((energy + c) * np.exp(-b * dist) - c, 0.0)


def _run_starts(x: np.ndarray) -> np.ndarray:
    """Where a run of equal values starts in ``x`` (sorted or grouped): True at 0 and wherever the value changes."""
    new = np.ones(len(x), dtype=bool)
    new[1:] = x[1:] != x[:-1]
    return new


def _segment_cumsum(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting where ``first`` is True (x sorted by segment)."""
    cs = np.cumsum(x)
    start = np.flatnonzero(first)
    base = (cs[start] - x[start])[np.cumsum(first) - 1]
    return cs - base


def stochastic_losses(rng, e0: np.ndarray, s0: np.ndarray, s_hi: np.ndarray):
    """Stochastic energy losses of muons that have energy e0 at s0, sampled on [s0, s_hi].

    Losses above v_min = min(STOCH_V_CUT, STOCH_E_CUT / e0) of the muon's energy come as discrete
    points: a Poisson process of rate b ln(1/v_min) per metre, each taking a fraction v ~ 1/v of the
    energy the muon has there; between them the muon loses a + b v_min E continuously. The energy
    before each loss follows from composing these affine maps (one cumulative product and sum per
    muon), so the energy falls along the track and the muon stops where it runs out.
    Returns (owner, s, lost energy) per loss while the muon lives, and per muon the stopping point and v_min."""
    m = len(e0)
    v_min = np.minimum(STOCH_V_CUT, STOCH_E_CUT / np.maximum(e0, 1e-9))
    length = np.maximum(s_hi - s0, 0.0)
    n = rng.poisson(MUON_LOSS_B * np.log(1.0 / v_min) * length)
    owner = np.repeat(np.arange(m), n)
    k = len(owner)
    s = s0[owner] + rng.random(k) * length[owner]
    s = s[np.lexsort((s, owner))]
    v = v_min[owner] ** (1.0 - rng.random(k))  # dN/dv ~ 1/v on [v_min, 1)
    first = _run_starts(owner)
    prev = np.empty(k)
    prev[1:] = s[:-1]
    prev[first] = s0[owner[first]]
    b_c = MUON_LOSS_B * v_min[owner]
    c = MUON_LOSS_A / b_c
    qm1 = np.expm1(-b_c * (s - prev))  # continuous drift: E -> (E + c) q - c
    log_a = np.maximum(_segment_cumsum(np.log1p(qm1) + np.log1p(-v), first), -20.0)
    with np.errstate(over="ignore", invalid="ignore"):
        e_after = np.exp(log_a) * (e0[owner] + _segment_cumsum((1.0 - v) * c * qm1 * np.exp(-log_a), first))
        e_before = e_after / (1.0 - v)
    dead = ~(e_before > 0)
    alive = _segment_cumsum(dead.astype(np.int64), first) == 0 if k else dead
    n_alive = np.bincount(owner[alive], minlength=m)
    last = np.cumsum(n) - n + n_alive - 1
    has = n_alive > 0
    s_last = np.where(has, s[np.maximum(last, 0)] if k else s0, s0)
    e_last = np.where(has, e_after[np.maximum(last, 0)] if k else e0, e0)
    b_m = MUON_LOSS_B * v_min
    s_stop = s_last + np.log1p(e_last * b_m / MUON_LOSS_A) / b_m
    # beyond s_hi no losses are sampled (far from every DOM): there the mean range applies
    beyond = s_stop > s_hi
    e_hi = muon_energy_after(e_last, s_hi - s_last, b_m)
    s_stop = np.where(beyond, s_hi + muon_range(e_hi), s_stop)
    alive = np.flatnonzero(alive)
    return owner[alive], s[alive], v[alive] * e_before[alive], s_stop, v_min


def _entering_muons(rng, cfg: SimulatorConfig, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Neutrino energies and inelasticities of through-going muons whose vertex lies upstream,
    uniformly within the muon's range: a muon that would enter the STOCH_RADIUS sphere with less than
    MUON_MIN_ENTRY_ENERGY cannot reach a DOM, so candidates are kept with the probability that it
    enters with more, (R(E_mu) - R(E_min)) / R(E_mu) (rejection: the kept ones have exactly the
    distribution of the triggerable part)."""
    e_out, y_out, got = [], [], 0
    if (1.0 - 1e-9) * cfg.energy_max <= MUON_MIN_ENTRY_ENERGY:
        raise IcezooError(f"simulate: through-going muons need energy_max above {MUON_MIN_ENTRY_ENERGY:g} GeV")
    while got < m:
        k = max(4 * (m - got), 256)
        e = sample_energies(rng, cfg, k)
        y = rng.random(k) ** 2
        reach = muon_range((1.0 - y) * e)
        ok = np.flatnonzero(rng.random(k) * reach < reach - muon_range(MUON_MIN_ENTRY_ENERGY))[: m - got]
        e_out.append(e[ok])
        y_out.append(y[ok])
        got += len(ok)
    return np.concatenate(e_out), np.concatenate(y_out)


def _sphere_exit(pos: np.ndarray, vdir: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit s of the lines pos + s vdir through the sphere of this radius (NaN if missed)."""
    pd = np.einsum("ij,ij->i", pos, vdir)
    disc = pd * pd - np.einsum("ij,ij->i", pos, pos) + radius * radius
    root = np.sqrt(np.where(disc >= 0, disc, np.nan))
    return -pd - root, -pd + root


# ----------------------------------------------------------------------------------------------
# Readout: DOM launches -> pulses, local coincidence, triggers, noise
# ----------------------------------------------------------------------------------------------
def _readout(key, q, tag, launch: bool, need_doms: int | None = None, units_only: bool = False,
             unpacked: tuple | None = None) -> dict:
    """Photo-electrons, as sorted packed (event, sensor, time) keys with their charges and tags ->
    pulses in the same order with their HLC flag.

    ``launch``: each DOM launches on a PE and records LAUNCH_NS; the next PE after that opens the next
    launch. A launch is HLC when a DOM within 2 on the string launched within +-1 us. HLC launches are
    unfolded into pulses of ATWD_MERGE_NS (first ATWD_NS) and FADC_MERGE_NS bins; an SLC launch is one
    pulse, the charge of its first SLC_STAMP_NS (later PEs of the launch are not read out).
    Otherwise (the legacy readout) PEs in the same PULSE_MERGE_NS bin from the DOM's first PE form
    a pulse and HLC is decided per pulse. HLC is only computed in events with at least ``need_doms``
    hit DOMs (fewer cannot trigger). A pulse's tag is its first PE's. ``units_only``: the launches
    (legacy: pulses) with their HLC flag and no charges, all the trigger needs. ``unpacked``: the
    caller's ``_unpack(key)``, when it has it."""
    ev, sen, t = unpacked if unpacked is not None else _unpack(key)
    n = len(key)
    es = key >> _T_BITS
    new_dom = _run_starts(es)
    if launch:
        start = new_dom.copy()
        t_unit = np.zeros(0, dtype=np.int64)  # (replaced in the first pass when there are PEs)
        pending, es_p, t_p, head = None, es, t, new_dom  # the PEs not yet in a launch (None: all)
        while len(t_p):
            heads = np.flatnonzero(head)
            tl = np.repeat(t_p[heads], np.diff(heads, append=len(t_p)))  # each PE's DOM's first pending
            if pending is None:  # every PE's launch time so far; those outside are set again below
                start[heads] = True
                t_unit = tl
            else:
                start[pending[heads]] = True
                t_unit[pending] = tl
            out = np.flatnonzero(t_p >= tl + LAUNCH_NS)
            pending, es_p, t_p = out if pending is None else pending[out], es_p[out], t_p[out]
            head = _run_starts(es_p)
    else:
        first = np.maximum.accumulate(np.where(new_dom, np.arange(n), 0)) if n else np.zeros(0, np.int64)
        bins = (t - t[first]) // PULSE_MERGE_NS if n else np.zeros(0, np.int64)
        start = new_dom.copy()
        start[1:] |= bins[1:] != bins[:-1]
    # local coincidence per unit (launch, or legacy pulse)
    u_idx = np.flatnonzero(start)
    u_ev = ev[u_idx]
    u_hlc = np.zeros(len(u_idx), dtype=bool)
    if need_doms is None:
        may = np.arange(len(u_idx))
    else:
        doms_per_event = np.bincount(ev[np.flatnonzero(new_dom)], minlength=int(ev.max()) + 1 if n else 0)
        may = np.flatnonzero(doms_per_event[u_ev] >= need_doms) if n else np.zeros(0, np.int64)
    u_key = key[u_idx]
    u_hlc[may] = _hlc(u_ev[may], sen[u_idx][may], t[u_idx][may], u_key[may])
    if units_only:
        return {"ev": u_ev, "sen": sen[u_idx], "t": t[u_idx], "hlc": u_hlc, "key": u_key}
    if launch:
        unit_of = np.cumsum(start) - 1
        hlc_pe = u_hlc[unit_of]
        dt = t - t_unit  # in [0, LAUNCH_NS)
        bins = _launch_bins()[dt]
        keep = hlc_pe | (dt < SLC_STAMP_NS)
        bins *= hlc_pe
        k = np.flatnonzero(keep)
        key, q, tag, bins, start, hlc_pe = key[k], q[k], tag[k], bins[k], start[k], hlc_pe[k]
        new_pulse = start
        new_pulse[1:] |= bins[1:] != bins[:-1]
        p = np.flatnonzero(new_pulse)
        hlc = hlc_pe[p]
        first_pe = k[p]  # each pulse's first PE in the unfiltered input
    else:
        p = u_idx
        hlc = u_hlc
        first_pe = p
    return {"ev": ev[first_pe], "sen": sen[first_pe], "t": t[first_pe],
            "q": np.add.reduceat(q, p) if len(p) else np.zeros(0), "tag": tag[p], "hlc": hlc, "key": key[p]}


@lru_cache(maxsize=1)
def _launch_bins() -> np.ndarray:
    """The digitiser bin of a PE by its delay after the launch (0 to LAUNCH_NS - 1 ns): ATWD_MERGE_NS
    bins over the first ATWD_NS, FADC_MERGE_NS bins after (a table: one lookup per PE)."""
    dt = np.arange(LAUNCH_NS)
    atwd_bins = ATWD_NS // ATWD_MERGE_NS + 1
    return np.where(dt < ATWD_NS, dt // ATWD_MERGE_NS, atwd_bins + (dt - ATWD_NS) // FADC_MERGE_NS).astype(np.int16)


def _unpack(key: np.ndarray):
    """(event, sensor, time) of packed keys (the inverse of ``_pack``)."""
    ev, sen = np.divmod(key >> _T_BITS, N_SENSORS)
    return ev, sen, (key & ((1 << _T_BITS) - 1)) - _TIME_OFFSET


def _merge_sorted(key_a, key_b, *pairs):
    """Merge two sorted key arrays (ties: a first) and, alike, the (a, b) value pairs."""
    pos_b = np.searchsorted(key_a, key_b, side="right") + np.arange(len(key_b))
    free = np.ones(len(key_a) + len(key_b), dtype=bool)
    free[pos_b] = False
    pos_a = np.flatnonzero(free)  # a fills the rest, in order (cheaper than searching b for each a)
    out = []
    for a, b in ((key_a, key_b), *pairs):
        m = np.empty(len(a) + len(b), dtype=np.result_type(a, b))
        m[pos_a] = a
        m[pos_b] = b
        out.append(m)
    return out


def _smt_windows(ev, t, hits: int, window: int):
    """Sliding windows of ``hits`` consecutive hits (per event, time ordered) within ``window`` ns:
    (event, window start, window end) of each."""
    o = np.lexsort((t, ev))
    ev, t = ev[o], t[o]
    k = hits - 1
    if len(ev) <= k:
        return (np.zeros(0, dtype=np.int64),) * 3
    win = np.flatnonzero((ev[k:] == ev[:-k]) & (t[k:] - t[:-k] <= window))
    return ev[win], t[win], t[win + k]


def _trigger(pulses: dict, deepcore: bool):
    """SMT8 (and SMT3 on the DeepCore fiducial DOMs) on the first HLC pulse of each DOM: per
    triggered event its index, the start of its first and the end of its last trigger window, and
    the trigger bits (1: SMT8, 2: SMT3)."""
    det = detector()
    h = np.flatnonzero(pulses["hlc"])
    hk = pulses["key"][h] >> _T_BITS
    h = h[np.flatnonzero(_run_starts(hk))]
    hit_ev, hit_t, hit_sen = pulses["ev"][h], pulses["t"][h], pulses["sen"][h]
    parts = [(*_smt_windows(hit_ev, hit_t, SMT_HITS, SMT_WINDOW_NS), 1)]
    if deepcore:
        f = np.flatnonzero(det.deepcore_fiducial[hit_sen])
        parts.append((*_smt_windows(hit_ev[f], hit_t[f], SMT3_HITS, SMT3_WINDOW_NS), 2))
    w_ev = np.concatenate([p[0] for p in parts])
    w_start = np.concatenate([p[1] for p in parts])
    w_end = np.concatenate([p[2] for p in parts])
    w_bit = np.concatenate([np.full(len(p[0]), p[3], dtype=np.int64) for p in parts])
    o = np.argsort(w_ev, kind="stable")
    w_ev, w_start, w_end, w_bit = w_ev[o], w_start[o], w_end[o], w_bit[o]
    trig_ev, first = np.unique(w_ev, return_index=True)
    if not len(trig_ev):
        return trig_ev, trig_ev, trig_ev, trig_ev
    t_start = np.minimum.reduceat(w_start, first)
    t_end = np.maximum.reduceat(w_end, first)
    bits = np.bitwise_or.reduceat(w_bit, first)
    return trig_ev, t_start, t_end, bits


def _dom_draws(rng, cdf: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), N_SENSORS - 1).astype(np.int64)


def noise_hits(rng, win_lo: np.ndarray, win_hi: np.ndarray, bursts: bool = True):
    """Dark-noise hits (event, sensor, time) over the readout windows [win_lo, win_hi].

    With ``bursts``: uncorrelated Poisson hits at 250 Hz (scaled 780/560 on high-QE DOMs) plus
    correlated bursts of 3-4 hits on one DOM, the burst starts a Poisson process that carries the rest
    of the 560 / 780 Hz, the hits of a burst separated by exponential gaps (mean BURST_GAP_NS); bursts
    that start before the window reach into it. Without: all 560 / 780 Hz as Poisson hits."""
    det = detector()
    length = (win_hi - win_lo).astype(np.float64)
    rate = det.noise_uncorrelated if bursts else det.noise_rate
    n = rng.poisson(rate.sum() * length)
    ev = np.repeat(np.arange(len(win_lo)), n)
    sen = _dom_draws(rng, np.cumsum(rate) / rate.sum(), len(ev))
    t = win_lo[ev] + np.floor(rng.random(len(ev)) * (length[ev] + 1)).astype(np.int64)
    if not bursts:
        return ev, sen, t
    pad = 20.0 * BURST_GAP_NS
    nb = rng.poisson(det.burst_rate.sum() * (length + pad))
    b_ev = np.repeat(np.arange(len(win_lo)), nb)
    b_sen = _dom_draws(rng, np.cumsum(det.burst_rate) / det.burst_rate.sum(), len(b_ev))
    b_t0 = win_lo[b_ev] - pad + rng.random(len(b_ev)) * (length[b_ev] + pad)
    size = rng.choice(np.asarray(BURST_SIZES), len(b_ev))
    owner = np.repeat(np.arange(len(b_ev)), size)
    first = _run_starts(owner)
    gaps = np.where(first, 0.0, rng.exponential(BURST_GAP_NS, len(owner)))
    h_t = np.floor(b_t0[owner] + _segment_cumsum(gaps, first)).astype(np.int64)
    h_ev = b_ev[owner]
    inside = np.flatnonzero((h_t >= win_lo[h_ev]) & (h_t <= win_hi[h_ev]))
    return (np.concatenate([ev, h_ev[inside]]), np.concatenate([sen, b_sen[owner[inside]]]),
            np.concatenate([t, h_t[inside]]))


def afterpulse_times(rng, t: np.ndarray, n_pe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Afterpulses of PE samples at times t carrying n_pe photo-electrons each: Poisson(0.06 n_pe)
    per sample, delayed by a Gaussian 6 +- 2 us (at least 100 ns). Returns (sample index, time)."""
    k, some = _thin(rng, (AFTERPULSE_PROB * n_pe).astype(np.float32))  # Poisson, cheap where mostly 0
    src = np.repeat(some, k)
    delay = np.maximum(rng.normal(AFTERPULSE_DELAY_NS, AFTERPULSE_SPREAD_NS, len(src)), 100.0)
    return src, t[src] + np.rint(delay).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# One chunk of candidate events of one type
# ----------------------------------------------------------------------------------------------
def _loss_sources(rng, cfg, ctx, owner, s_loss, e_loss, pos, vdir):
    """The stochastic losses as EM cascades along their muons (time s / c); losses too faint to reach
    any string are skipped (the same speed cut as every source)."""
    det = detector()
    photons = e_loss * CASCADE_M_PER_GEV * MUON_PHOTONS_PER_M * cfg.yield_scale
    p = pos[owner] + s_loss[:, None] * vdir[owner]
    reach = _band_reach(photons, cascade=True)
    outside = np.maximum(np.hypot(p[:, 0], p[:, 1]) - det.string_r_max, np.abs(p[:, 2]) - det.dom_z_max)
    near = np.flatnonzero(outside < reach.max(1))
    ev, sen, n_pe, t_geo, shape, scale = _cascade_sources(rng, p[near], vdir[owner[near]], photons[near], ctx,
                                                          reach[near])
    t_geo = t_geo + (s_loss[near][ev] * (1.0 / C_VACUUM)).astype(np.float32)
    return owner[near][ev], sen, n_pe, t_geo, shape, scale


def _may_trigger(ev: np.ndarray, sen: np.ndarray, m: int, deepcore: bool) -> np.ndarray:
    """Per event of ``m``: whether its hit (event, DOM) pairs can make a trigger at all, whatever the
    PE times. The triggers count DOMs with an HLC launch, and HLC needs a hit DOM within 2 on the same
    string, so: at least SMT_HITS such DOMs, or (DeepCore) SMT3_HITS of them on fiducial DOMs."""
    pair = np.sort(ev.astype(np.int64) * N_SENSORS + sen)  # unique below (np.unique hashes: ~10x slower)
    pair = pair[np.flatnonzero(_run_starts(pair))]
    dom = pair % 60  # N_SENSORS is a multiple of 60: the DOM's rank on its string
    # pair is sorted and unique, so a neighbour within 2 above exists iff the next pair is at most 2
    # above on the same string (likewise below)
    gap = np.diff(pair)
    hlc = np.zeros(len(pair), dtype=bool)
    hlc[:-1] = (gap <= 2) & (dom[:-1] + gap < 60)
    hlc[1:] |= (gap <= 2) & (dom[1:] - gap >= 0)
    hlc = np.flatnonzero(hlc)
    pev = pair[hlc] // N_SENSORS
    ok = np.bincount(pev, minlength=m) >= SMT_HITS
    if deepcore:
        fid = detector().deepcore_fiducial[pair[hlc] % N_SENSORS]
        ok |= np.bincount(pev[fid], minlength=m) >= SMT3_HITS
    return ok


def _light_sources(rng: np.random.Generator, cfg: SimulatorConfig, kind: int, zbin: np.ndarray,
                   ctx: _Context) -> tuple[dict, tuple[np.ndarray, ...]]:
    """Truth of ``len(zbin)`` candidate events of one type and their light sources: the lepton and
    cascade from the neutrino (kinematics), the muon's track and stochastic losses; returns the truth
    columns and the sources concatenated (event, sensor, expected PEs, geometric time, delay shape, scale)."""
    m = len(zbin)
    az, ze, u, energy = _draw_truth(rng, cfg, m, zbin)
    nan = np.full(m, np.nan)
    y, track_len, e_mu, e_casc = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    opening = np.zeros(m)
    sources = []
    kin = cfg.kinematics
    if kind in (0, 1):
        if kind == 0 and kin:
            energy, y = _entering_muons(rng, cfg, m)
        else:
            y = rng.random(m) ** 2 if kind == 1 else nan  # inelasticity, mean 1/3
        if kin:
            opening = _kinematic_angles(rng, energy)
            phi = rng.uniform(0.0, 2 * np.pi, m)
            mdir = _deflect(-u, opening, phi)  # the muon's direction of travel
        else:
            phi = np.zeros(m)
            mdir = -u
        e_mu = (1.0 - y) * energy if (kin or kind == 1) else energy.copy()
        if kind == 0:  # through-going muon: random point on a disk perpendicular to the muon
            e1, e2 = _basis(mdir)
            r = cfg.generation_radius * np.sqrt(rng.random(m))
            ang = rng.uniform(0, 2 * np.pi, m)
            pos = (r * np.cos(ang))[:, None] * e1 + (r * np.sin(ang))[:, None] * e2
            half = np.sqrt(np.maximum(STOCH_RADIUS**2 - r * r, 0.0))
            s0, s_hi = -half, half  # where the muon is within STOCH_RADIUS of the centre
            if kin:  # the vertex lies upstream, uniformly where it leaves the muon >= MUON_MIN_ENTRY_ENERGY
                upstream = rng.random(m) * (muon_range(e_mu) - muon_range(MUON_MIN_ENTRY_ENERGY))
                e_mu = np.maximum(muon_energy_after(e_mu, upstream), MUON_MIN_ENTRY_ENERGY)
                s_min = s0 - upstream
            else:
                s_min = np.full(m, -np.inf)
            live = np.ones(m, dtype=bool)
        else:  # starting track: the muon and a hadronic cascade from the vertex
            pos = _vertices(rng, cfg, m)
            s0, s_min = np.zeros(m), np.zeros(m)
            s_hi = np.nan_to_num(_sphere_exit(pos, mdir, STOCH_RADIUS)[1], nan=0.0)
            live = np.ones(m, dtype=bool)
        idx = np.flatnonzero(live)
        if cfg.stochastic:
            owner, s_loss, e_loss, s_stop, v_min = stochastic_losses(rng, e_mu[idx], s0[idx], s_hi[idx])
            radiative_b = MUON_LOSS_B * v_min
            loss = _loss_sources(rng, cfg, ctx, owner, s_loss, e_loss, pos[idx], mdir[idx])
            sources.append((idx[loss[0]], *loss[1:]))
        else:
            s_stop = muon_range(e_mu[idx]) if (kind == 1 or not kin) else s0[idx] + muon_range(e_mu[idx])
            radiative_b = MUON_LOSS_B
        s_max = np.full(m, np.nan)
        s_max[idx] = s_stop
        track_len = s_max - np.maximum(s_min, s0) if kind == 0 else s_max
        trk = _track_sources(rng, pos[idx], mdir[idx], e_mu[idx], s_min[idx], s_stop, cfg.yield_scale, ctx, radiative_b)
        sources.append((idx[trk[0]], *trk[1:]))
        if kind == 1:
            e_casc = HADRONIC_FACTOR * y * energy
            cdir = _deflect(-u, _kinematic_angles(rng, energy), phi + np.pi) if kin else -u
            photons = e_casc * CASCADE_M_PER_GEV * MUON_PHOTONS_PER_M * cfg.yield_scale
            sources.append(_cascade_sources(rng, pos, cdir, photons, ctx))
    else:  # cascade: nu_e / nu_tau CC (all energy visible) or NC (the hadronic part only)
        pos = _vertices(rng, cfg, m)
        if kin:
            y = rng.random(m) ** 2
            nc = rng.random(m) < NC_FRACTION_CASCADES
            e_casc = np.where(nc, 0.0, (1.0 - y) * energy) + HADRONIC_FACTOR * y * energy
            opening = _kinematic_angles(rng, energy)
            cdir = _deflect(-u, opening, rng.uniform(0.0, 2 * np.pi, m))
        else:  # all energy in an EM-equivalent shower along the neutrino
            e_casc, cdir = energy.copy(), -u
        photons = e_casc * CASCADE_M_PER_GEV * MUON_PHOTONS_PER_M * cfg.yield_scale
        sources.append(_cascade_sources(rng, pos, cdir, photons, ctx))
    truth = {"az": az, "ze": ze, "energy": energy, "pos": pos, "y": y, "track_len": track_len, "e_mu": e_mu,
             "e_casc": e_casc, "opening": opening}
    return truth, tuple(np.concatenate([s_[k] for s_ in sources]) for k in range(6))


def _sorted_pe_keys(ev, sen, rep, t, weight):
    """The PEs (row ``rep``, time ``t``) once in (event, sensor, time) order, ties in row order (both
    passes keep it): their packed keys and weights. Equal to a stable argsort of the packed keys
    (PEs of one row with equal times are interchangeable), but a plain sort of codes that carry the
    row: (rank of the row's (event, sensor) pair, time, the row's rank within its pair), 3-4x cheaper."""
    pk = ev.astype(np.int64) * N_SENSORS + sen
    ro = np.argsort(pk, kind="stable")
    spk = pk[ro]
    new = _run_starts(spk)
    first = np.flatnonzero(new)
    pair_of = np.cumsum(new) - 1
    sub = np.arange(len(spk)) - first[pair_of]
    r_bits = int(sub.max()).bit_length() if len(sub) else 0
    if len(first).bit_length() + _T_BITS + r_bits > 63:  # cannot happen at the chunk sizes used
        key = _pack(ev, sen, 0)[rep] + t
        order = np.argsort(key, kind="stable")
        return key[order], weight[rep[order]]
    code = np.empty(len(spk), dtype=np.int64)
    code[ro] = (pair_of << (_T_BITS + r_bits)) | sub
    value = code[rep] + ((t + _TIME_OFFSET) << r_bits)
    value.sort()
    p = value >> (_T_BITS + r_bits)
    row = ro[first[p] + (value & ((1 << r_bits) - 1))]
    key = (spk[first][p] << _T_BITS) + ((value >> r_bits) & ((1 << _T_BITS) - 1))
    return key, weight[row]


def _photo_electrons(rng: np.random.Generator, cfg: SimulatorConfig, m: int, sources: tuple[np.ndarray, ...]):
    """Photo-electrons from the sources, sorted by (event, sensor, time): packed keys, charges and
    per-PE weights (a capped sample carries the rest of its source's charge)."""
    ev, sen, n_pe, t_geo, shape, tscale = sources
    # photo-electrons (Poisson counts from the sources): capped samples carry the rest of the charge;
    # events that cannot trigger are dropped here, before any PE is drawn (exact: see _may_trigger)
    hit = np.flatnonzero(n_pe > 0)
    hit = hit[_may_trigger(ev[hit], sen[hit], m, cfg.deepcore_trigger)[ev[hit]]]
    ev, sen, t_geo, shape, tscale, n_pe = ev[hit], sen[hit], t_geo[hit], shape[hit], tscale[hit], n_pe[hit]
    n_s = np.minimum(n_pe, PE_SAMPLE_CAP)
    weight = (n_pe / n_s).astype(np.float32)
    rep = np.repeat(np.arange(len(n_s)), n_s)
    n_ph = len(rep)
    t = t_geo[rep] + rng.standard_gamma(shape[rep], dtype=np.float32) * tscale[rep]
    t += rng.standard_normal(n_ph, dtype=np.float32) * np.float32(JITTER_NS)
    key, w_ph = _sorted_pe_keys(ev, sen, rep, np.rint(t).astype(np.int64), weight)
    q = _spe_charges(rng, n_ph) * w_ph

    return key, q, w_ph


def _readout_window(rng: np.random.Generator, cfg: SimulatorConfig, key, q, w_ph, unpacked, remap, t_start, t_end,
                    n_trig: int) -> tuple[np.ndarray, ...]:
    """The triggered events' readout: physics PEs inside [start - 4 us, end + 6 us], afterpulses and
    dark noise merged in, read out into pulses (event, sensor, time, charge, tag, auxiliary)."""
    ev_ph, sen_ph, t_ph = unpacked
    win_lo = t_start - READOUT_BEFORE_NS
    win_hi = t_end + READOUT_AFTER_NS
    new_ev = remap[ev_ph]
    keep = np.flatnonzero(new_ev >= 0)
    keep = keep[np.flatnonzero((t_ph[keep] >= win_lo[new_ev[keep]]) & (t_ph[keep] <= win_hi[new_ev[keep]]))]
    a_ev, a_sen, a_t, a_q = new_ev[keep], sen_ph[keep], t_ph[keep], q[keep]
    a_key = _pack(a_ev, a_sen, a_t)  # still sorted: the event remap is increasing
    extra = []
    if cfg.afterpulses and len(keep):
        src, ap_t = afterpulse_times(rng, a_t, w_ph[keep])
        inside = np.flatnonzero(ap_t <= win_hi[a_ev[src]])
        src, ap_t = src[inside], ap_t[inside]
        extra.append((a_ev[src], a_sen[src], ap_t, 2))
    if cfg.noise and n_trig:
        n_ev, n_sen, n_t = noise_hits(rng, win_lo, win_hi, cfg.noise_bursts)
        extra.append((n_ev, n_sen, n_t, 1))
    extra.append((a_ev[:0], a_sen[:0], a_t[:0], 0))
    e_ev, e_sen, e_t = (np.concatenate([e[c] for e in extra]).astype(np.int64) for c in range(3))
    e_key = _pack(e_ev, e_sen, e_t)
    e_tag = np.concatenate([np.full(len(e[0]), e[3], np.int8) for e in extra])
    o = np.argsort(e_key)
    e_key, e_tag, e_ev, e_sen, e_t = e_key[o], e_tag[o], e_ev[o], e_sen[o], e_t[o]
    a_key, a_q, a_tag, a_ev, a_sen, a_t = _merge_sorted(
        a_key, e_key, (a_q, _spe_charges(rng, len(e_key))), (np.zeros(len(a_key), np.int8), e_tag),
        (a_ev, e_ev), (a_sen, e_sen), (a_t, e_t))
    final = _readout(a_key, a_q, a_tag, cfg.launch_readout, unpacked=(a_ev, a_sen, a_t))
    a_ev, a_sen, a_t, a_q, a_tag, aux = final["ev"], final["sen"], final["t"], final["q"], final["tag"], ~final["hlc"]

    return a_ev, a_sen, a_t, a_q, a_tag, aux


def _kaggle_order(cfg: SimulatorConfig, pulses: tuple[np.ndarray, ...], n_trig: int):
    """Pulses in event, then time (then sensor) order, at most ``max_pulses`` per event: the pulse
    columns and the per-event counts."""
    a_ev, a_sen, a_t, a_q, a_tag, aux = pulses
    # event order, then time (then sensor): the Kaggle order; Kaggle clock
    # one stable argsort of a composite key (event: 11+ bits, time: 24 bits, sensor: 13 bits)
    o = np.argsort((a_ev.astype(np.int64) << (_T_BITS + 13)) | ((a_t + _TIME_OFFSET) << 13) | a_sen, kind="stable")
    a_ev, a_sen, a_t, a_q, a_tag, aux = a_ev[o], a_sen[o], a_t[o], a_q[o], a_tag[o], aux[o]
    counts = np.bincount(a_ev, minlength=n_trig)
    if cfg.max_pulses is not None and len(a_ev):
        starts_e = np.cumsum(counts) - counts
        rank = np.arange(len(a_ev)) - starts_e[a_ev]
        sel = np.flatnonzero(rank < cfg.max_pulses)
        a_ev, a_sen, a_t, a_q, a_tag, aux = a_ev[sel], a_sen[sel], a_t[sel], a_q[sel], a_tag[sel], aux[sel]
        counts = np.bincount(a_ev, minlength=n_trig)
    return (a_ev, a_sen, a_t, a_q, a_tag, aux), counts


def _simulate_chunk(rng: np.random.Generator, cfg: SimulatorConfig, kind: int, zbin: np.ndarray,
                    ctx: _Context | None = None) -> dict:
    """Simulate candidate events of one type (one per entry of ``zbin``, their cos-zenith bins);
    return the triggered ones (CSR pulses + truth, ``candidate`` = their index)."""
    ctx = ctx or _context(cfg)
    m = len(zbin)
    truth, sources = _light_sources(rng, cfg, kind, zbin, ctx)
    need = SMT3_HITS if cfg.deepcore_trigger else SMT_HITS
    key, q, w_ph = _photo_electrons(rng, cfg, m, sources)

    # trigger on the physics launches (legacy: pulses)
    ev_ph, sen_ph, t_ph = _unpack(key)
    pulses = _readout(key, q, None, cfg.launch_readout, need_doms=need, units_only=True,
                      unpacked=(ev_ph, sen_ph, t_ph))
    trig_ev, t_start, t_end, bits = _trigger(pulses, cfg.deepcore_trigger)
    n_trig = len(trig_ev)
    remap = np.full(m, -1, dtype=np.int64)
    remap[trig_ev] = np.arange(n_trig)

    pulses = _readout_window(rng, cfg, key, q, w_ph, (ev_ph, sen_ph, t_ph), remap, t_start, t_end, n_trig)
    (a_ev, a_sen, a_t, a_q, a_tag, aux), counts = _kaggle_order(cfg, pulses, n_trig)
    a_t = a_t - t_start[a_ev] + TRIGGER_TIME_NS
    trig = trig_ev
    az, ze, energy, pos = truth["az"], truth["ze"], truth["energy"], truth["pos"]
    y, track_len, e_mu, e_casc, opening = (truth[k] for k in ("y", "track_len", "e_mu", "e_casc", "opening"))
    return {
        "counts": counts,
        "sensor_id": a_sen.astype(np.int16),
        "time": a_t.astype(np.int64),
        "charge": _quantise(a_q, soft=cfg.launch_readout),
        "auxiliary": aux,
        "noise": a_tag == 1,
        "afterpulse": a_tag == 2,
        "azimuth": az[trig],
        "zenith": ze[trig],
        "energy": energy[trig],
        "event_type": np.full(n_trig, kind, dtype=np.int8),
        "vertex_x": pos[trig, 0],
        "vertex_y": pos[trig, 1],
        "vertex_z": pos[trig, 2],
        "inelasticity": y[trig],
        "track_length": track_len[trig],
        "muon_energy": e_mu[trig],
        "cascade_energy": e_casc[trig],
        "opening_angle": opening[trig],
        "trigger": bits.astype(np.int8),
        "candidate": trig,
    }


_EVENT_KEYS = ("azimuth", "zenith", "energy", "event_type", "vertex_x", "vertex_y", "vertex_z",
               "inelasticity", "track_length", "muon_energy", "cascade_energy", "opening_angle", "trigger")
_PULSE_KEYS = ("sensor_id", "time", "charge", "auxiliary", "noise", "afterpulse")


def _concat(parts: list[dict]) -> dict:
    out = {k: np.concatenate([p[k] for p in parts]) for k in (*_EVENT_KEYS, *_PULSE_KEYS, "counts")}
    return out


def _select_events(part: dict, which: np.ndarray) -> dict:
    """Events ``which`` (in that order) of a CSR part."""
    counts = part["counts"]
    starts = np.cumsum(counts) - counts
    n = counts[which]
    rows = np.repeat(starts[which] - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
    out = {k: part[k][which] for k in _EVENT_KEYS}
    out.update({k: part[k][rows] for k in _PULSE_KEYS})
    out["counts"] = n
    return out


def _largest_remainder(weights: np.ndarray, total: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Integer counts summing to ``total`` in the proportions ``weights`` (largest remainder; ties
    broken at random with ``rng``, else by position)."""
    share = weights / weights.sum() * total
    out = np.floor(share).astype(np.int64)
    rest = total - int(out.sum())
    tie = rng.random(len(share)) if rng is not None else np.arange(len(share), dtype=np.float64)
    out[np.lexsort((tie, -np.round(share - out, 9)))[:rest]] += 1
    return out


def zenith_bin_weights(cfg: SimulatorConfig) -> np.ndarray:
    """Target share of written events per cos-zenith bin: uniform, plus the down-going excess
    (``downgoing_excess`` of the events spread uniformly over cos zenith in [0, 1])."""
    centres = -1.0 + (np.arange(ZENITH_BINS) + 0.5) * (2.0 / ZENITH_BINS)
    w = np.full(ZENITH_BINS, 1.0 / ZENITH_BINS)
    return (1.0 - cfg.downgoing_excess) * w + cfg.downgoing_excess * (centres > 0) * (2.0 / ZENITH_BINS)


def simulate_events(cfg: SimulatorConfig, n_events: int, seed: int, stream: tuple[int, ...] = ()) -> dict:
    """Exactly ``n_events`` triggered events, in a seeded random order, with the event types in the
    configured proportions and cos(zenith) distributed as configured, exactly per bin.

    The trigger favours some directions (the PMTs look down), so each (type, cos-zenith bin) has a
    quota of written events: candidates are drawn per bin, in proportion to what is still missing
    over the bin's measured trigger efficiency, until every quota is met; surplus events are dropped.
    Within a bin everything else (energy, position, azimuth) follows the generation model.
    """
    keep_freed_memory()
    ctx = _context(cfg, seed)  # the per-DOM efficiencies depend on the dataset seed only
    tie_rng = np.random.default_rng(np.random.SeedSequence([seed, *stream, 98]))
    per_type = _largest_remainder(cfg.type_fractions, n_events, tie_rng)
    quota = np.stack([_largest_remainder(zenith_bin_weights(cfg), int(n), tie_rng) for n in per_type])
    parts = []
    for kind in range(3):
        need = quota[kind].copy()
        if need.sum() == 0:
            continue
        rng = np.random.default_rng(np.random.SeedSequence([seed, *stream, kind]))
        got = []
        tried = np.zeros(ZENITH_BINS)
        trig = np.zeros(ZENITH_BINS)
        while need.sum() > 0:
            eff = (trig + 1.0) / (tried + 4.0)  # per-bin trigger efficiency so far (prior ~ 0.25)
            want = np.where(need > 0, np.ceil(need / eff * 1.1) + 4, 0)
            m_b = np.floor(want * min(1.0, CHUNK_CANDIDATES / want.sum())).astype(np.int64)
            m_b = np.where(need > 0, np.maximum(m_b, 1), 0)
            zbin = np.repeat(np.arange(ZENITH_BINS), m_b)
            chunk = _simulate_chunk(rng, cfg, kind, zbin, ctx)
            b = zbin[chunk["candidate"]]
            tried += m_b
            trig += np.bincount(b, minlength=ZENITH_BINS)
            order = np.argsort(b, kind="stable")
            first = np.searchsorted(b[order], np.arange(ZENITH_BINS))
            rank = np.empty(len(b), dtype=np.int64)
            rank[order] = np.arange(len(b)) - first[b[order]]
            keep = np.flatnonzero(rank < need[b])
            if len(keep):
                got.append(chunk if len(keep) == len(b) else _select_events(chunk, keep))  # all kept: no copy
                need -= np.bincount(b[keep], minlength=ZENITH_BINS)
            if tried.sum() > 1000 * quota[kind].sum() + 200_000 and trig.sum() == 0:
                raise IcezooError(f"simulate: no {EVENT_TYPES[kind]} event triggers with these knobs "
                                  f"(tried {int(tried.sum())}); raise energy_min or yield_scale")
        parts.append(_concat(got))
    events = _concat(parts)
    rng = np.random.default_rng(np.random.SeedSequence([seed, *stream, 99]))
    return _select_events(events, rng.permutation(n_events))


# ----------------------------------------------------------------------------------------------
# Writing the Kaggle layout
# ----------------------------------------------------------------------------------------------
def _write_split(root: Path, split: str, cfg: SimulatorConfig, n_events: int, per_batch: int, seed: int,
                 first_event_id: int) -> int:
    """Write DIR/<split>/batch_N.parquet, DIR/<split>_meta.parquet, DIR/<split>_truth.parquet."""
    metas, truths = [], []
    event_id = first_event_id
    n_batches = max(1, math.ceil(n_events / per_batch))
    for b in range(n_batches):
        n = min(per_batch, n_events - b * per_batch)
        ev = simulate_events(cfg, n, seed, stream=(_SPLITS[split], b + 1))
        ids = np.arange(event_id, event_id + n, dtype=np.int64)
        event_id += n
        counts = ev["counts"]
        last = np.cumsum(counts) - 1
        kaggle_layout.write_batch(root / split / f"batch_{b + 1}.parquet", np.repeat(ids, counts),
                                  ev["sensor_id"], ev["time"], ev["charge"], ev["auxiliary"])
        metas.append({"batch_id": np.full(n, b + 1, dtype=np.int64), "event_id": ids,
                      "first_pulse_index": last - counts + 1, "last_pulse_index": last,
                      "azimuth": ev["azimuth"], "zenith": ev["zenith"]})
        noise = np.bincount(np.repeat(np.arange(n), counts), weights=ev["noise"], minlength=n)
        truths.append({"event_id": ids, "batch_id": np.full(n, b + 1, dtype=np.int64),
                       "azimuth": ev["azimuth"], "zenith": ev["zenith"], "energy": ev["energy"],
                       "event_type": np.asarray(EVENT_TYPES, dtype=object)[ev["event_type"]].astype(str),
                       "vertex_x": ev["vertex_x"], "vertex_y": ev["vertex_y"], "vertex_z": ev["vertex_z"],
                       "inelasticity": ev["inelasticity"], "track_length": ev["track_length"],
                       "muon_energy": ev["muon_energy"], "cascade_energy": ev["cascade_energy"],
                       "opening_angle": ev["opening_angle"], "trigger": ev["trigger"].astype(np.int64),
                       "n_pulses": counts.astype(np.int64), "n_noise_pulses": noise.astype(np.int64),
                       "n_afterpulses": np.bincount(np.repeat(np.arange(n), counts), weights=ev["afterpulse"],
                                                    minlength=n).astype(np.int64)})
    meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]}
    if split == "test":
        meta.pop("azimuth")
        meta.pop("zenith")
    kaggle_layout.write_meta(root / f"{split}_meta.parquet", **meta)
    kaggle_layout.write_table(root / f"{split}_truth.parquet", {k: np.concatenate([t[k] for t in truths]) for k in truths[0]})
    return event_id


def make_config(**knobs) -> SimulatorConfig:
    """SimulatorConfig from keyword knobs; a bad knob is one IcezooError line naming it."""
    try:
        return SimulatorConfig(**knobs)
    except ValidationError as exc:
        raise IcezooError(format_validation_error("simulate", exc)) from None


def simulate(out_dir, n_events: int, events_per_batch: int = 50_000, seed: int = 0, test: bool = False,
             test_events: int | None = None, overwrite: bool = False, test_events_per_batch: int | None = None,
             **knobs) -> Path:
    """Simulate ``n_events`` training events (and with ``test`` a test split of ``test_events``,
    default n_events // 10, at least 1) into ``out_dir`` in the Kaggle layout; return its path.
    The test split's files hold ``test_events_per_batch`` events (default: ``events_per_batch``).

    Writes into a temporary directory next to ``out_dir`` and renames it into place, so a reader
    never sees a half-written dataset. Truth beyond azimuth/zenith goes to ``train_truth.parquet``
    (and ``test_truth.parquet``: the test split's truth, kept apart so test predictions can be scored).
    """
    cfg = make_config(**knobs)
    if n_events < 1:
        raise IcezooError(f"simulate: --events must be >= 1 (got {n_events})")
    if events_per_batch < 1:
        raise IcezooError(f"simulate: --events-per-batch must be >= 1 (got {events_per_batch})")
    if test and test_events is not None and test_events < 1:
        raise IcezooError(f"simulate: --test-events must be >= 1 (got {test_events})")
    out = Path(out_dir)
    if (out.exists() or out.is_symlink()) and not (out.is_dir() and not out.is_symlink() and not any(out.iterdir())):
        if not overwrite:
            raise IcezooError(f"{out}: already exists and is not empty (choose another --out)")
        why = kaggle_layout.foreign_entry(out)  # --overwrite replaces a dataset icezoo wrote, nothing else
        if why:
            raise IcezooError(f"{out}: --overwrite replaces only a dataset icezoo wrote, and {why}; "
                              f"nothing was changed (choose another --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        next_id = _write_split(tmp, "train", cfg, n_events, events_per_batch, seed, first_event_id=1)
        if test:
            n_test = max(1, n_events // 10) if test_events is None else test_events
            _write_split(tmp, "test", cfg, n_test, test_events_per_batch or events_per_batch, seed,
                         first_event_id=next_id)
        shutil.copyfile(_resource("sensor_geometry.csv"), tmp / "sensor_geometry.csv")
        (tmp / "simulator_config.json").write_text(cfg.model_dump_json(indent=2) + "\n")
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
