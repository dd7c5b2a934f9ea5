"""Candidates and truth: the (event, DOM) pairs near a light source worth simulating (string
segments within a source's reach, band by band), and each candidate event's drawn truth (direction,
energy from the broken power law, vertex)."""

from __future__ import annotations

import math

import numpy as np

from icezoo.data.simulator.config import SimulatorConfig
from icezoo.data.simulator.constants import SEGMENT_DOMS, ZENITH_BINS
from icezoo.data.simulator.detector import band_limits, detector


# ----------------------------------------------------------------------------------------------
# Candidate (event, DOM) pairs near a source
# ----------------------------------------------------------------------------------------------

def _banded(ev, st, dmin2, zc, inv_a, reach) -> dict:
    """Segments of strings near a source, band by band. A pair's squared distance at height z is
    ``dmin2 + (z - zc)^2 / inv_a`` (closest approach dmin2 at zc), so a band of reach r covers
    ``zc +- sqrt((r^2 - dmin2) * inv_a)``; only bands that reach the pair at all give a segment.
    Returns per segment: event, string, band, its lowest DOM's rank on the string (``lo``), its
    number of DOMs (``n``) and ``d2``, a lower bound of the squared distance of its DOMs' string
    points from the source (the closest height of its DOMs to ``zc``)."""
    det = detector()
    lo_b, hi_b = band_limits()
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


def expand_segments(seg: dict, which: np.ndarray | None = None):
    """All (event, sensor) pairs of the segments ``which`` (all if None), int32."""
    ev, string, lo, n = (seg[k] if which is None else seg[k][which] for k in ("ev", "st", "lo", "n"))
    total = int(n.sum())
    starts = (np.cumsum(n) - n).astype(np.int32)
    # the (lo + j)-th lowest DOM of the string has sensor id string * 60 + 59 - (lo + j)
    sen = np.repeat((string * 60 + 59 - lo + starts).astype(np.int32), n)
    sen -= np.arange(total, dtype=np.int32)
    return np.repeat(ev.astype(np.int32), n), sen


def track_candidates(pos, vdir, reach):
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


def sphere_candidates(pos, reach):
    """Segments of strings (``_banded``) within their band's reach of the point pos."""
    det = detector()
    h2 = (det.string_x[None, :] - pos[:, 0:1]) ** 2 + (det.string_y[None, :] - pos[:, 1:2]) ** 2
    flat = np.flatnonzero(h2 <= (reach.max(1) ** 2)[:, None])
    ev, st = np.divmod(flat, h2.shape[1])
    return _banded(ev, st, h2.ravel()[flat], pos[:, 2][ev], np.ones(len(ev)), reach)


# ----------------------------------------------------------------------------------------------
# Truth: directions, energies, vertices
# ----------------------------------------------------------------------------------------------
def draw_truth(rng, cfg: SimulatorConfig, m: int, zbin: np.ndarray):
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


def draw_vertices(rng, cfg: SimulatorConfig, m: int) -> np.ndarray:
    r = cfg.vertex_radius * np.sqrt(rng.random(m))
    phi = rng.uniform(0, 2 * np.pi, m)
    z = rng.uniform(-cfg.vertex_half_height, cfg.vertex_half_height, m)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)
