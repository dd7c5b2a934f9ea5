"""Loaders: skipping short events, bucketing, sharding with equal steps, determinism, exact resume."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from icezoo.core import IcezooError
from icezoo.data.io import chunk_to_batch, read_chunk, write_toy_dataset
from icezoo.data.loader import make_loader
from icezoo.plugins.features import QE, CenterOfGravity, IceProperties, KaggleNorm, PulseCount
from icezoo.plugins.selection import AuxFirst

SIZES = [120, 90, 150, 60, 110]  # events per file: unequal on purpose


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader") / "data"
    # small events (mean ~8 pulses, from 1): plenty of single-pulse events to skip
    return write_toy_dataset(root, n_files=len(SIZES), events_per_file=SIZES, seed=5, mean_pulses=5, min_pulses=1)


@pytest.fixture(scope="module")
def meta(data):
    m = pl.read_parquet(data / "train_meta.parquet")
    n = (m["last_pulse_index"] - m["first_pulse_index"] + 1).to_numpy()
    return {"event_id": m["event_id"].to_numpy(), "batch_id": m["batch_id"].to_numpy(), "n": n}


SEL = AuxFirst(AuxFirst.Config(max_pulses=12))
FEATS = [KaggleNorm(KaggleNorm.Config()), QE(QE.Config()), IceProperties(IceProperties.Config()),
         CenterOfGravity(CenterOfGravity.Config()), PulseCount(PulseCount.Config())]
IDS = [1, 2, 3, 4, 5]


def loader(data, **kw):
    kw.setdefault("batch_size", 16)
    kw.setdefault("block_events", 48)  # several blocks per file: 3 batches each
    return make_loader(data, "train", kw.pop("ids", IDS), SEL, FEATS, kw.pop("batch_size"), **kw)


def event_ids(batches):
    return [b.event_id.tolist() for b in batches]


def test_full_pass_covers_every_kept_event_once_and_counts_skips(data, meta):
    L = loader(data)
    batches = list(L)
    assert len(batches) == len(L) == L.stats["steps"]
    seen = np.concatenate([b.event_id.numpy() for b in batches])
    kept = meta["event_id"][meta["n"] >= 2]
    assert len(seen) == len(set(seen.tolist())) and set(seen.tolist()) == set(kept.tolist())
    assert L.skipped == int((meta["n"] < 2).sum()) > 5
    for b in batches:
        assert (b.n_pulses >= 2).all() and b.features.shape[2] == 8 and b.event_features.shape[1] == 5
        assert b.features.shape[1] == int(b.lengths.max()) <= 12  # padded to the batch's longest event
        assert (b.sensor_id[~b.mask] == 5160).all() and (b.features[~b.mask] == 0).all()
        assert torch.allclose(b.target.norm(dim=1), torch.ones(len(b.target)), atol=1e-5)
    assert make_loader(data, "train", IDS, SEL, FEATS, 16, min_pulses=1).skipped == 0
    # one block per file (the default size) covers the same events
    big = loader(data, block_events=16384)
    assert sorted(e for b in big for e in b.event_id.tolist()) == sorted(seen.tolist())


def test_batches_match_chunk_to_batch(data):
    """A loader batch holds the same per-event features as chunk_to_batch on the same events."""
    b = next(iter(loader(data, ids=[2], shuffle=False)))
    c = read_chunk(data, "train", 2)
    pos = {e: i for i, e in enumerate(c.event_id.tolist())}
    which = np.array([pos[e] for e in b.event_id.tolist()])
    ref = chunk_to_batch(c.events(which), SEL, FEATS, np.random.default_rng(0))
    short = (b.n_pulses <= 12).numpy()  # events untouched by the (random) selection
    w = b.features.shape[1]
    assert torch.equal(b.features[short], ref.features[short][:, :w])
    assert torch.equal(b.xyzt[short], ref.xyzt[short][:, :w])
    assert torch.equal(b.event_features, ref.event_features) and torch.equal(b.target, ref.target)


def test_length_bucketing_cuts_padding(data, meta):
    def padding(L):
        batches = list(L)
        slots = sum(b.mask.numel() for b in batches)
        return 1 - sum(int(b.mask.sum()) for b in batches) / slots

    bucketed = padding(loader(data, bucket_window=64, block_events=16384))
    # reference: the same events cut into batches at random (no sorting by length)
    rng = np.random.default_rng(0)
    n = np.minimum(meta["n"][meta["n"] >= 2], 12)
    rng.shuffle(n)
    widths = [c.max() for c in np.array_split(n, -(-len(n) // 16))]
    random_padding = 1 - n.sum() / sum(w * len(c) for w, c in zip(widths, np.array_split(n, -(-len(n) // 16))))
    assert bucketed < 0.5 * random_padding
    # within a batch, lengths are close
    spreads = [int(b.lengths.max() - b.lengths.min()) for b in loader(data, block_events=16384)]
    assert np.median(spreads) <= 2


def test_deterministic_for_seed_and_epoch(data):
    a = list(loader(data, seed=3, epoch=1))
    b = list(loader(data, seed=3, epoch=1))
    assert event_ids(a) == event_ids(b)
    assert all(torch.equal(x.features, y.features) and torch.equal(x.xyzt, y.xyzt) for x, y in zip(a, b))
    assert event_ids(loader(data, seed=3, epoch=2)) != event_ids(a)
    assert event_ids(loader(data, seed=4, epoch=1)) != event_ids(a)


@pytest.mark.parametrize("start", [1, 7, 19])
def test_start_step_is_the_tail_of_a_full_pass(data, start):
    full = list(loader(data, seed=1, epoch=2))
    resumed = list(loader(data, seed=1, epoch=2, start_step=start))
    assert len(resumed) == len(full) - start
    assert event_ids(resumed) == event_ids(full[start:])
    assert all(torch.equal(x.features, y.features) for x, y in zip(resumed, full[start:]))
    assert list(loader(data, start_step=10_000)) == []


@pytest.mark.parametrize("world_size,ids", [(2, IDS), (3, IDS), (4, [1, 2]), (2, [3])])
def test_sharding_disjoint_equal_steps(data, meta, world_size, ids):
    kept = set(meta["event_id"][(meta["n"] >= 2) & np.isin(meta["batch_id"], ids)].tolist())
    loaders = [loader(data, ids=ids, rank=r, world_size=world_size, seed=2) for r in range(world_size)]
    per_rank = [[e for b in L for e in b.event_id.tolist()] for L in loaders]
    steps = [len(list(L)) for L in loaders]
    assert len(set(steps)) == 1 and steps[0] == len(loaders[0]) > 0  # equal step counts
    sets = [set(p) for p in per_rank]
    assert sum(len(s) for s in sets) == len(set().union(*sets))  # disjoint
    dropped = sum(L.stats["dropped_events"] for L in loaders)
    assert set().union(*sets) <= kept and len(set().union(*sets)) + dropped == len(kept)  # covers all but the dropped
    assert sum(L.skipped for L in loaders) == int(((meta["n"] < 2) & np.isin(meta["batch_id"], ids)).sum())
    # whole files go to one rank each; the files left over (or all, with fewer files than ranks) to every rank
    readers = {b: sum(b in {u.batch_id for u in L.dataset.units} for L in loaders) for b in ids}
    whole = (len(ids) // world_size) * world_size
    assert sorted(readers.values()) == [1] * whole + [world_size] * (len(ids) - whole)


def test_bad_arguments(data):
    with pytest.raises(IcezooError, match="rank"):
        loader(data, rank=2, world_size=2)
    with pytest.raises(IcezooError, match="batch_9.parquet: batch file not found"):
        loader(data, ids=[9])
    with pytest.raises(IcezooError, match="no batch files"):
        loader(data, ids=[])


@pytest.mark.slow
def test_worker_processes_match_and_resume(data):
    full = list(loader(data, num_workers=2, seed=1))
    single = list(loader(data, seed=1))
    assert sorted(e for b in full for e in b.event_id.tolist()) == sorted(e for b in single for e in b.event_id.tolist())
    resumed = list(loader(data, num_workers=2, seed=1, start_step=5))
    assert event_ids(resumed) == event_ids(full[5:])


def _batch_equal(a, b):
    for k in ("features", "mask", "xyzt", "sensor_id", "event_features", "n_pulses", "event_id", "target"):
        x, y = getattr(a, k), getattr(b, k)
        assert (x is None) == (y is None), k
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), k


@pytest.mark.parametrize("sel_name", ["aux_first", "time_order", "light_speed"])
def test_lazy_chunk_gives_the_same_batches_as_the_eager_gather(data, sel_name):
    """The loader's LazyChunk (columns gathered on first read, per-sensor feature tables) pads to
    exactly what the eager PulseChunk of the same events gives, for every selection and extractor."""
    from icezoo.data.io import prepare, pad_events, read_raw
    from icezoo.plugins import features as F
    from icezoo.plugins import selection as S

    cls = {"aux_first": S.AuxFirst, "time_order": S.TimeOrder, "light_speed": S.LightSpeed}[sel_name]
    sel = cls(cls.Config(max_pulses=6))
    feats = [F.KaggleNorm(F.KaggleNorm.Config()), F.MinMaxNorm(F.MinMaxNorm.Config()), F.TimeWeight(F.TimeWeight.Config()),
             F.QE(F.QE.Config()), F.IceProperties(F.IceProperties.Config(absorption=True)), F.Rank(F.Rank.Config()),
             F.CenterOfGravity(F.CenterOfGravity.Config()), F.PulseCount(F.PulseCount.Config())]
    raw = read_raw(data, "train", 3)
    events = np.random.default_rng(0).permutation(raw.num_events)[:70]
    buffers: dict = {}
    for rep in range(2):  # the second pass reuses the buffers
        lazy = prepare(raw.gather_lazy(events), sel, feats, np.random.default_rng(rep), buffers=buffers)
        eager = prepare(raw.gather(events), sel, feats, np.random.default_rng(rep))
        for part in (slice(0, 16), slice(16, 70), np.array([5, 2, 60])):
            _batch_equal(pad_events(lazy, part), pad_events(eager, part))


def test_lazy_chunk_fields_and_replace(data):
    import dataclasses

    from icezoo.core import PulseChunk
    from icezoo.data.io import LazyChunk, read_raw

    raw = read_raw(data, "train", 2)
    events = np.array([7, 3, 40, 41])
    lazy, eager = raw.gather_lazy(events), raw.gather(events)
    assert isinstance(lazy, LazyChunk) and "time" not in vars(lazy)
    for f in PulseChunk.PULSE_FIELDS + ("offsets", "event_id", "n_pulses", "azimuth", "zenith"):
        np.testing.assert_array_equal(getattr(lazy, f), getattr(eager, f))
        assert getattr(lazy, f).dtype == getattr(eager, f).dtype, f
    rows = np.array([0, 2, len(eager.time) - 1])
    offsets = np.array([0, 2, 2, 2, 3])
    np.testing.assert_array_equal(lazy.take(rows, offsets).charge, eager.take(rows, offsets).charge)
    plain = dataclasses.replace(lazy, event_id=lazy.event_id + 1)
    assert type(plain) is PulseChunk
    np.testing.assert_array_equal(plain.x, eager.x)
    np.testing.assert_array_equal(lazy.events([1, 0]).time, eager.events([1, 0]).time)
