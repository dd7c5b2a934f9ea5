"""Physical constants of the simulator: every figure with its source (docs/simulator.md states
each choice; [P] there marks the figures of the project's physics notes)."""

from __future__ import annotations

import math

from icezoo.core.detector import C_ICE  # group speed C_ICE = 0.2210 m/ns

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
HADRONIC_FACTOR = 0.88  # hadronic / EM light ([P]: ~0.88 at 10 TeV; used at all energies)
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
#: energies are drawn accordingly, see entering_muons): with a 50 GeV cut, none of 1,500 written
#: through-going muons had entered with less than 150 GeV (1% below 223 GeV)
MUON_MIN_ENTRY_ENERGY = 150.0
#: CC kinematics: median angle between the neutrino and the muon (or a cascade's light axis),
#: 0.7 deg x (E_nu / TeV)^-0.7 (the issue's figure; IceCube's usual kinematic-angle estimate)
KIN_MEDIAN_DEG, KIN_INDEX = 0.7, 0.7
#: the event-type mix (issue 23), derived in docs/simulator.md ("Event-type mix"), the one place its
#: numbers live: flavours 1:1:1 at the detector; sigma_NC / sigma_CC ~ 0.31 (deep-inelastic
#: cross-sections, 100 GeV - 100 TeV); tau -> mu nu nu branching 17.4% (PDG); through-going muons per
#: contained muon-producing CC event (our estimate: the interaction volume reaches ~0.4 km beyond the
#: vertex cylinder, against its 0.84 km mean chord; not the muon range)
NC_CC_RATIO = 0.31
TAU_TO_MU = 0.174
THROUGH_GOING_PER_CONTAINED = 0.5
_CC, _NC = 1.0 / (1.0 + NC_CC_RATIO), NC_CC_RATIO / (1.0 + NC_CC_RATIO)
#: relative rates per flavour-averaged CC+NC unit: cascades = nu_e CC + NC of all three flavours +
#: nu_tau CC without tau -> mu; starting tracks = nu_mu CC + nu_tau CC with tau -> mu
RATE_CASCADE = _CC + 3.0 * _NC + _CC * (1.0 - TAU_TO_MU)
RATE_STARTING = _CC * (1.0 + TAU_TO_MU)
RATE_THROUGH_GOING = THROUGH_GOING_PER_CONTAINED * RATE_STARTING
#: share of neutral-current interactions among cascade events (0.337)
NC_FRACTION_CASCADES = 3.0 * _NC / RATE_CASCADE
#: DOM: 13-inch glass sphere (IceCube instrumentation paper), geometric cross-section in m^2
DOM_AREA = math.pi * 0.1651**2
HQE_FACTOR = 1.35
NOISE_RATE_NS = 560e-9  # dark rate per ns, standard DOM (all noise: uncorrelated + bursts)
NOISE_RATE_HQE_NS = 780e-9  # high-QE DOM
#: of the 560 Hz, ~250 Hz are uncorrelated (Poisson); the rest comes in correlated bursts of 3-4
#: hits ([P]); high-QE DOMs scale both parts by 780/560. The gaps between the hits of a
#: burst are exponential with this mean (our assumption: the sources give no time scale)
NOISE_UNCORRELATED_NS = 250e-9
BURST_SIZES = (3, 4)
BURST_GAP_NS = 2000.0
#: afterpulses: probability per photo-electron (IceCube PMT paper, NIM A 618 (2010) 139: ~0.06)
#: and delay ~ Gaussian 6 +- 2 us ([P])
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
