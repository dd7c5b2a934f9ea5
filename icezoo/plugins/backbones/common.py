"""What the attention backbones built from :class:`icezoo.nn.TransformerBlock` share: their params and width."""

from __future__ import annotations

from pydantic import Field

from icezoo.core import Config


class BlockConfig(Config):
    """Params shared by the attention backbones built from :class:`icezoo.nn.TransformerBlock`."""

    dim: int | None = Field(None, gt=0, description="model width; None keeps the embedder's dim")
    heads: int = Field(8, gt=0)
    ff_mult: int = Field(4, gt=0, description="feed-forward hidden width = ff_mult * dim")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the residual branches")
    attn_dropout: float = Field(0.0, ge=0, lt=1)


def model_width(config, in_dim: int) -> int:
    """The backbone's width (``config.dim`` or the embedder's), checked against ``config.heads``."""
    dim = config.dim or in_dim
    if dim % config.heads:
        raise ValueError(f"dim {dim} is not divisible by heads {config.heads}")
    return dim
