"""Data: the Kaggle-layout reader (:mod:`icezoo.data.io`), loaders (:mod:`icezoo.data.loader`),
the layout writer (:mod:`icezoo.data.kaggle_layout`) and the simulator.

The public names below load their module on first use, so ``import icezoo.data`` stays cheap.
"""

from __future__ import annotations

import importlib

_API = {
    "list_batches": "icezoo.data.io", "parse_batches": "icezoo.data.io", "split_batches": "icezoo.data.io",
    "cycle_batches": "icezoo.data.io", "read_chunk": "icezoo.data.io", "chunk_to_batch": "icezoo.data.io",
    "load_geometry": "icezoo.data.io", "EventDataset": "icezoo.data.loader", "make_loader": "icezoo.data.loader",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'icezoo.data' has no attribute {name!r}")
