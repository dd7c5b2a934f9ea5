"""Loaders: batch files -> padded :class:`~icezoo.core.Batch` objects, bucketed, sharded, resumable.

The whole plan of an epoch (which rank and worker reads which file, which events form which batch)
is computed up front from the meta alone (pulse counts per event), so that

* every rank gets the same number of steps (the longer ranks drop their last batches, counted in
  ``stats["dropped_events"]``);
* events with fewer than ``min_pulses`` pulses are skipped and counted (``.skipped``) before any
  batch file is read;
* ``start_step`` skips batches exactly: the batches after it are those of a full pass;
* only the batch files in flight (one per worker) are in memory, whatever the dataset size.

Sharding: with at least as many files as ranks, whole files go round-robin to the ranks; the files
left over (``len(files) % world_size``) and every file when there are fewer files than ranks are
split by events (a seeded permutation, every ``world_size``-th event per rank). Batching is by
length: events are shuffled, sorted by pulse count within windows of ``bucket_window`` batches and
cut into batches, whose order is shuffled again; so a batch holds similar pulse counts and needs
little padding. With ``num_workers`` > 0, worker ``w`` reads units ``w, w+W, ...`` and the torch
DataLoader returns their batches round-robin; the step sequence depends on ``num_workers`` (resume
with the same value).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from icezoo.core.batch import Batch
from icezoo.core.errors import IcezooError
from icezoo.data.io import meta_counts, pad_events, prepare, read_raw


@dataclass
class Unit:
    """One batch file (or this rank's share of it) and the batches cut from it."""

    batch_id: int
    events: np.ndarray  # indices into the file's events, in batch order
    bounds: np.ndarray  # [n_batches + 1] event positions in ``events`` where batches start/stop
    seed: tuple[int, ...]

    @property
    def n_batches(self) -> int:
        return len(self.bounds) - 1


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def _bucket(events: np.ndarray, n_cap: np.ndarray, batch_size: int, window: int, shuffle: bool,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Order ``events`` into length buckets; returns (events in batch order, batch bounds)."""
    n = len(events)
    if n == 0:
        return events, np.zeros(1, dtype=np.int64)
    perm = rng.permutation(n) if shuffle else np.arange(n)
    win = np.arange(n) // (batch_size * max(window, 1))
    order = perm[np.lexsort((n_cap[perm], win))]
    n_batches = -(-n // batch_size)
    sizes = np.full(n_batches, batch_size, dtype=np.int64)
    sizes[-1] = n - batch_size * (n_batches - 1)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    batch_order = rng.permutation(n_batches) if shuffle else np.arange(n_batches)
    rows = np.concatenate([np.arange(starts[b], starts[b] + sizes[b]) for b in batch_order]) if shuffle else np.arange(n)
    bounds = np.r_[0, np.cumsum(sizes[batch_order])]
    return events[order[rows]], bounds


class EventDataset(IterableDataset):
    """Padded batches of a list of batch files for one rank (an IterableDataset of Batch objects).

    ``len()`` is the number of steps this rank yields (after ``start_step``); ``skipped`` counts the
    events of this rank's share with fewer than ``min_pulses`` pulses; ``stats`` has the rest.
    """

    def __init__(self, data_dir: str | Path, split: str, batch_ids: list[int], selection, features, batch_size: int, *,
                 shuffle: bool = True, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, start_step: int = 0, min_pulses: int = 2, bucket_window: int = 64,
                 max_pulses: int | None = None, geometry=None, block_events: int = 16384):
        if batch_size < 1:
            raise IcezooError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise IcezooError(f"rank {rank} outside 0..{world_size - 1}")
        if not batch_ids:
            raise IcezooError(f"{data_dir}: no batch files to load for split '{split}'")
        self.data_dir, self.split = Path(data_dir), split
        self.selection, self.features = selection, list(features)
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size = rank, world_size
        self.num_workers, self.start_step, self.min_pulses = max(0, num_workers), max(0, start_step), min_pulses
        self.max_pulses = int(max_pulses if max_pulses is not None else selection.max_pulses)
        self.geometry, self.block_events = geometry, block_events
        self._plan(list(dict.fromkeys(int(b) for b in batch_ids)), bucket_window)

    # -- planning (meta only) -------------------------------------------------------------------
    def _plan(self, ids: list[int], window: int) -> None:
        counts = meta_counts(self.data_dir, self.split, ids)
        ws = self.world_size
        if self.shuffle:
            ids = [ids[i] for i in _rng(self.seed, self.epoch, 0x5EED).permutation(len(ids))]
        n_whole = (len(ids) // ws) * ws
        per_rank: list[list[Unit]] = [[] for _ in range(ws)]
        skipped = np.zeros(ws, dtype=np.int64)
        for i, b in enumerate(ids):
            n = counts[b]
            if i < n_whole:
                shares = {i % ws: np.arange(len(n))}
            else:  # split this file by events across every rank
                perm = _rng(self.seed, self.epoch, b, 0x5A4D).permutation(len(n)) if self.shuffle else np.arange(len(n))
                shares = {r: np.sort(perm[r::ws]) for r in range(ws)}
            for r, ev in shares.items():
                ok = n[ev] >= self.min_pulses
                skipped[r] += int((~ok).sum())
                ev = ev[ok]
                unit_seed = (self.seed, self.epoch, b, r if i >= n_whole else ws + 1)
                ordered, bounds = _bucket(ev, np.minimum(n[ev], self.max_pulses), self.batch_size, window,
                                          self.shuffle, _rng(*unit_seed, 0xB0C))
                if len(ordered):
                    per_rank[r].append(Unit(b, ordered, bounds, unit_seed))
        steps = np.array([sum(u.n_batches for u in units) for units in per_rank])
        self.total_steps = int(steps.min())
        self.units = per_rank[self.rank]
        self.skipped = int(skipped[self.rank])
        # worker w reads units w, w+W, ...; the DataLoader returns their batches round-robin
        W = max(1, self.num_workers)
        self.worker_units = [self.units[w::W] for w in range(W)]
        c = np.array([sum(u.n_batches for u in us) for us in self.worker_units])
        rounds = np.concatenate([np.arange(k) for k in c]) if c.sum() else np.zeros(0, np.int64)
        workers = np.repeat(np.arange(W), c)
        seq = workers[np.lexsort((workers, rounds))]
        stop = np.bincount(seq[: self.total_steps], minlength=W)
        start = np.bincount(seq[: min(self.start_step, self.total_steps)], minlength=W)
        self.worker_range = list(zip(start.tolist(), stop.tolist()))
        # the DataLoader starts its round-robin at worker 0: on resume, worker 0 plays the virtual
        # worker whose turn is next, and the others follow in cyclic order (same exhaustion pattern)
        first = int(seq[self.start_step]) if self.start_step < self.total_steps else 0
        self.worker_map = [(i + first) % W for i in range(W)]
        kept_batches = self._events_in()
        self.stats = {
            "files": len({u.batch_id for u in self.units}),
            "events": int(sum(len(u.events) for u in self.units)),
            "skipped_events": self.skipped,
            "dropped_events": int(sum(len(u.events) for u in self.units) - kept_batches),
            "steps": self.total_steps,
            "steps_before_equalising": int(steps[self.rank]),
        }

    def _events_in(self) -> int:
        """Events in the batches of a full pass (steps 0..total_steps) of this rank."""
        total = 0
        for w, units in enumerate(self.worker_units):
            hi, k = self.worker_range[w][1], 0
            for u in units:
                total += int(u.bounds[max(0, min(u.n_batches, hi - k))])
                k += u.n_batches
        return total

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self):
        info = get_worker_info()
        W = max(1, self.num_workers)
        if info is None:
            if self.num_workers > 1:
                raise IcezooError("EventDataset was planned for worker processes: iterate it through make_loader")
            wid = 0
        else:
            if info.num_workers != W:
                raise IcezooError(f"EventDataset planned for {W} workers, DataLoader has {info.num_workers}")
            wid = self.worker_map[info.id]
        lo, hi = self.worker_range[wid]
        k = 0
        for unit in self.worker_units[wid]:
            first, last = k, k + unit.n_batches
            k = last
            if last <= lo:
                continue
            if first >= hi:
                break
            raw = read_raw(self.data_dir, self.split, unit.batch_id, self.geometry)
            yield from self._unit_batches(raw, unit, max(lo, first) - first, min(hi, last) - first)
            del raw

    def _unit_batches(self, raw, unit: Unit, lo: int, hi: int):
        """Batches ``lo:hi`` of a unit, prepared in blocks of about ``block_events`` events; each block
        has its own seeded rng, so a block's batches are the same whether or not earlier ones ran."""
        step = max(1, self.block_events // self.batch_size)
        b = unit.bounds
        for s in range(0, unit.n_batches, step):
            e = min(s + step, unit.n_batches)
            if e <= lo or s >= hi:
                continue
            chunk = raw.gather(unit.events[b[s]:b[e]])
            prep = prepare(chunk, self.selection, self.features, _rng(*unit.seed, 0x5E1, s), self.max_pulses)
            for j in range(max(s, lo), min(e, hi)):
                yield pad_events(prep, int(b[j] - b[s]), int(b[j + 1] - b[s]))


def _identity(x):
    return x


class EventLoader:
    """What :func:`make_loader` returns: iterate for Batch objects; ``len()``, ``skipped``, ``stats``."""

    def __init__(self, dataset: EventDataset):
        self.dataset = dataset

    @property
    def skipped(self) -> int:
        return self.dataset.skipped

    @property
    def stats(self) -> dict:
        return self.dataset.stats

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        ds = self.dataset
        if ds.num_workers == 0:
            return iter(ds)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=ds.num_workers,
                                             collate_fn=_identity, prefetch_factor=2, persistent_workers=False,
                                             # polars runs a thread pool: forked children can deadlock
                                             multiprocessing_context="spawn")
        return iter(loader)


def make_loader(data_dir, split, batch_ids, selection, features, batch_size, *, shuffle=True, seed=0, epoch=0,
                rank=0, world_size=1, num_workers=0, start_step=0, min_pulses=2, **kwargs) -> EventLoader:
    """Padded, length-bucketed batches of ``batch_ids`` for one rank, deterministic for (seed, epoch).

    See the module docstring for sharding, equal step counts, skipping and ``start_step``. Extra
    keywords go to :class:`EventDataset` (``bucket_window``, ``max_pulses``, ``geometry``, ``block_events``).
    """
    return EventLoader(EventDataset(data_dir, split, batch_ids, selection, features, batch_size, shuffle=shuffle,
                                    seed=seed, epoch=epoch, rank=rank, world_size=world_size, num_workers=num_workers,
                                    start_step=start_step, min_pulses=min_pulses, **kwargs))
