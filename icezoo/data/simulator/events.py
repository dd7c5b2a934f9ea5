"""Assembly: one chunk of candidate events of one type from truth to triggered pulses in the Kaggle
order, and ``simulate_events``, which fills the per-(type, cos-zenith bin) quotas exactly."""

from __future__ import annotations

import numpy as np

from icezoo.core.detector import C_VACUUM, N_SENSORS
from icezoo.core.errors import IcezooError
from icezoo.core.memory import keep_freed_memory
from icezoo.data.simulator.candidates import draw_truth, draw_vertices
from icezoo.data.simulator.config import SimulatorConfig
from icezoo.data.simulator.constants import (
    CASCADE_M_PER_GEV, CHUNK_CANDIDATES, EVENT_TYPES, HADRONIC_FACTOR, JITTER_NS, MUON_LOSS_B,
    MUON_MIN_ENTRY_ENERGY, MUON_PHOTONS_PER_M, NC_FRACTION_CASCADES, PE_SAMPLE_CAP, READOUT_AFTER_NS,
    READOUT_BEFORE_NS, SMT3_HITS, SMT_HITS, STOCH_RADIUS, TRIGGER_TIME_NS, ZENITH_BINS,
)
from icezoo.data.simulator.detector import band_reach, detector
from icezoo.data.simulator.keys import TIME_OFFSET, T_BITS, merge_sorted, pack_keys, run_starts, unpack_keys
from icezoo.data.simulator.kinematics import (
    deflect, entering_muons, kinematic_angles, muon_energy_after, muon_range, perpendicular_basis, sphere_exit,
    stochastic_losses,
)
from icezoo.data.simulator.light import LightContext, cascade_sources, light_context, track_sources
from icezoo.data.simulator.readout import afterpulse_times, noise_hits, quantise, readout_pulses, spe_charges, trigger


def _loss_sources(rng, cfg, ctx, owner, s_loss, e_loss, pos, vdir):
    """The stochastic losses as EM cascades along their muons (time s / c); losses too faint to reach
    any string are skipped (the same speed cut as every source)."""
    det = detector()
    photons = e_loss * CASCADE_M_PER_GEV * MUON_PHOTONS_PER_M * cfg.yield_scale
    p = pos[owner] + s_loss[:, None] * vdir[owner]
    reach = band_reach(photons, cascade=True)
    outside = np.maximum(np.hypot(p[:, 0], p[:, 1]) - det.string_r_max, np.abs(p[:, 2]) - det.dom_z_max)
    near = np.flatnonzero(outside < reach.max(1))
    ev, sen, n_pe, t_geo, shape, scale = cascade_sources(rng, p[near], vdir[owner[near]], photons[near], ctx,
                                                          reach[near])
    t_geo = t_geo + (s_loss[near][ev] * (1.0 / C_VACUUM)).astype(np.float32)
    return owner[near][ev], sen, n_pe, t_geo, shape, scale


def may_trigger(ev: np.ndarray, sen: np.ndarray, m: int, deepcore: bool) -> np.ndarray:
    """Per event of ``m``: whether its hit (event, DOM) pairs can make a trigger at all, whatever the
    PE times. The triggers count DOMs with an HLC launch, and HLC needs a hit DOM within 2 on the same
    string, so: at least SMT_HITS such DOMs, or (DeepCore) SMT3_HITS of them on fiducial DOMs."""
    pair = np.sort(ev.astype(np.int64) * N_SENSORS + sen)  # unique below (np.unique hashes: ~10x slower)
    pair = pair[np.flatnonzero(run_starts(pair))]
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
                   ctx: LightContext) -> tuple[dict, tuple[np.ndarray, ...]]:
    """Truth of ``len(zbin)`` candidate events of one type and their light sources: the lepton and
    cascade from the neutrino (kinematics), the muon's track and stochastic losses; returns the truth
    columns and the sources concatenated (event, sensor, expected PEs, geometric time, delay shape, scale)."""
    m = len(zbin)
    az, ze, u, energy = draw_truth(rng, cfg, m, zbin)
    nan = np.full(m, np.nan)
    y, track_len, e_mu, e_casc = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    opening = np.zeros(m)
    sources = []
    kin = cfg.kinematics
    if kind in (0, 1):
        if kind == 0 and kin:
            energy, y = entering_muons(rng, cfg, m)
        else:
            y = rng.random(m) ** 2 if kind == 1 else nan  # inelasticity, mean 1/3
        if kin:
            opening = kinematic_angles(rng, energy)
            phi = rng.uniform(0.0, 2 * np.pi, m)
            mdir = deflect(-u, opening, phi)  # the muon's direction of travel
        else:
            phi = np.zeros(m)
            mdir = -u
        e_mu = (1.0 - y) * energy if (kin or kind == 1) else energy.copy()
        if kind == 0:  # through-going muon: random point on a disk perpendicular to the muon
            e1, e2 = perpendicular_basis(mdir)
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
            pos = draw_vertices(rng, cfg, m)
            s0, s_min = np.zeros(m), np.zeros(m)
            s_hi = np.nan_to_num(sphere_exit(pos, mdir, STOCH_RADIUS)[1], nan=0.0)
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
        trk = track_sources(rng, pos[idx], mdir[idx], e_mu[idx], s_min[idx], s_stop, cfg.yield_scale, ctx, radiative_b)
        sources.append((idx[trk[0]], *trk[1:]))
        if kind == 1:
            e_casc = HADRONIC_FACTOR * y * energy
            cdir = deflect(-u, kinematic_angles(rng, energy), phi + np.pi) if kin else -u
            photons = e_casc * CASCADE_M_PER_GEV * MUON_PHOTONS_PER_M * cfg.yield_scale
            sources.append(cascade_sources(rng, pos, cdir, photons, ctx))
    else:  # cascade: nu_e / nu_tau CC (all energy visible) or NC (the hadronic part only)
        pos = draw_vertices(rng, cfg, m)
        if kin:
            y = rng.random(m) ** 2
            nc = rng.random(m) < NC_FRACTION_CASCADES
            e_casc = np.where(nc, 0.0, (1.0 - y) * energy) + HADRONIC_FACTOR * y * energy
            opening = kinematic_angles(rng, energy)
            cdir = deflect(-u, opening, rng.uniform(0.0, 2 * np.pi, m))
        else:  # all energy in an EM-equivalent shower along the neutrino
            e_casc, cdir = energy.copy(), -u
        photons = e_casc * CASCADE_M_PER_GEV * MUON_PHOTONS_PER_M * cfg.yield_scale
        sources.append(cascade_sources(rng, pos, cdir, photons, ctx))
    truth = {"az": az, "ze": ze, "energy": energy, "pos": pos, "y": y, "track_len": track_len, "e_mu": e_mu,
             "e_casc": e_casc, "opening": opening}
    return truth, tuple(np.concatenate([s_[k] for s_ in sources]) for k in range(6))


def sorted_pe_keys(ev, sen, rep, t, weight):
    """The PEs (row ``rep``, time ``t``) once in (event, sensor, time) order, ties in row order (both
    passes keep it): their packed keys and weights. Equal to a stable argsort of the packed keys
    (PEs of one row with equal times are interchangeable), but a plain sort of codes that carry the
    row: (rank of the row's (event, sensor) pair, time, the row's rank within its pair), 3-4x cheaper."""
    pk = ev.astype(np.int64) * N_SENSORS + sen
    ro = np.argsort(pk, kind="stable")
    spk = pk[ro]
    new = run_starts(spk)
    first = np.flatnonzero(new)
    pair_of = np.cumsum(new) - 1
    sub = np.arange(len(spk)) - first[pair_of]
    r_bits = int(sub.max()).bit_length() if len(sub) else 0
    if len(first).bit_length() + T_BITS + r_bits > 63:  # cannot happen at the chunk sizes used
        key = pack_keys(ev, sen, 0)[rep] + t
        order = np.argsort(key, kind="stable")
        return key[order], weight[rep[order]]
    code = np.empty(len(spk), dtype=np.int64)
    code[ro] = (pair_of << (T_BITS + r_bits)) | sub
    value = code[rep] + ((t + TIME_OFFSET) << r_bits)
    value.sort()
    p = value >> (T_BITS + r_bits)
    row = ro[first[p] + (value & ((1 << r_bits) - 1))]
    key = (spk[first][p] << T_BITS) + ((value >> r_bits) & ((1 << T_BITS) - 1))
    return key, weight[row]


def _photo_electrons(rng: np.random.Generator, cfg: SimulatorConfig, m: int, sources: tuple[np.ndarray, ...]):
    """Photo-electrons from the sources, sorted by (event, sensor, time): packed keys, charges and
    per-PE weights (a capped sample carries the rest of its source's charge)."""
    ev, sen, n_pe, t_geo, shape, tscale = sources
    # photo-electrons (Poisson counts from the sources): capped samples carry the rest of the charge;
    # events that cannot trigger are dropped here, before any PE is drawn (exact: see may_trigger)
    hit = np.flatnonzero(n_pe > 0)
    hit = hit[may_trigger(ev[hit], sen[hit], m, cfg.deepcore_trigger)[ev[hit]]]
    ev, sen, t_geo, shape, tscale, n_pe = ev[hit], sen[hit], t_geo[hit], shape[hit], tscale[hit], n_pe[hit]
    n_s = np.minimum(n_pe, PE_SAMPLE_CAP)
    weight = (n_pe / n_s).astype(np.float32)
    rep = np.repeat(np.arange(len(n_s)), n_s)
    n_ph = len(rep)
    t = t_geo[rep] + rng.standard_gamma(shape[rep], dtype=np.float32) * tscale[rep]
    t += rng.standard_normal(n_ph, dtype=np.float32) * np.float32(JITTER_NS)
    key, w_ph = sorted_pe_keys(ev, sen, rep, np.rint(t).astype(np.int64), weight)
    q = spe_charges(rng, n_ph) * w_ph

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
    a_key = pack_keys(a_ev, a_sen, a_t)  # still sorted: the event remap is increasing
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
    e_key = pack_keys(e_ev, e_sen, e_t)
    e_tag = np.concatenate([np.full(len(e[0]), e[3], np.int8) for e in extra])
    o = np.argsort(e_key)
    e_key, e_tag, e_ev, e_sen, e_t = e_key[o], e_tag[o], e_ev[o], e_sen[o], e_t[o]
    a_key, a_q, a_tag, a_ev, a_sen, a_t = merge_sorted(
        a_key, e_key, (a_q, spe_charges(rng, len(e_key))), (np.zeros(len(a_key), np.int8), e_tag),
        (a_ev, e_ev), (a_sen, e_sen), (a_t, e_t))
    final = readout_pulses(a_key, a_q, a_tag, cfg.launch_readout, unpacked=(a_ev, a_sen, a_t))
    a_ev, a_sen, a_t, a_q, a_tag, aux = final["ev"], final["sen"], final["t"], final["q"], final["tag"], ~final["hlc"]

    return a_ev, a_sen, a_t, a_q, a_tag, aux


def _kaggle_order(cfg: SimulatorConfig, pulses: tuple[np.ndarray, ...], n_trig: int):
    """Pulses in event, then time (then sensor) order, at most ``max_pulses`` per event: the pulse
    columns and the per-event counts."""
    a_ev, a_sen, a_t, a_q, a_tag, aux = pulses
    # event order, then time (then sensor): the Kaggle order; Kaggle clock
    # one stable argsort of a composite key (event: 11+ bits, time: 24 bits, sensor: 13 bits)
    o = np.argsort((a_ev.astype(np.int64) << (T_BITS + 13)) | ((a_t + TIME_OFFSET) << 13) | a_sen, kind="stable")
    a_ev, a_sen, a_t, a_q, a_tag, aux = a_ev[o], a_sen[o], a_t[o], a_q[o], a_tag[o], aux[o]
    counts = np.bincount(a_ev, minlength=n_trig)
    if cfg.max_pulses is not None and len(a_ev):
        starts_e = np.cumsum(counts) - counts
        rank = np.arange(len(a_ev)) - starts_e[a_ev]
        sel = np.flatnonzero(rank < cfg.max_pulses)
        a_ev, a_sen, a_t, a_q, a_tag, aux = a_ev[sel], a_sen[sel], a_t[sel], a_q[sel], a_tag[sel], aux[sel]
        counts = np.bincount(a_ev, minlength=n_trig)
    return (a_ev, a_sen, a_t, a_q, a_tag, aux), counts


def simulate_chunk(rng: np.random.Generator, cfg: SimulatorConfig, kind: int, zbin: np.ndarray,
                    ctx: LightContext | None = None) -> dict:
    """Simulate candidate events of one type (one per entry of ``zbin``, their cos-zenith bins);
    return the triggered ones (CSR pulses + truth, ``candidate`` = their index)."""
    ctx = ctx or light_context(cfg)
    m = len(zbin)
    truth, sources = _light_sources(rng, cfg, kind, zbin, ctx)
    need = SMT3_HITS if cfg.deepcore_trigger else SMT_HITS
    key, q, w_ph = _photo_electrons(rng, cfg, m, sources)

    # trigger on the physics launches (legacy: pulses)
    ev_ph, sen_ph, t_ph = unpack_keys(key)
    pulses = readout_pulses(key, q, None, cfg.launch_readout, need_doms=need, units_only=True,
                      unpacked=(ev_ph, sen_ph, t_ph))
    trig_ev, t_start, t_end, bits = trigger(pulses, cfg.deepcore_trigger)
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
        "charge": quantise(a_q, soft=cfg.launch_readout),
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
    ctx = light_context(cfg, seed)  # the per-DOM efficiencies depend on the dataset seed only
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
            chunk = simulate_chunk(rng, cfg, kind, zbin, ctx)
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
