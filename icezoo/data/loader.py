"""Loaders: batch files -> padded :class:`~icezoo.core.Batch` objects, bucketed, sharded, resumable.

The plan of an epoch (which rank and worker reads which file, how many batches each yields) comes
from one lazy aggregation over the meta (events and kept events per file; no per-event array for
whole files), so that

* every rank gets the same number of steps (the longer ranks drop their last batches, counted in
  ``stats["dropped_events"]``);
* events with fewer than ``min_pulses`` pulses are skipped and counted (``.skipped``) before any
  batch file is read; so are, with ``keep_events`` (``{batch_id: event ids}``, e.g. the kappa
  filter of EXP_33_FT_3_KAPPA), the events of a file that its list does not name;
* ``start_step`` skips batches exactly: the batches after it are those of a full pass;
* only the batch files in flight (one per worker) are in memory, whatever the dataset size.

Sharding: with at least as many files as ranks, whole files go round-robin to the ranks (in a
seeded order); the files left over (``len(files) % world_size``), and every file when there are
fewer files than ranks, are split by events (a seeded permutation, every ``world_size``-th event
per rank). Within a unit (a file, or a rank's share of one) the kept events in file order are cut
into blocks of ``block_events`` (16384) that are visited in a seeded order; a block's events are
shuffled, sorted by pulse count within windows of ``bucket_window`` batches and cut into batches,
whose order is shuffled again, so a batch holds similar pulse counts and needs little padding.
Each block is selected and featurised at once (vectorised) with its own seeds, on a lazy chunk: the
selection reads only what it needs (aux_first: offsets and the auxiliary flags of long events) and
every other column is gathered once, for the kept pulses. With ``truth_columns`` (the tasks' columns,
:mod:`icezoo.data.truth`) each batch carries them in ``Batch.truth``; without, no truth is read. With
``num_workers`` > 0, worker ``w`` reads units ``w, w+W, ...`` and the torch DataLoader returns
their batches round-robin; the step sequence depends on ``num_workers`` (resume with the same value).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from icezoo.core.errors import IcezooError
from icezoo.data.formats import open_source
from icezoo.data.formats.kaggle import KaggleSource
from icezoo.data.prepare import pad_events, prepare
from icezoo.data.sensors import pad_sensor_events, prepare_sensors, sensor_level


@dataclass
class Unit:
    """One batch file for one rank: the whole file (``shard`` None) or the rank's share of its events."""

    batch_id: int
    shard: int | None
    kept: int  # events with at least min_pulses pulses (and named by keep_events) in this unit
    n_batches: int


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def _batch_sizes(m: int, batch_size: int, rng: np.random.Generator | None) -> np.ndarray:
    """Sizes of the batches cut from ``m`` events, in yield order (the partial one placed by ``rng``)."""
    sizes = np.full(m // batch_size, batch_size, dtype=np.int64)
    if m % batch_size:
        sizes = np.r_[sizes, m % batch_size]
    return sizes[rng.permutation(len(sizes))] if rng is not None else sizes


class EventDataset(IterableDataset):
    """Padded batches of a list of batch files for one rank (an IterableDataset of Batch objects).

    ``len()`` is the number of steps this rank yields (after ``start_step``); ``skipped`` counts the
    events of this rank's share with fewer than ``min_pulses`` pulses; ``stats`` has the rest.

    Within a unit (a file or a rank's share of one) the kept events, in file order, are cut into
    blocks of ``block_events``; the blocks are visited in a seeded order, and each is read with
    views of the file's columns, selected and featurised at once, then cut into length-bucketed
    batches. Each block has its own seeds, so skipping blocks (``start_step``) changes nothing after.
    """

    def __init__(self, data_dir: str | Path, split: str, batch_ids: list[int], selection, features, batch_size: int, *,
                 shuffle: bool = True, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, start_step: int = 0, min_pulses: int = 2, bucket_window: int = 64,
                 max_pulses: int | None = None, geometry=None, block_events: int = 16384,
                 keep_events: dict[int, np.ndarray] | None = None, truth_columns: tuple[str, ...] = ()):
        if batch_size < 1:
            raise IcezooError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise IcezooError(f"rank {rank} outside 0..{world_size - 1}")
        if not batch_ids:
            raise IcezooError(f"{data_dir}: no batch files to load for split '{split}'")
        self.data_dir, self.split = Path(data_dir), split
        # any format (pickled to the workers with its options); a missing folder fails as before, per file
        self.source = open_source(data_dir) if Path(data_dir).exists() else KaggleSource(data_dir)
        self.selection, self.features = selection, list(features)
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size = rank, world_size
        self.num_workers, self.start_step, self.min_pulses = max(0, num_workers), max(0, start_step), min_pulses
        self.max_pulses = int(max_pulses if max_pulses is not None else selection.max_pulses)
        self.geometry, self.window = geometry, max(1, int(bucket_window))
        self.block = max(batch_size, (int(block_events) // batch_size) * batch_size)  # whole batches per block
        self.keep = None if keep_events is None else {int(b): np.asarray(v, np.int64) for b, v in keep_events.items()}
        self.truth_columns = tuple(truth_columns)
        # a selection that keeps whole sensors: sensor tokens plus every pulse packed (icezoo.data.sensors)
        self._prepare, self._pad = ((prepare_sensors, pad_sensor_events) if sensor_level(selection)
                                    else (prepare, pad_events))
        self._plan(list(dict.fromkeys(int(b) for b in batch_ids)))

    # -- planning (meta only) -------------------------------------------------------------------
    def _shard(self, batch_id: int, n_events: int, r: int) -> np.ndarray:
        """Events (file order) of rank ``r``'s share of a file split by events."""
        perm = _rng(self.seed, self.epoch, batch_id, 0x5A4D).permutation(n_events) if self.shuffle else np.arange(n_events)
        return np.sort(perm[r::self.world_size])

    def _seed(self, unit: Unit, *more: int) -> np.random.Generator:
        return _rng(self.seed, self.epoch, unit.batch_id, -1 if unit.shard is None else unit.shard, *more)

    def _kept(self, batch_id: int, n_pulses: np.ndarray, event_id: np.ndarray | None) -> np.ndarray:
        """Which events (of those given) the loader uses: enough pulses, and named by keep_events."""
        mask = n_pulses >= self.min_pulses
        if self.keep is not None:
            mask &= np.isin(event_id, self.keep.get(int(batch_id), np.zeros(0, np.int64)))
        return mask

    def _n_batches(self, kept: int) -> int:
        full, rem = divmod(kept, self.block)
        return full * (self.block // self.batch_size) + -(-rem // self.batch_size)

    def _plan(self, ids: list[int]) -> None:
        src = self.source
        self._check_exist(ids)  # fail before training starts, not hours into an epoch
        if self.keep is None:
            counts = src.counts(self.split, ids, self.min_pulses)
        else:  # per-event lists: the meta of each file
            counts = {}
            for b in ids:
                meta = src.meta(self.split, b)
                n = meta["last_pulse_index"] - meta["first_pulse_index"] + 1
                counts[b] = (len(n), int(self._kept(b, n, meta["event_id"]).sum()))
        ws = self.world_size
        if self.shuffle:
            ids = [ids[i] for i in _rng(self.seed, self.epoch, 0x5EED).permutation(len(ids))]
        n_whole = (len(ids) // ws) * ws
        per_rank: list[list[Unit]] = [[] for _ in range(ws)]
        skipped = np.zeros(ws, dtype=np.int64)
        for i, b in enumerate(ids):
            events, kept = counts[b]
            if i < n_whole:  # whole files round-robin
                shares = [(i % ws, None, kept, events - kept)]
            else:  # the files left over are split by events across every rank
                n = src.pulse_counts(self.split, b)
                eid = src.meta(self.split, b)["event_id"] if self.keep is not None else None
                shares = []
                for r in range(ws):
                    ev = self._shard(b, len(n), r)
                    k = int(self._kept(b, n[ev], None if eid is None else eid[ev]).sum())
                    shares.append((r, r, k, len(ev) - k))
            for r, shard, k, skip in shares:
                skipped[r] += skip
                if k:
                    per_rank[r].append(Unit(b, shard, k, self._n_batches(k)))
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
        self._steps_before = int(steps[self.rank])

    def _check_exist(self, ids: list[int]) -> None:
        if self.source.format == "kaggle":  # a missing file, named as before
            from icezoo.data.meta import batch_path

            for b in ids:
                if not batch_path(self.data_dir, self.split, b).is_file():
                    raise IcezooError(f"{batch_path(self.data_dir, self.split, b)}: batch file not found")
        else:
            self.source.check_batches(self.split, ids)

    def _blocks(self, unit: Unit):
        """(block index, number of events) of a unit's blocks, in visiting order."""
        n_blocks = -(-unit.kept // self.block)
        order = self._seed(unit, 0xB10C).permutation(n_blocks) if self.shuffle else np.arange(n_blocks)
        return [(int(k), min(self.block, unit.kept - int(k) * self.block)) for k in order]

    def _unit_batch_sizes(self, unit: Unit) -> np.ndarray:
        return np.concatenate([_batch_sizes(m, self.batch_size, self._seed(unit, 0xBA7, k) if self.shuffle else None)
                               for k, m in self._blocks(unit)])

    @property
    def stats(self) -> dict:
        """files, events (kept), skipped_events, dropped_events (cut to equalise steps), steps."""
        kept = sum(u.kept for u in self.units)
        yielded = 0
        for w, units in enumerate(self.worker_units):
            hi, k = self.worker_range[w][1], 0
            for u in units:
                take = max(0, min(u.n_batches, hi - k))
                yielded += int(self._unit_batch_sizes(u)[:take].sum()) if take < u.n_batches else u.kept
                k += u.n_batches
        return {"files": len({u.batch_id for u in self.units}), "events": kept, "skipped_events": self.skipped,
                "dropped_events": kept - yielded, "steps": self.total_steps,
                "steps_before_equalising": self._steps_before}

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
        buffers: dict = {}  # prepare's output memory, reused block after block (the batches are copies)
        for unit in self.worker_units[wid]:
            first, last = k, k + unit.n_batches
            k = last
            if last <= lo:
                continue
            if first >= hi:
                break
            raw = self.source.read_raw(self.split, unit.batch_id, self.geometry)
            truth = self._truth(raw, unit.batch_id) if self.truth_columns else None
            yield from self._unit_batches(raw, unit, max(lo, first) - first, min(hi, last) - first, buffers, truth)
            del raw

    def _truth(self, raw, batch_id: int) -> dict[str, np.ndarray]:
        """The task columns of every event of ``raw`` (its own truth where the format keeps it with the
        pulses, GraphNeT's; else the source's truth table, e.g. the simulator's train_truth.parquet)."""
        from icezoo.data.truth import align, task_truth

        where = f"{self.data_dir} ({self.split}, batch {batch_id})"
        if raw.truth is not None:
            return task_truth(raw.truth, self.truth_columns, where)
        table = self.source.truth(self.split, [batch_id])
        if table is None:
            raise IcezooError(f"{where}: no truth beyond the direction, but the pipeline's tasks need "
                              f"{', '.join(self.truth_columns)}")
        return task_truth(align(table, raw.event_id), self.truth_columns, where)

    def _unit_batches(self, raw, unit: Unit, lo: int, hi: int, buffers: dict | None = None, truth=None):
        """Batches ``lo:hi`` of a unit, block by block (blocks wholly outside are not prepared)."""
        n = raw.n_pulses
        ev = np.arange(raw.num_events) if unit.shard is None else self._shard(unit.batch_id, raw.num_events, unit.shard)
        ev = ev[self._kept(unit.batch_id, n[ev], raw.event_id[ev])]
        if len(ev) != unit.kept:
            raise IcezooError(f"{raw.path}: the meta changed while loading ({len(ev)} events kept, planned {unit.kept})")
        j = 0
        for k, m in self._blocks(unit):
            sizes = _batch_sizes(m, self.batch_size, self._seed(unit, 0xBA7, k) if self.shuffle else None)
            j0, j = j, j + len(sizes)
            if j <= lo or j0 >= hi:
                continue
            block_ev = ev[k * self.block:k * self.block + m]
            bounds = np.r_[0, np.cumsum(sizes)]
            order = self._bucket(n[block_ev], sizes, unit, k)
            # events in yield order, each batch's events in file order: the gather (compact raw columns)
            # does the reordering, and padding then reads contiguous rows
            order = order[np.lexsort((order, np.repeat(np.arange(len(sizes)), sizes)))]
            chunk = raw.gather_lazy(block_ev[order])  # columns gathered when (and where) they are read
            prep = self._prepare(chunk, self.selection, self.features, self._seed(unit, 0x5E1, k), self.max_pulses,
                                 buffers=buffers)
            for i in range(max(lo, j0) - j0, min(hi, j) - j0):
                batch = self._pad(prep, slice(int(bounds[i]), int(bounds[i + 1])))
                if truth is not None:  # the tasks' columns of these events (raw rows, in batch order)
                    rows = block_ev[order][int(bounds[i]):int(bounds[i + 1])]
                    batch.truth = {c: torch.from_numpy(v[rows].astype(np.float32)) for c, v in truth.items()}
                yield batch

    def _bucket(self, n: np.ndarray, sizes: np.ndarray, unit: Unit, k: int) -> np.ndarray:
        """Block positions in yield order: shuffled, sorted by pulse count within windows of batches,
        cut into batches of ``batch_size`` which are then placed in the order ``sizes`` was drawn."""
        m = len(n)
        perm = self._seed(unit, 0xB0C, k).permutation(m) if self.shuffle else np.arange(m)
        win = np.arange(m) // (self.batch_size * self.window)
        ordered = perm[np.lexsort((np.minimum(n[perm], self.max_pulses), win))]
        if not self.shuffle:
            return ordered
        # the batches cut in sorted order are full except the last; sizes lists them in yield order
        # (full ones, then the partial one, permuted by the same rng): map them back
        n_full = m // self.batch_size
        cut = [ordered[i * self.batch_size:(i + 1) * self.batch_size] for i in range(n_full)]
        if m % self.batch_size:
            cut.append(ordered[n_full * self.batch_size:])
        perm_b = self._seed(unit, 0xBA7, k).permutation(len(cut))
        return np.concatenate([cut[i] for i in perm_b]) if cut else ordered


def _identity(x):
    return x


class EventLoader:
    """What :func:`make_loader` returns: iterate for Batch objects; ``len()``, ``skipped``, ``stats``."""

    def __init__(self, dataset: EventDataset, pin_memory: bool = False):
        self.dataset = dataset
        self.pin_memory = pin_memory

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
            return (b.pin_memory() for b in ds) if self.pin_memory else iter(ds)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=ds.num_workers,
                                             collate_fn=_identity, prefetch_factor=2, persistent_workers=False,
                                             pin_memory=self.pin_memory,
                                             # polars runs a thread pool: forked children can deadlock
                                             multiprocessing_context="spawn")
        return iter(loader)


def make_loader(data_dir, split, batch_ids, selection, features, batch_size, *, shuffle=True, seed=0, epoch=0,
                rank=0, world_size=1, num_workers=0, start_step=0, min_pulses=2, pin_memory=False,
                **kwargs) -> EventLoader:
    """Padded, length-bucketed batches of ``batch_ids`` for one rank, deterministic for (seed, epoch).

    See the module docstring for sharding, equal step counts, skipping and ``start_step``.
    ``pin_memory``: batches come in page-locked memory (for asynchronous copies to a GPU). Extra
    keywords go to :class:`EventDataset` (``bucket_window``, ``max_pulses``, ``geometry``, ``block_events``).
    """
    return EventLoader(EventDataset(data_dir, split, batch_ids, selection, features, batch_size, shuffle=shuffle,
                                    seed=seed, epoch=epoch, rank=rank, world_size=world_size, num_workers=num_workers,
                                    start_step=start_step, min_pulses=min_pulses, **kwargs), pin_memory=pin_memory)
