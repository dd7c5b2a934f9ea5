"""A bidirectional GRU backbone over the time-ordered pulses, registered through icezoo's plugin hooks.

This is the whole recipe for a third-party component: in the module named by the ``icezoo`` entry
point, subclass a core base class and give it a ``name`` and a pydantic ``Config``; defining it
registers it. (Classes defined in other modules of a package are returned from the
``icezoo_components`` hook, e.g. ``return icezoo.core.defined_components(other_module)``.) Pipelines
that use it ship in a TOML file returned from ``icezoo_pipeline_files``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field
from torch import nn

from icezoo.core import Backbone, Batch, Config, hookimpl


class GRUBackbone(Backbone):
    """Bidirectional GRU over pulses in time order; padding is packed away, never read."""

    name = "gru"
    example_params = {"hidden": 8, "layers": 1}

    class Config(Config):
        hidden: int = Field(64, gt=0, description="hidden size per direction")
        layers: int = Field(2, gt=0)
        dropout: float = Field(0.0, ge=0, lt=1)

    def __init__(self, config: Config, in_dim: int):
        super().__init__(config, in_dim)
        self.gru = nn.GRU(in_dim, config.hidden, num_layers=config.layers, batch_first=True,
                          bidirectional=True, dropout=config.dropout if config.layers > 1 else 0.0)
        self.out_dim = 2 * config.hidden

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        lengths = batch.mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])
        return out


@hookimpl
def icezoo_pipeline_files():
    return [Path(__file__).with_name("pipelines.toml")]
