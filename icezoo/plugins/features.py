"""Per-pulse and per-event feature extractors (vectorised over a PulseChunk)."""

from __future__ import annotations

import numpy as np

from icezoo.core import FeatureExtractor, PulseChunk, hookimpl


class KaggleNorm(FeatureExtractor):
    """x,y,z/500, (time-1e4)/3e4, log10(charge)/3, auxiliary: the normalisation of EXP_08/EXP_13 on."""

    name = "kaggle_norm"
    columns = ("x", "y", "z", "time", "charge", "auxiliary")

    def extract(self, chunk: PulseChunk, chunk_all: PulseChunk) -> np.ndarray:
        return np.stack([
            chunk.x / 500.0,
            chunk.y / 500.0,
            chunk.z / 500.0,
            (chunk.time - 1.0e4) / 3.0e4,
            np.log10(np.maximum(chunk.charge, 1e-3)) / 3.0,
            chunk.auxiliary.astype(np.float64) - 0.5,
        ], axis=1).astype(np.float32)


@hookimpl
def icezoo_components():
    return [KaggleNorm]
