"""The data package's stable names, and the switch between formats.

The work lives in one module per responsibility: :mod:`.specs` (the batch-spec language),
:mod:`.geometry` (DOM tables), :mod:`.meta` (the Kaggle meta), :mod:`.raw` (a batch in memory),
:mod:`.formats` (one module per file format), :mod:`.prepare` (selection, features, padding) and
:mod:`.toy` (a random dataset for tests). The functions below that take a ``data_dir`` accept any
source :func:`~icezoo.data.formats.open_source` reads (a Kaggle folder, a GraphNeT SQLite file or
Parquet folder, a plugin's format): a Kaggle folder goes straight to its reader, as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icezoo.core.batch import PulseChunk
from icezoo.data import meta as _meta
from icezoo.data.formats import foreign_source, open_source  # noqa: F401
from icezoo.data.formats import kaggle as _kaggle
from icezoo.data.formats.kaggle import PULSE_COLUMNS  # noqa: F401
from icezoo.data.geometry import geometry_path, load_geometry  # noqa: F401
from icezoo.data.meta import META_COLUMNS, TRUTH_COLUMNS, batch_path, meta_path, scan_meta  # noqa: F401
from icezoo.data.prepare import Prepared, chunk_to_batch, pad_events, prepare  # noqa: F401
from icezoo.data.raw import LazyChunk, RawFile  # noqa: F401
from icezoo.data.specs import (MAX_EVENTS_PER_FILE, MIN_FILES, cycle_batches, default_events_per_batch,  # noqa: F401
                               format_batches, parse_batches, split_batches)
from icezoo.data.toy import write_toy_dataset  # noqa: F401


def list_batches(data_dir: str | Path, split: str = "train") -> list[int]:
    """Sorted batch ids of ``split`` (``DIR/{split}/batch_N.parquet``, or a source's event chunks)."""
    src = foreign_source(data_dir)
    return src.batch_ids(split) if src else _meta.list_batches(data_dir, split)


def meta_batch_ids(data_dir: str | Path, split: str) -> list[int]:
    """Sorted batch ids the meta names (a source's own batches)."""
    src = foreign_source(data_dir)
    return src.batch_ids(split) if src else _meta.meta_batch_ids(data_dir, split)


def require_batch_files(data_dir: str | Path, split: str, batch_ids) -> None:
    """Every batch named exists: a missing one is an error, never a silently smaller dataset."""
    src = foreign_source(data_dir)
    return src.check_batches(split, batch_ids) if src else _meta.require_batch_files(data_dir, split, batch_ids)


def check_batch_file(data_dir: str | Path, split: str, batch_id: int):
    """A batch exists and is readable in principle (no pulse read)."""
    src = foreign_source(data_dir)
    if src:
        src.check_batches(split, [batch_id])
        return src.path
    return _kaggle.check_batch_file(data_dir, split, batch_id)


def read_meta(data_dir: str | Path, split: str, batch_id: int) -> dict[str, np.ndarray]:
    """The meta rows of one batch (event order): event_id, first/last_pulse_index, azimuth/zenith (train)."""
    src = foreign_source(data_dir)
    return src.meta(split, batch_id) if src else _meta.read_meta(data_dir, split, batch_id)


def file_counts(data_dir: str | Path, split: str, batch_ids: list[int], min_pulses: int = 2):
    """``{batch_id: (events, events with at least min_pulses pulses)}`` without reading pulses."""
    src = foreign_source(data_dir)
    return src.counts(split, batch_ids, min_pulses) if src else _meta.file_counts(data_dir, split, batch_ids, min_pulses)


def file_pulse_counts(data_dir: str | Path, split: str, batch_id: int) -> np.ndarray:
    """Pulses of every event of one batch (event order)."""
    src = foreign_source(data_dir)
    return src.pulse_counts(split, batch_id) if src else _meta.file_pulse_counts(data_dir, split, batch_id)


def split_events(data_dir: str | Path, split: str):
    """(event_id of every event in batch order, the batch ids) of a whole split."""
    src = foreign_source(data_dir)
    return src.split_events(split) if src else _meta.split_events(data_dir, split)


def read_raw(data_dir: str | Path, split: str, batch_id: int, geometry=None) -> RawFile:
    """One batch, validated (see :func:`read_chunk`)."""
    src = foreign_source(data_dir)
    return src.read_raw(split, batch_id, geometry) if src else _kaggle.read_raw(data_dir, split, batch_id, geometry)


def read_chunk(data_dir: str | Path, split: str, batch_id: int, geometry=None) -> PulseChunk:
    """All pulses of one batch with DOM positions: events in batch order, pulses in time order within
    each event; ``azimuth``/``zenith`` filled when the split has truth. Every input problem is an
    IcezooError naming the file (and row/event)."""
    return read_raw(data_dir, split, batch_id, geometry).gather()
