"""Neutrino kinematics and muon propagation: the CC opening angle, the muon's light yield, range,
continuous and stochastic energy losses, and the through-going muons' entry energies."""

from __future__ import annotations

import math

import numpy as np

from icezoo.core.errors import IcezooError
from icezoo.data.simulator.candidates import sample_energies
from icezoo.data.simulator.config import SimulatorConfig
from icezoo.data.simulator.constants import (
    CASCADE_M_PER_GEV, KIN_INDEX, KIN_MEDIAN_DEG, MUON_LOSS_A, MUON_LOSS_B, MUON_MIN_ENTRY_ENERGY,
    MUON_PHOTONS_PER_M, STOCH_E_CUT, STOCH_V_CUT,
)
from icezoo.data.simulator.keys import run_starts, segment_cumsum


def muon_photons_per_m(energy: np.ndarray, radiative_b: float | np.ndarray = MUON_LOSS_B) -> np.ndarray:
    """Detectable photons per metre of muon track: bare muon with its sub-threshold losses
    (2.5e3 * (1 + 0.987 (0.188 + 0.0206 ln E))) plus continuous radiative losses b*E as EM light
    (5.25 m/GeV; with stochastic losses only their part below the sampling threshold, b v_min E)."""
    e = np.maximum(energy, 1.0)
    return MUON_PHOTONS_PER_M * (1.0 + 0.987 * (0.188 + 0.0206 * np.log(e)) + CASCADE_M_PER_GEV * radiative_b * e)


def muon_range(energy: np.ndarray) -> np.ndarray:
    """Mean muon range (m) for dE/dx = a + b E."""
    return np.log1p(energy * MUON_LOSS_B / MUON_LOSS_A) / MUON_LOSS_B

def kinematic_median_angle(e_nu: np.ndarray) -> np.ndarray:
    """Median angle (rad) between the neutrino and the CC muon (or a cascade's light axis):
    0.7 deg x (E_nu / TeV)^-0.7."""
    return np.radians(KIN_MEDIAN_DEG) * (np.asarray(e_nu, dtype=np.float64) / 1000.0) ** -KIN_INDEX


def kinematic_angles(rng, e_nu: np.ndarray) -> np.ndarray:
    """Angles with the median ``kinematic_median_angle``: a 2-D Gaussian on the sky (Rayleigh in the
    angle, sigma = median / sqrt(2 ln 2)), capped at pi."""
    sigma = kinematic_median_angle(e_nu) / math.sqrt(2.0 * math.log(2.0))
    return np.minimum(sigma * np.sqrt(-2.0 * np.log1p(-rng.random(len(e_nu)))), np.pi)


def perpendicular_basis(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to the unit vectors u and to each other."""
    ref = np.where(np.abs(u[:, 2:3]) < 0.9, np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]]))
    e1 = np.cross(u, ref)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(u, e1)


def deflect(u: np.ndarray, theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit vectors at angle theta from the unit vectors u, at azimuth phi around them."""
    e1, e2 = perpendicular_basis(u)
    return (np.cos(theta)[:, None] * u
            + np.sin(theta)[:, None] * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2))


def muon_energy_after(energy: np.ndarray, dist: np.ndarray, b: float | np.ndarray = MUON_LOSS_B) -> np.ndarray:
    """Muon energy after ``dist`` metres of continuous losses dE/dx = a + b E (0 once stopped)."""
    c = MUON_LOSS_A / b
    return np.maximum((energy + c) * np.exp(-b * dist) - c, 0.0)


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
    first = run_starts(owner)
    prev = np.empty(k)
    prev[1:] = s[:-1]
    prev[first] = s0[owner[first]]
    b_c = MUON_LOSS_B * v_min[owner]
    c = MUON_LOSS_A / b_c
    qm1 = np.expm1(-b_c * (s - prev))  # continuous drift: E -> (E + c) q - c
    log_a = np.maximum(segment_cumsum(np.log1p(qm1) + np.log1p(-v), first), -20.0)
    with np.errstate(over="ignore", invalid="ignore"):
        e_after = np.exp(log_a) * (e0[owner] + segment_cumsum((1.0 - v) * c * qm1 * np.exp(-log_a), first))
        e_before = e_after / (1.0 - v)
    dead = ~(e_before > 0)
    alive = segment_cumsum(dead.astype(np.int64), first) == 0 if k else dead
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


def entering_muons(rng, cfg: SimulatorConfig, m: int) -> tuple[np.ndarray, np.ndarray]:
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


def sphere_exit(pos: np.ndarray, vdir: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit s of the lines pos + s vdir through the sphere of this radius (NaN if missed)."""
    pd = np.einsum("ij,ij->i", pos, vdir)
    disc = pd * pd - np.einsum("ij,ij->i", pos, pos) + radius * radius
    root = np.sqrt(np.where(disc >= 0, disc, np.nan))
    return -pd - root, -pd + root
