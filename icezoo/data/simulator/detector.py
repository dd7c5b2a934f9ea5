"""Detector and ice: the IC86 geometry and ice table (from ``icezoo.resources``), the per-DOM
response of a dataset, the PMT acceptance and light attenuation, and the reach tables that bound
which DOMs a source can light at all."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from icezoo.core.detector import C_ICE, N_SENSORS, SURFACE_Z
from icezoo.core.errors import IcezooError
from icezoo.data.simulator.constants import (
    BURST_SIZES, CASCADE_PROFILE_WIDTH, COS_C, DEEPCORE_STRINGS_STANDARD, DOM_AREA, DOM_CLARITY_WINDOW_M, HQE_FACTOR,
    MIN_EXPECTED_PE, NOISE_RATE_HQE_NS, NOISE_RATE_NS, NOISE_UNCORRELATED_NS, PANDEL_LAMBDA, PANDEL_TAU, SIN_C,
)
from icezoo.resources import geometry_csv, ice_table_csv


class Detector:
    """IC86 geometry, per-DOM QE and noise rate, per-string z lookup, ice table."""

    def __init__(self) -> None:
        hqe = self._load_geometry(geometry_csv())
        self._load_ice(ice_table_csv())
        self._bound_classes(hqe)

    def _load_geometry(self, path: Path) -> np.ndarray:
        """DOM positions, QE, noise rates, DeepCore fiducial DOMs and the per-string height lookup;
        returns the high-QE mask."""
        geo = np.loadtxt(path, delimiter=",", skiprows=1)
        if geo.shape != (N_SENSORS, 4):
            raise IcezooError(f"{path}: expected {N_SENSORS} rows of sensor_id,x,y,z")
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
            raise IcezooError(f"{path}: DOMs must be numbered top to bottom on each string")
        return hqe

    def _load_ice(self, path: Path) -> None:
        """The ice table, and 1/absorption and 1/scattering on a 1 m grid in z with their running integrals."""
        ice = np.loadtxt(path, delimiter=",", skiprows=1)
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
        self.min_inv_scat = float(1.0 / self.ice_scat.max())
        self.cum_abs32, self.cum_scat32 = self.cum_abs.astype(np.float32), self.cum_scat.astype(np.float32)

    def _bound_classes(self, hqe: np.ndarray) -> None:
        """The DOM classes and per-(string, depth band) terms of the Poisson-thinning bounds."""
        # DOM classes for the thinning bound (speed only, exact result): clearest ice within
        # DOM_CLARITY_WINDOW_M of the DOM's depth, rounded to one of 32 log-spaced levels of
        # 1/absorption (clearer), and its QE
        iz = np.clip(np.rint(self.z - self.grid_z0).astype(np.int64), 0, len(self.inv_abs_grid) - 1)
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
        lo_b, hi_b = band_limits()
        self.band_k = np.zeros((86, len(lo_b)))
        self.band_masks = []
        for b in range(len(lo_b)):
            inb = ((self.z >= lo_b[b] - 2.0) & (self.z <= hi_b[b] + 2.0)).reshape(86, 60)
            k = np.where(inb, self.dom_k32.reshape(86, 60), np.inf).min(1)
            self.band_k[:, b] = np.where(np.isfinite(k), k, self.class_k.min())
            self.band_masks.append(inb)
        self.band_pref = self.band_max(self.dom_pref32)

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
def detector() -> Detector:
    """The shared detector tables (loaded once)."""
    return Detector()


class DomResponse:
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
def dom_response(seed: int = 0, spread: float = 0.0) -> DomResponse:
    """The per-DOM response for a dataset seed (spread 0: every DOM at its nominal QE)."""
    return DomResponse(seed, spread)


def _cascade_profile_norm() -> float:
    c = np.linspace(-1.0, 1.0, 20001)
    g = np.exp(-0.5 * ((c - COS_C) / CASCADE_PROFILE_WIDTH) ** 2)
    return float(1.0 / np.trapezoid(g, c) * 2.0)  # mean over the sphere = 1


CASCADE_NORM = _cascade_profile_norm()


def acceptance(cos_eta: np.ndarray) -> np.ndarray:
    """Relative angular acceptance of the down-facing PMT: 1 for light from straight below
    (cos_eta = 1), ~0.27 from the side, 0.02 from above (hole-ice/bubble-column leakage)."""
    return 0.02 + 0.98 * (0.5 * (1.0 + cos_eta)) ** 2


MEAN_ACCEPTANCE = 0.02 + 0.98 / 3.0  # sphere average of acceptance


def _acceptance_bound(dist: np.ndarray) -> np.ndarray:
    """Largest possible mixed acceptance at a path length (least scattering in the table)."""
    w = np.exp(-dist / detector().ice_scat.max())
    return w + (1.0 - w) * MEAN_ACCEPTANCE


def _attenuation(dist, d_eff, inv_abs):
    """Surviving fraction of the light: direct-path absorption times the Pandel normalisation
    (1 + tau c/lambda_a)^(-d_eff/lambda) for the longer scattered paths (absorption from the table)."""
    return np.exp(-dist * inv_abs - d_eff / PANDEL_LAMBDA * np.log1p(PANDEL_TAU * C_ICE * inv_abs))



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
            geo = DOM_AREA / (4 * np.pi * d**2) * max(CASCADE_NORM, 1.0)
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


def band_reach(light: np.ndarray, cascade: bool) -> np.ndarray:
    return _reach(light, cascade, _band_reach_tables())



def band_limits() -> tuple[np.ndarray, np.ndarray]:
    lo_b, hi_b = BAND_EDGES[:-1].copy(), BAND_EDGES[1:].copy()
    lo_b[0], hi_b[-1] = -1e4, 1e4
    return lo_b, hi_b
