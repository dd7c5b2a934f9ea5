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


def synthetic_sensor_batch(feature_dim: int, lengths: list[int], pulses: int = 4, width: int | None = None,
                           event_dim: int = 0, seed: int = 0, dtype: torch.dtype = torch.float32,
                           pad_value: float = 0.0) -> Batch:
    """A sensor-token Batch: ``lengths`` hit sensors per event, each with 1..``pulses`` pulses in
    ``batch.pulses`` (times since the sensor's first pulse within ~500 ns, the first at 0); each
    token's ``features`` are those of its first pulse, as the loader makes them."""
    from icezoo.core.batch import PackedPulses

    batch = synthetic_batch(feature_dim, lengths, width, event_dim, seed, dtype, pad_value)
    gen = torch.Generator().manual_seed(seed + 1)
    b, s = batch.mask.shape
    counts = torch.randint(1, pulses + 1, (b, s), generator=gen) * batch.mask
    token = torch.repeat_interleave(torch.arange(b * s), counts.reshape(-1))
    n = len(token)
    first = torch.cumsum(counts.reshape(-1), 0) - counts.reshape(-1)
    rank = torch.arange(n) - first[token]
    dt = torch.sort(torch.rand(n, generator=gen, dtype=dtype) * 500.0).values  # any order; rank 0 set to 0 below
    dt = torch.where(rank == 0, torch.zeros((), dtype=dtype), dt)
    features = torch.randn(n, feature_dim, generator=gen, dtype=dtype)
    tok_features = batch.features.reshape(b * s, feature_dim).clone()
    tok_features[token[rank == 0]] = features[rank == 0]
    packed = PackedPulses(features=features, dt=dt, charge=torch.rand(n, generator=gen, dtype=dtype) * 3,
                          event=token // s, slot=token % s, num_events=b)
    return batch.with_(features=tok_features.reshape(b, s, feature_dim), pulses=packed)
