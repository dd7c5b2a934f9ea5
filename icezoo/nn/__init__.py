"""Shared neural-network layers for plugins, one module per topic; every layer documents its shapes.

* :mod:`~icezoo.nn.masking`: zero padding, masked softmax (padded pulses never count).
* :mod:`~icezoo.nn.pooling`: masked sum/mean/max/min over the pulses of an event.
* :mod:`~icezoo.nn.mlp`: activations, the Linear/activation stack, post-norm, input projection,
  the input standardizer.
* :mod:`~icezoo.nn.encodings`: sinusoidal encodings of scalars.
* :mod:`~icezoo.nn.attention`: biased and relative multi-head attention, the pre-norm block.
* :mod:`~icezoo.nn.knn`: dense masked k nearest neighbours.
* :mod:`~icezoo.nn.graph`: dense graph layers (EdgeConv and its kin) for the graph backbones.
* :mod:`~icezoo.nn.tracing`: what layers do differently while a model is exported (ONNX, TorchScript).
* :mod:`~icezoo.nn.bins`: directions as azimuth/zenith bins (layout, smoothed targets, decoding).

Plugins import only :mod:`icezoo.core`, this package, :mod:`icezoo.resources` and their own family
(docs/architecture.md); nothing here imports a plugin.
The detector and ice constants are re-exported from :mod:`icezoo.core.detector`, where they are defined.
"""

from icezoo.core.detector import C_ICE, C_VACUUM, DETECTOR_MAX, DETECTOR_MIN
from icezoo.nn.attention import BiasedAttention, RelativeAttention, TransformerBlock
from icezoo.nn.encodings import sinusoidal
from icezoo.nn.knn import knn_mask, masked_knn, pair_distances
from icezoo.nn.masking import masked_softmax, neg_fill, zero_padding
from icezoo.nn.mlp import InputStandardizer, activation, input_projection, mlp, post_norm
from icezoo.nn.pooling import POOLS, masked_max, masked_mean, masked_min, masked_sum
from icezoo.nn.tracing import merge_heads, smallest

__all__ = [
    "C_VACUUM", "C_ICE", "DETECTOR_MIN", "DETECTOR_MAX", "masked_knn", "knn_mask", "pair_distances", "mlp", "activation",
    "post_norm", "input_projection", "InputStandardizer", "BiasedAttention", "RelativeAttention", "TransformerBlock", "sinusoidal",
    "zero_padding", "neg_fill", "masked_softmax", "masked_sum", "masked_mean", "masked_max", "masked_min", "POOLS",
    "merge_heads", "smallest",
]
