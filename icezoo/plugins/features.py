"""Per-pulse and per-event feature extractors (vectorised over a PulseChunk).

Pulse-level extractors see the selected pulses (``chunk``); event-level ones (``event_level``)
return one row per event and may read every pulse of the event (``chunk_all``, before selection).
Units and formulas: docs/data.md.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import Field

from icezoo.core import FeatureExtractor, PulseChunk
from icezoo.core.detector import DETECTOR_MAX, DETECTOR_MIN, N_SENSORS, PAD_SENSOR, SURFACE_Z
from icezoo.core.errors import IcezooError

#: quantum efficiency of the high-QE DOMs relative to a standard DOM
HIGH_QE = 1.35


def _per_event_first(values: np.ndarray, chunk: PulseChunk) -> np.ndarray:
    """``values`` at each event's first row (0 for an empty event)."""
    out = np.zeros(chunk.num_events, dtype=np.float64)
    nonempty = chunk.lengths > 0
    out[nonempty] = values[chunk.offsets[:-1][nonempty]]
    return out


def _per_event_reduce(ufunc, values: np.ndarray, chunk: PulseChunk, empty: float = 0.0) -> np.ndarray:
    """``ufunc.reduceat`` over the events of ``chunk`` (``empty`` for events without pulses)."""
    out = np.full(chunk.num_events, empty, dtype=np.float64)
    nonempty = chunk.lengths > 0
    if nonempty.any():
        out[nonempty] = ufunc.reduceat(values, chunk.offsets[:-1][nonempty])
    return out


def _sensor_tables(chunk: PulseChunk):
    """(intp sensor ids, (x, y, z) columns indexed by sensor_id) when the chunk carries the geometry
    (a loader's LazyChunk, every id valid), else None. A per-sensor quantity is then computed once
    per sensor and gathered, instead of per pulse: the same values, without per-pulse positions."""
    xyz = getattr(chunk, "sensor_xyz", None)
    return None if xyz is None else (chunk.sensor_index, xyz)


class KaggleNorm(FeatureExtractor):
    """x,y,z/500, (time-1e4)/3e4, log10(charge)/3, auxiliary: the normalisation of EXP_08/EXP_13 on."""

    name = "kaggle_norm"
    columns = ("x", "y", "z", "time", "charge", "auxiliary")

    class Config(FeatureExtractor.Config):
        positions: bool = Field(True, description="include x, y, z; false: time, charge, auxiliary only "
                                                  "(EXP_27/32: coordinates kept apart, seen by the model via xyzt)")

    def feature_names(self) -> tuple[str, ...]:
        return self.columns if self.config.positions else self.columns[3:]

    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        # built column by column ([6, N] contiguous, returned as its [N, 6] view): much faster than
        # strided writes; the loader pads from this layout without a full transpose
        out = np.empty((6, len(chunk.time)), dtype=np.float32)
        tables = _sensor_tables(chunk)
        if tables is not None:
            idx, xyz = tables
            for i, g in enumerate(xyz):
                np.take((g * (1.0 / 500.0)).astype(np.float32), idx, out=out[i])
        else:
            for i, v in enumerate((chunk.x, chunk.y, chunk.z)):
                np.multiply(v, 1.0 / 500.0, out=out[i], casting="unsafe")
        np.subtract(chunk.time, 1.0e4, out=out[3], casting="unsafe")
        out[3] *= 1.0 / 3.0e4
        q = chunk.charge.astype(np.float32)
        np.maximum(q, 1e-3, out=q)
        np.log10(q, out=out[4])
        out[4] *= 1.0 / 3.0
        out[5] = chunk.auxiliary
        out[5] -= 0.5
        return out.T if self.config.positions else out[3:].T


def detector_bounds() -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of the DOM x, y, z of IceCube-86 (metres; :data:`icezoo.core.detector.DETECTOR_MIN`/``MAX``)."""
    return np.array(DETECTOR_MIN), np.array(DETECTOR_MAX)


class MinMaxNorm(FeatureExtractor):
    """x,y,z min-max scaled to [0,1] over the detector, time to [0,1] within the event (EXP_03-05).

    Columns: x, y, z in [0, 1] (IceCube-86 bounds), time = (t - t_min) / (t_max - t_min) over the
    event's selected pulses (0 when they share one time), charge raw PE (``charge="raw"``, EXP_03/04)
    or log10(PE) (``charge="log10"``, EXP_05), auxiliary 0/1.
    """

    name = "minmax_norm"
    columns = ("x", "y", "z", "time", "charge", "auxiliary")

    class Config(FeatureExtractor.Config):
        charge: Literal["raw", "log10"] = "log10"

    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        lo, hi = detector_bounds()
        scale = 1.0 / (hi - lo)
        out = np.empty((6, len(chunk.time)), dtype=np.float32)
        for i, v in enumerate((chunk.x, chunk.y, chunk.z)):
            np.multiply(v - lo[i], scale[i], out=out[i], casting="unsafe")
        tmin = _per_event_reduce(np.minimum, chunk.time, chunk)
        tmax = _per_event_reduce(np.maximum, chunk.time, chunk)
        span = tmax - tmin
        inv = np.divide(1.0, span, out=np.zeros_like(span), where=span > 0)
        out[3] = (chunk.time - np.repeat(tmin, chunk.lengths)) * np.repeat(inv, chunk.lengths)
        out[4] = chunk.charge if self.config.charge == "raw" else np.log10(np.maximum(chunk.charge, 1e-3))
        out[5] = chunk.auxiliary
        return out.T


class TimeWeight(FeatureExtractor):
    """Time weight exp(-(t - t_first) / tau) of each pulse: early (direct) light weighs more (EXP_03).

    ``t_first`` is the event's first selected pulse, ``tau`` in ns (default 3000). The log names a
    "weighted feature based on time" without a formula; this is icezoo's reading of it, in (0, 1].
    """

    name = "time_weight"
    columns = ("time_weight",)

    class Config(FeatureExtractor.Config):
        tau: float = Field(3000.0, gt=0.0, description="decay time in ns")

    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        t0 = np.repeat(_per_event_first(chunk.time, chunk), chunk.lengths)
        return np.exp((t0 - chunk.time) / self.config.tau).astype(np.float32)[:, None]


def qe_table(n_sensors: int = N_SENSORS) -> np.ndarray:
    """Quantum efficiency per sensor_id: 1.35 on the lower 50 DOMs of DeepCore strings 79-86, else 1.0."""
    sid = np.arange(n_sensors)
    string, dom = sid // 60 + 1, sid % 60 + 1
    return np.where((string >= 79) & (dom > 10), HIGH_QE, 1.0)


_QE = qe_table()


class QE(FeatureExtractor):
    """DOM quantum efficiency: 1.35 on the high-QE DeepCore DOMs, 1.0 elsewhere (EXP_13)."""

    name = "qe"
    columns = ("qe",)
    needs = ("icecube86_sensor_id",)  # a table over IceCube-86's 5,160 DOMs

    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        table = _QE.astype(np.float32)
        tables = _sensor_tables(chunk)
        if tables is not None:  # ids are valid geometry rows: 1.0 past the QE table
            idx, xyz = tables
            ext = np.ones(max(len(table), len(xyz[0])), dtype=np.float32)
            ext[:len(table)] = table
            return np.take(ext, idx)[:, None]
        sid = chunk.sensor_id.astype(np.int64)
        return np.where(sid < len(table), table[np.minimum(sid, len(table) - 1)], np.float32(1.0))[:, None]


#: GraphNeT's dom_type codes of the one-hot columns of ``sensor_type`` (IceCube DOM, PDOM, D-Egg, mDOM)
SENSOR_CODES = (20, 110, 120, 130)
#: single-PMT sensors whose PMT faces down (-z): the direction when the source gives none
DOWN_FACING = (20, 110)


class SensorType(FeatureExtractor):
    """Sensor type one-hot (IceCube DOM, PDOM, D-Egg, mDOM) and the PMT's unit direction (IceCube Upgrade).

    From the source's per-pulse ``dom_type`` and ``pmt_dir_x/y/z`` (GraphNeT files). Without them the
    data is IceCube-86 (the Kaggle layout): every sensor an IceCube DOM, its PMT facing down, (0, 0, -1),
    as without ``pmt_dir`` (or with a zero or NaN one) for IceCube DOMs and PDOMs. A code outside the four
    gets an all-zero one-hot, a missing direction of any other sensor zeros. Data that is not IceCube-86 and lacks
    the columns is refused before training (``needs``).
    """

    name = "sensor_type"
    columns = ("is_icecube_dom", "is_pdom", "is_degg", "is_mdom", "pmt_dir_x", "pmt_dir_y", "pmt_dir_z")
    needs = ("sensor_type", "pmt_direction")  # IceCube-86 provides both (IceCube DOMs, facing down)

    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        n = int(chunk.offsets[-1])
        code = chunk.dom_type
        if code is None:
            if chunk.pad_sensor != PAD_SENSOR:
                raise IcezooError("features sensor_type: the data has sensors beyond IceCube-86 but no dom_type")
            code = np.full(n, SENSOR_CODES[0], dtype=np.int16)
        out = np.zeros((len(self.columns), n), dtype=np.float32)  # [7, N], returned as its [N, 7] view
        for i, c in enumerate(SENSOR_CODES):
            np.equal(code, c, out=out[i], casting="unsafe")
        down = np.isin(code, DOWN_FACING)
        if chunk.pmt_dir is not None:
            out[4:] = chunk.pmt_dir.T
            unknown = ~np.isfinite(out[4:]).all(axis=0) | ~out[4:].any(axis=0)  # NaN or zero: none given
            out[4:, unknown] = 0.0
            down &= unknown
        out[6, down] = -1.0
        return out.T


#: fixed scales of the ice features (metres): the values land in ~[0.05, 1]
SCATTERING_SCALE = 100.0
ABSORPTION_SCALE = 300.0


@lru_cache(maxsize=1)
def ice_table() -> np.ndarray:
    """The shipped SPICE table as [depth, scattering_len, absorption_len] rows (metres), by depth."""
    import csv

    from icezoo.resources import ice_table_csv

    with open(ice_table_csv()) as fh:
        ice = np.array([[float(r["depth"]), float(r["scattering_len"]), float(r["absorption_len"])]
                        for r in csv.DictReader(fh)])
    return ice[np.argsort(ice[:, 0])]


def ice_at_z(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scattering, absorption) length in metres at detector height ``z`` (linear in depth, clamped at the ends)."""
    ice = ice_table()
    depth = SURFACE_Z - np.asarray(z, dtype=np.float64)
    return np.interp(depth, ice[:, 0], ice[:, 1]), np.interp(depth, ice[:, 0], ice[:, 2])


class IceProperties(FeatureExtractor):
    """Ice scattering (and absorption) length at the DOM's depth, scaled (EXP_13; absorption EXP_19).

    Depth = 1948.07 m - z; lengths interpolated from the SPICE table shipped with icezoo;
    columns scattering / 100 m and, with ``absorption = true``, absorption / 300 m.
    """

    name = "ice_properties"

    class Config(FeatureExtractor.Config):
        absorption: bool = False

    def feature_names(self) -> tuple[str, ...]:
        return ("scattering", "absorption") if self.config.absorption else ("scattering",)

    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        # interpolate once per sensor (z of each sensor_id as found in the chunk), then gather per pulse
        tables = _sensor_tables(chunk)
        if tables is not None:  # the geometry's z of every sensor: interpolate per sensor, gather per pulse
            idx, xyz = tables
            out = np.empty((2 if self.config.absorption else 1, len(idx)), dtype=np.float32)
            scat, absorp = ice_at_z(xyz[2])
            np.take((scat / SCATTERING_SCALE).astype(np.float32), idx, out=out[0])
            if self.config.absorption:
                np.take((absorp / ABSORPTION_SCALE).astype(np.float32), idx, out=out[1])
            return out.T
        sid = chunk.sensor_id.astype(np.int64)
        out = np.empty((2 if self.config.absorption else 1, len(sid)), dtype=np.float32)
        if len(sid) == 0:
            return out.T
        z_of = np.zeros(int(sid.max()) + 1)
        z_of[sid] = chunk.z
        scat, absorp = ice_at_z(z_of)
        out[0] = (scat / SCATTERING_SCALE).astype(np.float32)[sid]
        if self.config.absorption:
            out[1] = (absorp / ABSORPTION_SCALE).astype(np.float32)[sid]
        return out.T


class Rank(FeatureExtractor):
    """Position of the pulse in time within the event's selected pulses, divided by ``scale`` (EXP_37)."""

    name = "rank"
    columns = ("rank",)

    class Config(FeatureExtractor.Config):
        scale: float = Field(128.0, gt=0.0)

    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        rank = np.arange(len(chunk.time)) - np.repeat(chunk.offsets[:-1], chunk.lengths)
        return (rank / self.config.scale).astype(np.float32)[:, None]


class CenterOfGravity(FeatureExtractor):
    """Charge-weighted centre of gravity of all the event's pulses, x,y,z / 500 m (event level, EXP_36).

    Computed over every pulse (before selection), so it keeps the information truncation drops.
    """

    name = "center_of_gravity"
    columns = ("cog_x", "cog_y", "cog_z")
    properties = frozenset({"event_level"})

    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        c = chunk_all
        q = np.maximum(c.charge, 0.0)
        qsum = _per_event_reduce(np.add, q, c)
        inv = np.divide(1.0, qsum, out=np.zeros_like(qsum), where=qsum > 0)
        out = np.empty((c.num_events, 3), dtype=np.float32)
        for i, v in enumerate((c.x, c.y, c.z)):
            out[:, i] = _per_event_reduce(np.add, q * v, c) * inv / 500.0
        return out


class PulseCount(FeatureExtractor):
    """log10(pulses) / 3 and log10(1 + auxiliary=False pulses) / 3 of the whole event (event level)."""

    name = "pulse_count"
    columns = ("log_n_pulses", "log_n_hlc")
    properties = frozenset({"event_level"})

    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        c = chunk_all
        n_hlc = _per_event_reduce(np.add, (~c.auxiliary).astype(np.float64), c)
        out = np.empty((c.num_events, 2), dtype=np.float32)
        out[:, 0] = np.log10(np.maximum(c.lengths, 1)) / 3.0
        out[:, 1] = np.log10(1.0 + n_hlc) / 3.0
        return out


def graph_homophily(chunk: PulseChunk, k: int = 8, space: str = "xyz") -> np.ndarray:
    """Per event, the homophily of x, y, z and t on the kNN graph of its pulses, [E, 4] float64.

    The same graph and definition as the graph backbones (:func:`icezoo.nn.graph.knn_graph` and
    :func:`icezoo.nn.graph.homophily`): each pulse's ``k`` nearest other pulses in xyz (or xyzt,
    c_ice t), ties broken by time; the fraction of edges joining pulses with equal x (same string),
    y, z (same depth) or t. Events are padded in blocks of similar length (no loop per event).
    """
    import torch

    from icezoo.nn.graph import homophily, knn_graph, knn_space

    n_events = chunk.num_events
    out = np.zeros((n_events, 4), dtype=np.float64)
    lengths = chunk.lengths
    if n_events == 0 or lengths.max(initial=0) == 0:
        return out
    x, y, z, t = chunk.x, chunk.y, chunk.z, chunk.time
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < n_events:
        # events sorted by length: at most 256 per block, and at most ~2^21 pulse pairs
        widest = int(lengths[order[min(start + 255, n_events - 1)]])
        block = max(1, min(256, n_events - start, (1 << 21) // max(widest * widest, 1)))
        events = order[start:start + block]
        width = int(lengths[events].max())
        start += block
        if width == 0:
            continue
        slots = np.arange(width)
        real = slots[None, :] < lengths[events][:, None]
        rows = np.where(real, chunk.offsets[events][:, None] + slots[None, :], 0)
        t0 = t[chunk.offsets[events]][:, None] if len(t) else 0.0
        xyzt = np.stack([x[rows], y[rows], z[rows], t[rows] - t0], axis=-1).astype(np.float32)
        xyzt[~real] = 0.0
        pos_t, mask_t = torch.from_numpy(xyzt), torch.from_numpy(real)
        index, valid = knn_graph(knn_space(pos_t, space), mask_t, k, time=pos_t[..., 3])
        out[events] = homophily(pos_t, mask_t, index, valid).numpy()
    return out


class Homophily(FeatureExtractor):
    """Homophily of x, y, z, t on the event's kNN graph (EXP_30), as GraphNeT computes it; per pulse or per event.

    Columns homophily_x, _y, _z, _t: the fraction of the graph's edges (``k`` nearest other selected
    pulses in xyz or xyzt) that join pulses with equal x, y, z or t. ``level = "pulse"`` repeats the
    event's values on each of its pulses (EXP_30's "homophily as input features"); ``"event"`` gives
    one row per event (appended after pooling).
    """

    name = "homophily"
    columns = ("homophily_x", "homophily_y", "homophily_z", "homophily_t")

    class Config(FeatureExtractor.Config):
        k: int = Field(8, gt=0, description="neighbours per pulse")
        space: Literal["xyz", "xyzt"] = "xyz"
        level: Literal["pulse", "event"] = "pulse"

    @classmethod
    def declared_properties(cls, config) -> frozenset[str]:
        return frozenset({"event_level"}) if config.level == "event" else frozenset()

    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        h = graph_homophily(chunk, self.config.k, self.config.space).astype(np.float32)
        return h if self.config.level == "event" else np.repeat(h, chunk.lengths, axis=0)


class GlobalVariables(FeatureExtractor):
    """GraphNeT's global variables as event features (DynEdge's add_global_variables_after_pooling; the 1st place's TITO).

    One row per event: the mean of the selected pulses' kaggle_norm features (x, y, z / 500,
    (t - 1e4) / 3e4, log10(q) / 3, auxiliary - 0.5), the homophily of x, y, z, t on the kNN graph
    (``k``, ``space``; see ``homophily``) and log10 of the selected pulse count: 11 columns, the
    nb_inputs + 5 of GraphNeT for its 6 Kaggle inputs. The graph backbones compute the same
    variables of their own inputs in the model (``global_variables = true``).
    """

    name = "global_variables"
    columns = tuple(f"mean_{c}" for c in KaggleNorm.columns) + Homophily.columns + ("log10_n_selected",)
    properties = frozenset({"event_level"})

    class Config(FeatureExtractor.Config):
        k: int = Field(8, gt=0, description="neighbours per pulse of the homophily graph")
        space: Literal["xyz", "xyzt"] = "xyz"

    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        lengths = chunk.lengths
        norm = np.ascontiguousarray(KaggleNorm(KaggleNorm.Config()).extract(chunk, chunk).T, dtype=np.float64)  # [6, N]
        inv = 1.0 / np.maximum(lengths, 1)
        means = np.stack([_per_event_reduce(np.add, col, chunk) * inv for col in norm], axis=1)
        h = graph_homophily(chunk, self.config.k, self.config.space)
        count = np.log10(np.maximum(lengths, 1))[:, None]
        return np.concatenate([means, h, count], axis=1).astype(np.float32)
