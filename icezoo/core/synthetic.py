"""Small synthetic batches for ``icezoo compose``, the conformance kit and tests.

Positions are drawn inside the IceCube-86 volume (metres), times within ~3 us (ns), features
standard normal; padded slots get ``pad_value`` so checks can prove that padding is ignored.
"""

from __future__ import annotations

import torch

from icezoo.core.batch import N_SENSORS, PAD_SENSOR, Batch


def synthetic_batch(
    feature_dim: int,
    lengths: list[int],
    width: int | None = None,
    event_dim: int = 0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    pad_value: float = 0.0,
) -> Batch:
    """A padded Batch with ``len(lengths)`` events of the given pulse counts (width >= max length)."""
    gen = torch.Generator().manual_seed(seed)
    b = len(lengths)
    width = max(max(lengths, default=1), 1) if width is None else width
    lengths_t = torch.tensor(lengths, dtype=torch.int64)
    mask = torch.arange(width)[None, :] < lengths_t[:, None]
    features = torch.randn(b, width, feature_dim, generator=gen, dtype=dtype)
    xyz = (torch.rand(b, width, 3, generator=gen, dtype=dtype) * 2 - 1) * torch.tensor([550.0, 500.0, 500.0], dtype=dtype)
    t = torch.sort(torch.rand(b, width, 1, generator=gen, dtype=dtype) * 3000.0, dim=1).values
    t = t - t[:, :1]
    xyzt = torch.cat([xyz, t], dim=-1)
    sensor_id = torch.randint(0, N_SENSORS, (b, width), generator=gen)
    direction = torch.randn(b, 3, generator=gen, dtype=dtype)
    target = direction / direction.norm(dim=-1, keepdim=True)
    pad = ~mask
    features = features.masked_fill(pad[..., None], pad_value)
    xyzt = xyzt.masked_fill(pad[..., None], pad_value)
    sensor_id = sensor_id.masked_fill(pad, PAD_SENSOR)
    event_features = torch.randn(b, event_dim, generator=gen, dtype=dtype)
    return Batch(
        features=features, mask=mask, xyzt=xyzt, sensor_id=sensor_id, event_features=event_features,
        n_pulses=lengths_t.clone(), event_id=torch.arange(b, dtype=torch.int64), target=target,
    )
