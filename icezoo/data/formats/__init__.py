"""Data sources: one module per file format, chosen by what ``--data`` points at.

A format is a :class:`DataSource` subclass; the built-ins (:mod:`.kaggle`, :mod:`.sqlite`,
:mod:`.parquet`) and a third party's (an ``icezoo_formats`` hook returning classes) are found the
same way: the first whose :meth:`DataSource.detect` accepts the path reads it. ``icezoo list
formats`` shows them.

Every source speaks in the Kaggle layout's terms, so that the loaders, the split protocol and every
command work unchanged: a *split* (``train``: events with truth; ``test``: every event, truth not
needed), and numbered *batches* (a Kaggle batch file, or a fixed-size run of events in ``event_no``
order for a single-file source) read one at a time as a :class:`~icezoo.data.raw.RawFile`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from icezoo.core.errors import IcezooError

#: the built-in formats, tried in this order before any plugin's
BUILTIN = ("icezoo.data.formats.kaggle:KaggleSource", "icezoo.data.formats.sqlite:SQLiteSource",
           "icezoo.data.formats.parquet:ParquetSource")


class DataSource(ABC):
    """A dataset of one format, opened once per process (see :func:`open_source`).

    Subclasses set ``format`` (the name ``icezoo list formats`` shows) and ``summary``, and
    implement its abstract methods (a plugin format that misses one is refused when registered); ``pulsemap`` and ``truth_table`` name tables where a format has
    several. Instances must pickle (loader workers receive them) and must read bounded memory: one
    batch at a time, never a whole pulse table.
    """

    format: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: True when batches are fixed-size event_no chunks of one file (docs/data.md: the split protocol)
    chunked: ClassVar[bool] = False

    def __init__(self, path: str | Path, pulsemap: str | None = None, truth_table: str | None = None):
        self.path = Path(path)
        self.pulsemap, self.truth_table = pulsemap, truth_table or "truth"

    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """Does ``path`` look like this format (cheap: names and magic bytes, no table read)?"""

    # -- the split's batches -------------------------------------------------------------------
    @abstractmethod
    def batch_ids(self, split: str) -> list[int]:
        """Sorted batch ids of ``split``; an error when the split has none (or no truth for train)."""

    def check_batches(self, split: str, batch_ids) -> None:
        """Every named batch exists and is readable in principle (no pulse read)."""
        have = set(self.batch_ids(split))
        missing = [int(b) for b in batch_ids if int(b) not in have]
        if missing:
            raise IcezooError(f"{self.path}: no batch {missing[0]} (batches 1..{max(have, default=0)})")

    def counts(self, split: str, batch_ids, min_pulses: int = 2) -> dict[int, tuple[int, int]]:
        """``{batch_id: (events, events with at least min_pulses pulses)}`` without reading pulses."""
        out = {}
        for b in batch_ids:
            n = self.pulse_counts(split, b)
            out[int(b)] = (len(n), int((n >= min_pulses).sum()))
        return out

    @abstractmethod
    def pulse_counts(self, split: str, batch_id: int) -> np.ndarray:
        """Pulses of every event of one batch (event order)."""

    @abstractmethod
    def meta(self, split: str, batch_id: int) -> dict[str, np.ndarray]:
        """The Kaggle meta rows of one batch: event_id, first/last_pulse_index, azimuth/zenith (train)."""

    @abstractmethod
    def read_raw(self, split: str, batch_id: int, geometry=None):
        """One batch, validated, as a :class:`~icezoo.data.raw.RawFile` (``geometry`` replaces the
        DOM positions, see :func:`icezoo.data.geometry.load_geometry`)."""

    @abstractmethod
    def split_events(self, split: str) -> tuple[np.ndarray, list[int]]:
        """(event_id of every event in batch order, the batch ids): what predict and linefit walk."""

    def truth(self, split: str, batch_ids) -> dict[str, np.ndarray] | None:
        """Truth columns beyond the direction ({column: array} with ``event_id``) of those batches,
        only the columns the source has; None when it has none."""
        return None

    def detector(self):
        """The :class:`~icezoo.data.detector.Detector` the data was taken with."""
        from icezoo.data.detector import icecube86

        return icecube86()

    @abstractmethod
    def describe(self) -> list[str]:
        """Lines for ``icezoo inspect``."""

    def geometry(self):
        """The DOM table [n, 3] a batch's sensor ids index (IceCube-86's unless the source has its own)."""
        from icezoo.data.geometry import load_geometry

        return load_geometry(None)

    def __getstate__(self):  # open handles (a SQLite connection) stay behind; workers reopen
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_h_")}


_OPEN: dict[str, DataSource] = {}


def _load(ref: str):
    import importlib

    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def format_classes(include_plugins: bool = True) -> list[type[DataSource]]:
    """The built-in format classes, then those of plugins (``icezoo_formats`` hook)."""
    classes = [_load(ref) for ref in BUILTIN]
    if include_plugins:
        from icezoo.zoo import registry

        classes += [c for c in registry().formats.values() if c not in classes]
    return classes


def detect_format(path: str | Path) -> type[DataSource]:
    """The format class that reads ``path``; one line naming the path when none does."""
    path = Path(path)
    if not path.exists():
        raise IcezooError(f"--data {path}: no such file or directory")
    for plugins in (False, True):
        classes = format_classes(plugins)
        for cls in classes:
            if cls.detect(path):
                return cls
    names = ", ".join(c.format for c in classes)
    raise IcezooError(f"--data {path}: not a dataset icezoo can read (formats: {names}; icezoo list formats)")


def open_source(path: str | Path, pulsemap: str | None = None, truth_table: str | None = None) -> DataSource:
    """The source at ``path``, opened once per process. A call with ``pulsemap``/``truth_table`` (the
    command line's) sets them for every later plain call on the same path."""
    key = str(Path(path).resolve())
    if pulsemap is None and truth_table is None and key in _OPEN:
        return _OPEN[key]
    cls = detect_format(path)
    src = cls(path, pulsemap=pulsemap, truth_table=truth_table)
    _OPEN[key] = src
    return src


def foreign_source(path) -> DataSource | None:
    """The source at ``path`` when it is not a Kaggle-layout folder (those keep the direct path)."""
    if path is None:
        return None
    p = Path(path)
    key = str(p.resolve())
    if key in _OPEN:
        src = _OPEN[key]
    elif p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir() or any(p.glob("*_meta.parquet"))):
        return None
    elif not p.exists():
        return None
    else:
        src = open_source(p)
    return None if src.format == "kaggle" else src
