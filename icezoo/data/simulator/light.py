"""Light sources -> photo-electrons: per (event, DOM) near a muon track or a cascade, the expected PE
(yield, distance, ice, QE, acceptance), the Poisson count drawn by exact thinning against cheap upper
bounds, the direct Cherenkov time and the Pandel delay's shape and scale."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from icezoo.core.detector import C_ICE, C_VACUUM, N_GROUP, N_SENSORS
from icezoo.data.simulator.candidates import expand_segments, sphere_candidates, track_candidates
from icezoo.data.simulator.config import SimulatorConfig
from icezoo.data.simulator.constants import (
    BOUND_SLACK, CASCADE_PROFILE_WIDTH, COS_C, DOM_AREA, FAINT_SEGMENT_PE, MUON_LOSS_B, PANDEL_ABS, PANDEL_LAMBDA,
    PANDEL_RHO, PANDEL_TAU, SIN_C, TAN_C,
)
from icezoo.data.simulator.detector import (
    CASCADE_NORM, DomResponse, MEAN_ACCEPTANCE, acceptance, band_reach, detector, dom_response,
)
from icezoo.data.simulator.kinematics import muon_photons_per_m


class LightContext(NamedTuple):
    """Per-dataset settings the light sources need: the DOM response and the timing model."""

    resp: DomResponse
    layered_timing: bool


def light_context(cfg: SimulatorConfig | None = None, seed: int = 0) -> LightContext:
    if cfg is None:
        return LightContext(dom_response(0, 0.0), False)
    return LightContext(dom_response(seed, cfg.dom_efficiency_spread), cfg.layered_timing)


def light_terms(dist, cos_eta, z_from, z_to, sen, ctx: LightContext):
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
    acc = MEAN_ACCEPTANCE + w_dir * (acceptance(cos_eta) - MEAN_ACCEPTANCE)
    att = np.exp(-dist * inv_a - d_eff * (1.0 / PANDEL_LAMBDA) * np.log1p(PANDEL_TAU * C_ICE * inv_a))
    if ctx.layered_timing:
        shape = d_eff * inv_s * np.float32(det.scat_ref / PANDEL_LAMBDA)
        scale = 1.0 / (np.float32(1.0 / PANDEL_TAU) + inv_a * np.float32(C_ICE * det.abs_ref / PANDEL_ABS))
    else:
        shape = d_eff * np.float32(1.0 / PANDEL_LAMBDA)
        scale = np.full(len(d_eff), 1.0 / PANDEL_RHO, dtype=np.float32)
    return w_dir, acc * ctx.resp.qe32[sen] * att, shape, scale


def thin(rng, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poisson thinning, step 1: counts n_b ~ Poisson(bound) and the rows where n_b > 0. Step 2
    (``thinned_counts``) keeps each of those PEs with probability mu / bound, which makes the
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


def thinned_counts(rng, n_b, mu, bound):
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


def sample_counts(rng, seg: dict, bmax: np.ndarray, bound_fn):
    """Step 1 of the Poisson thinning for every DOM of the segments: counts n_b ~ Poisson(bound) per
    (event, DOM), returned only where n_b > 0, with the bound (``bound_fn(ev, sen)``, float32).

    Segments whose per-DOM bound ``bmax`` (an upper bound of ``bound_fn`` on all their DOMs) is at
    least FAINT_SEGMENT_PE are expanded DOM by DOM (``thin``). The faint ones, most of the DOMs, are
    sampled as a Poisson point process instead: Poisson(bmax * n) points per segment of n DOMs, each
    on a uniformly drawn DOM (so Poisson(bmax) per DOM, independently) and kept with probability
    bound / bmax, which leaves exactly Poisson(bound) per DOM; only the points are computed."""
    bright = np.flatnonzero(bmax >= FAINT_SEGMENT_PE)
    ev, sen = expand_segments(seg, bright)
    bound = bound_fn(ev, sen)
    n_b, ok = thin(rng, bound)
    ev, sen, bound = ev[ok], sen[ok], bound[ok]
    faint = np.flatnonzero(bmax < FAINT_SEGMENT_PE)
    f_n, f_b = seg["n"][faint], bmax[faint]
    n_pts, some = thin(rng, f_b * f_n)  # Poisson(bmax * n) points per faint segment (where > 0)
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


def segment_bound_terms(seg: dict, resp: DomResponse) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per segment: a lower bound (>= 1 m) of its DOMs' distance from the source (their string
    points' distance minus the DOMs' largest offset from the string line), and the best prefactor and
    smallest k of the DOM classes of its string and band."""
    det = detector()
    d_lo = np.maximum(np.sqrt(seg["d2"]) - det.xy_margin, 1.0)
    at = seg["st"] * det.band_k.shape[1] + seg["band"]  # flat indices: cheaper than 2-d ones
    return d_lo, resp.band_pref.ravel()[at], det.band_k.ravel()[at]


def track_sources(rng, pos, vdir, energy, s_min, s_max, scale, ctx: LightContext | None = None,
                   radiative_b: float | np.ndarray = MUON_LOSS_B):
    """Muon track segments (pos + s vdir, s in [s_min, s_max], t = s/c): per DOM that sees light,
    the PE count, direct Cherenkov time and the Pandel delay's shape and scale (float32 arithmetic).
    ``radiative_b``: the part of the radiative losses emitted as continuous light."""
    det = detector()
    ctx = ctx or light_context()
    light = muon_photons_per_m(energy, radiative_b) * scale
    seg = track_candidates(pos, vdir, band_reach(light, cascade=False))
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

    d_lo, pref, k = segment_bound_terms(seg, ctx.resp)
    bmax = light_c[seg["ev"]] / d_lo * pref * np.exp(-k * d_lo / SIN_C) * BOUND_SLACK
    ev, sen, n_b, bound = sample_counts(rng, seg, bmax, bound_fn)
    d, s_e = _track_geometry(p32, v32, ev, sen)  # the same values as in the bound
    dist = d * np.float32(1.0 / SIN_C)  # photon path from the emission point
    qz = det.z32[sen]
    ez = p32[2][ev] + s_e * v32[2][ev]
    cos_eta = (qz - ez) / dist  # > 0: light from below, into the PMT face
    _, factor, shape, tscale = light_terms(dist, cos_eta, ez, qz, sen, ctx)
    mu = light.astype(np.float32)[ev] * np.float32(DOM_AREA / (2 * np.pi * SIN_C)) / d * factor
    t_geo = (s_e + dist * np.float32(N_GROUP)) * np.float32(1.0 / C_VACUUM)
    return ev, sen, thinned_counts(rng, n_b, mu, bound), t_geo, shape, tscale


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


def cascade_sources(rng, pos, vdir, photons, ctx: LightContext | None = None, reach: np.ndarray | None = None):
    """Point cascades at pos (t = 0) with ``photons`` detectable photons in total, emission peaked
    at the Cherenkov angle around vdir, washed out by scattering with distance (float32).
    ``reach``: the caller's ``band_reach(photons, cascade=True)``, when it has it."""
    det = detector()
    ctx = ctx or light_context()
    seg = sphere_candidates(pos, band_reach(photons, cascade=True) if reach is None else reach)
    p32 = _columns32(pos)
    photons_c = photons * (DOM_AREA / (4 * np.pi))
    photons_c32 = photons_c.astype(np.float32)
    peak_excess = max(CASCADE_NORM - 1.0, 0.0)

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

    d_lo, pref, k = segment_bound_terms(seg, ctx.resp)
    bmax = (photons_c[seg["ev"]] / (d_lo * d_lo) * (1.0 + peak_excess * np.exp(-d_lo * det.min_inv_scat))
            * pref * np.exp(-k * d_lo) * BOUND_SLACK)
    ev, sen, n_b, bound = sample_counts(rng, seg, bmax, bound_fn)
    wx, wy, wz, dist, inv_d = _cascade_geometry(p32, ev, sen)  # the same values as in the bound
    pz = p32[2][ev]
    qz = det.z32[sen]
    vx, vy, vz = (c[ev] for c in _columns32(vdir))
    cos_phi = (wx * vx + wy * vy + wz * vz) * inv_d
    cos_eta = -wz * inv_d  # direction DOM -> source against the PMT axis (0, 0, -1)
    w_dir, factor, shape, tscale = light_terms(dist, cos_eta, pz, qz, sen, ctx)
    x = (cos_phi - np.float32(COS_C)) * np.float32(1.0 / CASCADE_PROFILE_WIDTH)
    ang = 1.0 + w_dir * (np.float32(CASCADE_NORM) * np.exp(np.float32(-0.5) * x * x) - 1.0)
    mu = photons.astype(np.float32)[ev] * np.float32(DOM_AREA / (4 * np.pi)) * inv_d * inv_d * ang * factor
    t_geo = dist * np.float32(N_GROUP / C_VACUUM)
    return ev, sen, thinned_counts(rng, n_b, mu, bound), t_geo, shape, tscale
