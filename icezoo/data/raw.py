"""A validated batch (a Kaggle batch file, or an event chunk of any other source) in memory: flat
numpy columns in event order (:class:`RawFile`) and lazy views of some of its events
(:class:`LazyChunk`), whatever format it was read from.
"""

from __future__ import annotations

import numpy as np

from icezoo.core.batch import PAD_SENSOR, PulseChunk


class RawFile:
    """One validated batch (a batch file, or an event chunk of another format) as flat numpy columns in
    event order, plus its events' truth and the DOM table (``geo``: x, y, z columns indexed by sensor id).

    ``offsets`` [E+1] delimit the events (meta order); :meth:`gather` builds the PulseChunk of any
    subset of events (positions looked up from the geometry then, so a loader only pays for the
    events it uses).
    """

    __slots__ = ("path", "sensor_id", "time", "charge", "auxiliary", "offsets", "event_id", "azimuth", "zenith", "geo",
                 "pad_sensor", "truth", "dom_type", "pmt_dir")

    def __init__(self, **kw):
        #: the sensor id of padded slots (the detector's sensor count); ``truth``: truth columns beyond
        #: the direction ({name: [E] array}, only those the source has), or None
        #: ``dom_type``, ``pmt_dir``: the optional per-pulse columns (see PulseChunk), None when absent
        self.pad_sensor, self.truth, self.dom_type, self.pmt_dir = PAD_SENSOR, None, None, None
        for k, v in kw.items():
            setattr(self, k, v)

    @property
    def num_events(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_pulses(self) -> np.ndarray:
        return np.diff(self.offsets)

    def gather_lazy(self, events: np.ndarray) -> "LazyChunk":
        """The :class:`LazyChunk` of ``events`` (indices into this file's events, any order): the same
        fields as :meth:`gather`, each pulse column gathered only when something reads it."""
        ev = np.asarray(events, dtype=np.int64)
        starts = self.offsets[ev]
        lengths = self.offsets[ev + 1] - starts
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return LazyChunk(self, offsets, shift=starts - offsets[:-1], event_id=self.event_id[ev], n_pulses=lengths,
                         pad_sensor=self.pad_sensor,
                         azimuth=None if self.azimuth is None else self.azimuth[ev],
                         zenith=None if self.zenith is None else self.zenith[ev])

    def gather(self, events: np.ndarray | None = None) -> PulseChunk:
        """The PulseChunk of ``events`` (indices into this file's events, any order; None = all)."""
        if events is None:
            rows, lengths = slice(None), self.n_pulses
            ev = slice(None)
        elif len(events) and events[-1] - events[0] + 1 == len(events) and (np.diff(events) == 1).all():
            a, b = int(events[0]), int(events[-1]) + 1  # a contiguous run of events: views, no gather
            rows, ev = slice(int(self.offsets[a]), int(self.offsets[b])), slice(a, b)
            lengths = self.offsets[a + 1:b + 1] - self.offsets[a:b]
        else:
            ev = np.asarray(events, dtype=np.int64)
            lengths = self.offsets[ev + 1] - self.offsets[ev]
            starts = self.offsets[ev]
            total = int(lengths.sum())
            new_starts = np.cumsum(lengths) - lengths
            rows = np.arange(total, dtype=np.int64) + np.repeat(starts - new_starts, lengths)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        sid = self.sensor_id[rows]
        gx, gy, gz = self.geo
        idx = sid.astype(np.intp)
        return PulseChunk(
            sensor_id=sid, time=self.time[rows].astype(np.float64), charge=self.charge[rows],
            auxiliary=self.auxiliary[rows], x=gx[idx], y=gy[idx], z=gz[idx], offsets=offsets,
            event_id=self.event_id[ev], n_pulses=np.asarray(lengths, dtype=np.int64),
            azimuth=None if self.azimuth is None else self.azimuth[ev],
            zenith=None if self.zenith is None else self.zenith[ev], pad_sensor=self.pad_sensor,
            dom_type=None if self.dom_type is None else self.dom_type[rows],
            pmt_dir=None if self.pmt_dir is None else self.pmt_dir[rows],
        )


class LazyChunk(PulseChunk):
    """A PulseChunk of some events of a :class:`RawFile` whose pulse columns are gathered on first use.

    What the loader hands to selections and extractors: a selection that reads only ``offsets`` and
    ``auxiliary`` (aux_first, time_order) never gathers positions, times or charges of the pulses it
    drops, and :meth:`take` composes row indices instead of copying columns. Reading any field gives
    the same array an eager chunk would hold. Extras for the extractors' fast paths: ``sensor_index``
    (intp sensor ids) and ``sensor_xyz`` (the geometry's x, y, z columns indexed by sensor_id, every
    id in the chunk valid).
    """

    _LAZY = frozenset(PulseChunk.PULSE_FIELDS) | {"sensor_index", "src"}

    def __init__(self, raw: "RawFile | None" = None, offsets: np.ndarray | None = None, src=None, shift=None, **events):
        if raw is None:  # dataclasses.replace() of a LazyChunk passes every field: that is a plain chunk
            self.__class__ = PulseChunk
            PulseChunk.__init__(self, offsets=offsets, **events)
            return
        # no dataclass __init__: the pulse fields stay unset until __getattr__ fills them
        self._raw, self._src, self._shift = raw, src, shift
        self.offsets = offsets
        for k, v in events.items():
            setattr(self, k, v)
        self.sensor_xyz = raw.geo
        for name in PulseChunk.OPTIONAL_FIELDS:  # gathered now where the source has them (the class says None)
            if getattr(raw, name) is not None:
                setattr(self, name, getattr(raw, name)[self.src])

    def __getattr__(self, name):
        if name not in LazyChunk._LAZY:
            raise AttributeError(name)
        raw = self._raw
        if name == "src":  # rows of the raw file, in chunk order
            if self._src is None:
                lengths = np.diff(self.offsets)
                self._src = np.arange(int(self.offsets[-1]), dtype=np.int64) + np.repeat(self._shift, lengths)
            value = self._src
        elif name == "time":
            value = raw.time[self.src].astype(np.float64)
        elif name == "sensor_index":
            value = self.sensor_id.astype(np.intp)
        elif name in ("x", "y", "z"):
            value = raw.geo["xyz".index(name)][self.sensor_index]
        else:
            value = getattr(raw, name)[self.src]
        object.__setattr__(self, name, value)
        return value

    def take(self, rows: np.ndarray, offsets: np.ndarray) -> "LazyChunk":
        return LazyChunk(self._raw, offsets, src=self.src[rows], event_id=self.event_id, n_pulses=self.n_pulses,
                         azimuth=self.azimuth, zenith=self.zenith, pad_sensor=self.pad_sensor)

    def column(self, name: str, rows: np.ndarray) -> np.ndarray:
        """``getattr(self, name)[rows]`` without gathering the whole column (raw columns only)."""
        if name in self.__dict__:
            return self.__dict__[name][rows]
        return getattr(self._raw, name)[self.src[rows]]
