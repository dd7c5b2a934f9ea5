"""The typed batch that travels the whole data path, and the flat pulse chunk it is built from.

Every field's shape, dtype and units are documented here, once. Padding is always masked:
no component may let a padded slot change the output for a real pulse (the conformance kit
checks it), unless it declares ``reads_padding``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from icezoo.core.detector import N_SENSORS, PAD_SENSOR  # noqa: F401 (part of the batch's vocabulary)


@dataclass
class Batch:
    """A padded batch of B events with at most L pulses each.

    ====================  ==========  =======  ===========================================================
    field                 shape       dtype    meaning and units
    ====================  ==========  =======  ===========================================================
    features              [B, L, F]   float32  per-pulse features from the FeatureExtractors, in order
    mask                  [B, L]      bool     True for a real pulse, False for padding
    xyzt                  [B, L, 4]   float32  DOM x, y, z in metres (detector frame) and pulse time in ns
                                               relative to the event's earliest *selected* pulse
    sensor_id             [B, L]      int64    0..5159; PAD_SENSOR (5160) in padded slots
    event_features        [B, E]      float32  event-level features (E may be 0), e.g. pulse count,
                                               computed before pulse selection
    n_pulses              [B]         int64    pulses of the event before selection (all of them)
    event_id              [B]         int64    Kaggle event_id
    target                [B, 3]      float32  unit vector pointing to where the neutrino came from,
                                               (cos az sin ze, sin az sin ze, cos ze); None without truth
    truth                 {name: [B]} float32  the truth columns the pipeline's tasks need (icezoo.data.truth
                                               names: energy in GeV, track 0/1, vertex_x in m, ...; NaN
                                               where an event has none); None when it has no task
    ====================  ==========  =======  ===========================================================

    Padded slots of ``features`` and ``xyzt`` hold zeros by convention, but nothing may rely on it.
    With a selection that declares ``sensor_tokens`` a slot is a hit sensor, not a pulse, and
    ``pulses`` holds every pulse of those sensors (:class:`PackedPulses`); None otherwise.
    """

    features: torch.Tensor
    mask: torch.Tensor
    xyzt: torch.Tensor
    sensor_id: torch.Tensor
    event_features: torch.Tensor
    n_pulses: torch.Tensor
    event_id: torch.Tensor
    target: torch.Tensor | None = None
    truth: dict[str, torch.Tensor] | None = None
    pulses: "PackedPulses | None" = None

    @property
    def num_events(self) -> int:
        return int(self.mask.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """Selected (real) pulses per event, [B] int64."""
        return self.mask.sum(dim=1)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Batch":
        """Move every tensor to ``device``; floating tensors also to ``dtype`` when given."""

        def move(t: torch.Tensor | dict | None) -> torch.Tensor | dict | None:
            if t is None:
                return None
            if isinstance(t, dict):
                return {k: move(v) for k, v in t.items()}
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype, non_blocking=True)
            return t.to(device=device, non_blocking=True)

        return Batch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def pin_memory(self) -> "Batch":
        """The batch in page-locked host memory, so that ``to(cuda)`` copies asynchronously (the
        torch DataLoader calls this in its pinning thread when ``pin_memory`` is set)."""
        return Batch(**{f.name: _each(getattr(self, f.name), lambda t: t.pin_memory()) for f in fields(self)})

    def select(self, index: torch.Tensor | slice | list[int]) -> "Batch":
        """The sub-batch of the given events (same padding width)."""
        return Batch(**{f.name: _each(getattr(self, f.name), lambda t: t[index]) for f in fields(self)})

    def with_(self, **changes) -> "Batch":
        return replace(self, **changes)


def _each(value, fn):
    """``fn`` of a tensor field, of every tensor of a dict field (``truth``), None as it is."""
    if value is None:
        return None
    return {k: fn(v) for k, v in value.items()} if isinstance(value, dict) else fn(value)


@dataclass
class PackedPulses:
    """Every pulse of a batch's sensor tokens, flat (no padding): what sensor aggregation reads.

    With a selection that declares ``sensor_tokens`` a Batch's slots are hit sensors: ``mask`` [B, S]
    marks them, ``xyzt`` [B, S, 4] holds the sensor's position (m) and the time of its first pulse
    relative to the event's first pulse (ns), ``sensor_id`` the sensor, ``features`` [B, S, F] the
    features of the sensor's first pulse. This holds all N pulses of those sensors:

    ==========  =======  =======  ===================================================================
    field       shape    dtype    meaning and units
    ==========  =======  =======  ===================================================================
    features    [N, F]   float32  the pipeline's per-pulse features (same extractors, same columns)
    dt          [N]      float32  ns since the first pulse of the pulse's sensor (>= 0)
    charge      [N]      float32  charge in PE (the raw value; features hold the normalised one)
    event       [N]      int64    the pulse's event, 0..B-1
    slot        [N]      int64    the pulse's sensor token, 0..S-1 (a real slot of ``mask``)
    num_events  int               B
    ==========  =======  =======  ===================================================================

    A loader yields each token's pulses contiguous and in time order; nothing may rely on it (a
    segment reduction over ``token(S)`` needs no order). It moves, pins and slices by event the way
    a Batch's tensors do (``to``, ``pin_memory``, ``[index]``), so Batch's methods treat it as one.
    """

    features: torch.Tensor
    dt: torch.Tensor
    charge: torch.Tensor
    event: torch.Tensor
    slot: torch.Tensor
    num_events: int

    TENSORS = ("features", "dt", "charge", "event", "slot")

    @property
    def num_pulses(self) -> int:
        return int(self.event.shape[0])

    def token(self, width: int) -> torch.Tensor:
        """Flat token index ``event * width + slot`` of every pulse, [N] int64 (into a [B * width] grid)."""
        return self.event * width + self.slot

    def is_floating_point(self) -> bool:
        """True: it holds floating tensors, which ``to(..., dtype=...)`` casts (as Batch.to asks a tensor)."""
        return True

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
           non_blocking: bool = False) -> "PackedPulses":
        """On ``device``; the floating tensors also in ``dtype`` when given."""
        def move(t: torch.Tensor) -> torch.Tensor:
            cast = dtype if dtype is not None and t.is_floating_point() else None
            return t.to(device=device, dtype=cast, non_blocking=non_blocking)

        return replace(self, **{name: move(getattr(self, name)) for name in self.TENSORS})

    def pin_memory(self) -> "PackedPulses":
        return replace(self, **{name: getattr(self, name).pin_memory() for name in self.TENSORS})

    def __getitem__(self, index: torch.Tensor | slice | list[int]) -> "PackedPulses":
        """The pulses of the events ``index``, numbered as the sub-batch orders them (Batch.select)."""
        device = self.event.device
        which = torch.arange(self.num_events, device=device)[index].reshape(-1)
        new = torch.full((self.num_events,), -1, dtype=torch.int64, device=device)
        new[which] = torch.arange(len(which), device=device)
        if len(torch.unique(which)) != len(which):
            raise ValueError("PackedPulses: an event selected twice")
        keep = new[self.event] >= 0
        out = {name: getattr(self, name)[keep] for name in self.TENSORS}
        out["event"] = new[out["event"]]
        return PackedPulses(**out, num_events=len(which))


def angles_to_vector(azimuth: torch.Tensor | np.ndarray, zenith: torch.Tensor | np.ndarray):
    """(azimuth, zenith) in radians -> unit vector (cos az sin ze, sin az sin ze, cos ze), last axis 3."""
    lib = torch if isinstance(azimuth, torch.Tensor) else np
    sin_ze = lib.sin(zenith)
    return lib.stack([lib.cos(azimuth) * sin_ze, lib.sin(azimuth) * sin_ze, lib.cos(zenith)], -1)


def vector_to_angles(vector: torch.Tensor | np.ndarray):
    """Any non-zero vector(s) [..., 3] -> (azimuth in [0, 2pi), zenith in [0, pi])."""
    lib = torch if isinstance(vector, torch.Tensor) else np
    x, y, z = vector[..., 0], vector[..., 1], vector[..., 2]
    norm = lib.sqrt(x * x + y * y + z * z)
    azimuth = lib.remainder(lib.arctan2(y, x), 2 * np.pi)
    zenith = lib.arccos(lib.clip(z / norm, -1.0, 1.0))
    return azimuth, zenith


def angular_error(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray):
    """Kaggle metric per event: arccos of the clipped dot product of the two normalised vectors."""
    lib = torch if isinstance(pred, torch.Tensor) else np
    p = pred / lib.linalg.norm(pred, axis=-1, keepdims=True) if lib is np else pred / pred.norm(dim=-1, keepdim=True)
    t = truth / lib.linalg.norm(truth, axis=-1, keepdims=True) if lib is np else truth / truth.norm(dim=-1, keepdim=True)
    return lib.arccos(lib.clip((p * t).sum(-1), -1.0, 1.0))


@dataclass
class PulseChunk:
    """Pulses of several events as flat arrays (CSR layout): what selection and features work on.

    Event ``e`` owns rows ``offsets[e]:offsets[e+1]``, in time order. All arrays are numpy, so
    selection and feature extraction are vectorised over a whole batch file or chunk.

    ``sensor_id`` int16/int64, ``time`` float64 ns (absolute, Kaggle clock), ``charge`` float64 PE,
    ``auxiliary`` bool, ``x, y, z`` float64 metres; ``offsets`` int64 [E+1]; ``event_id`` int64 [E];
    ``n_pulses`` int64 [E] (pulses before any selection); ``azimuth, zenith`` float64 [E] or None.
    Optional per-pulse columns, None unless the source has them (GraphNeT files): ``dom_type`` int16
    (GraphNeT's sensor type code), ``pmt_dir`` float32 [N, 3] (the PMT's unit direction).
    """

    sensor_id: np.ndarray
    time: np.ndarray
    charge: np.ndarray
    auxiliary: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    offsets: np.ndarray
    event_id: np.ndarray
    n_pulses: np.ndarray
    azimuth: np.ndarray | None = None
    zenith: np.ndarray | None = None
    #: the sensor id padded slots get: PAD_SENSOR for IceCube-86, the detector's sensor count elsewhere
    pad_sensor: int = PAD_SENSOR
    dom_type: np.ndarray | None = None
    pmt_dir: np.ndarray | None = None

    PULSE_FIELDS = ("sensor_id", "time", "charge", "auxiliary", "x", "y", "z")
    #: per-pulse columns only some sources have (None otherwise): cut with the pulses when present
    OPTIONAL_FIELDS = ("dom_type", "pmt_dir")

    @property
    def num_events(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def event_index(self) -> np.ndarray:
        """For every pulse, the index (0..E-1) of its event."""
        return np.repeat(np.arange(self.num_events), self.lengths)

    def column(self, name: str, rows: np.ndarray) -> np.ndarray:
        """``getattr(self, name)[rows]``; a loader's lazy chunk gathers only those rows."""
        return getattr(self, name)[rows]

    def take(self, rows: np.ndarray, offsets: np.ndarray) -> "PulseChunk":
        """A chunk of the same events keeping only ``rows`` (grouped by event, new ``offsets``)."""
        extra = {f: None if getattr(self, f) is None else getattr(self, f)[rows] for f in self.OPTIONAL_FIELDS}
        return replace(self, offsets=offsets, **{f: getattr(self, f)[rows] for f in self.PULSE_FIELDS}, **extra)

    def events(self, which: np.ndarray) -> "PulseChunk":
        """The sub-chunk of the events ``which`` (indices into this chunk), in that order."""
        which = np.asarray(which, dtype=np.int64)
        lengths = self.lengths[which]
        offsets = np.zeros(len(which) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        starts = self.offsets[which]
        rows = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        out = self.take(rows, offsets)
        return replace(
            out,
            event_id=self.event_id[which],
            n_pulses=self.n_pulses[which],
            azimuth=None if self.azimuth is None else self.azimuth[which],
            zenith=None if self.zenith is None else self.zenith[which],
        )
