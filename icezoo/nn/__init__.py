"""Shared neural-network layers for plugins: masked kNN, MLP builder, attention blocks, encodings.

Plugins import only :mod:`icezoo.core` and this package; nothing here imports a plugin.
"""

from icezoo.nn.blocks import (C_ICE, C_VACUUM, DETECTOR_MAX, DETECTOR_MIN, BiasedAttention, RelativeAttention,
                              TransformerBlock, activation, knn_mask, masked_knn, mlp, neg_fill, sinusoidal, zero_padding)

__all__ = [
    "C_VACUUM", "C_ICE", "DETECTOR_MIN", "DETECTOR_MAX", "masked_knn", "knn_mask", "mlp", "activation",
    "BiasedAttention", "RelativeAttention", "TransformerBlock", "sinusoidal", "zero_padding", "neg_fill",
]
