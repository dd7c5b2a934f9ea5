"""The step plan: which files each epoch trains on, how many loader and optimizer steps, the lr schedule."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from icezoo.core.errors import IcezooError
from icezoo.data.formats import open_source
from icezoo.data.io import cycle_batches, list_batches, meta_batch_ids, require_batch_files, split_batches
from icezoo.engine.default_data import default_dataset, read_split
from icezoo.engine.device import Distributed
from icezoo.engine import loaders


def resolve_data(data: str | None, train_spec: str, val_spec: str | None, log, dist: Distributed,
                 split: str = "train"):
    """(data_dir, train_ids, val_ids, train_spec, val_spec) under the validation protocol, from the files
    of ``split`` ("test": events without truth, for pretraining; the dataset's own validation files
    are named for its training split only)."""
    if data is None:
        data_dir = dist.on_main(lambda: default_dataset(log=log)).path  # rank 0 builds it; its failure stops all
    else:
        data_dir = Path(data)
        if not data_dir.exists():
            raise IcezooError(f"--data {data}: no such directory")
    stored = read_split(data_dir) if split == "train" else None
    if stored is not None and val_spec is None:
        val_spec = stored.val_spec
    # the files on disk and those the meta names: a batch the meta names without its file is an error
    available = sorted(set(list_batches(data_dir, split)) | set(meta_batch_ids(data_dir, split)))
    if len(available) < 2 and split != "train":
        what = "no batch files" if not available else "one batch file"
        raise IcezooError(f"{data_dir}: the {split} split has {what}; training on it holds files out for "
                          f"validation, so it needs 2 or more (icezoo simulate --test --events-per-batch N)")
    train_ids, val_ids = split_batches(available, train_spec, val_spec)
    require_batch_files(data_dir, split, [*train_ids, *val_ids])
    if not train_ids:
        raise IcezooError(f"{data_dir}: no training batch files for '{train_spec}'")
    if not val_ids:
        raise IcezooError(f"{data_dir}: no validation batch files (val_batches = {val_spec!r}); "
                          f"the engine needs a fixed validation split")
    return data_dir, list(train_ids), list(val_ids), train_spec, val_spec


@dataclass
class StepPlan:
    """Loader steps of each epoch (counted from the meta alone), the run's total, and the optimizer steps."""

    epoch_steps: list[int]
    total_steps: int
    accumulate: int

    @property
    def starts(self) -> list[int]:
        """The global step at which each epoch starts (one more entry: the end of the last)."""
        out = [0]
        for n in self.epoch_steps:
            out.append(out[-1] + n)
        return out

    def epoch_of(self, step: int) -> int:
        return bisect.bisect_right(self.starts, step) - 1

    def epoch_end(self, epoch: int) -> int:
        return min(self.starts[epoch + 1], self.total_steps)

    def at_boundary(self, step: int, epoch: int) -> bool:
        """After loader step ``step``: does an optimizer step (end of an accumulation window) follow?"""
        return (step - self.starts[epoch]) % self.accumulate == 0 or step == self.epoch_end(epoch)

    @property
    def optimizer_steps(self) -> int:
        starts = self.starts
        return sum(math.ceil(max(0, min(n, self.total_steps - starts[e])) / self.accumulate)
                   for e, n in enumerate(self.epoch_steps))

    def per_epoch_text(self) -> str:
        steps = self.epoch_steps
        return f"{steps[0]}/epoch" if len(set(steps)) == 1 else f"{min(steps)}-{max(steps)}/epoch"


def fraction_events(fraction: float | None, data_dir, train_ids: list[int], split: str = "train",
                    keep: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray] | None:
    """``train.fraction``: of each training file, the events whose id hashes (Fibonacci hashing, top 24
    bits) below ``fraction``: a fixed subset whatever the run or seed, nested across fractions; within
    ``keep`` (the kappa filter) when given. None (all events) without a fraction below 1."""
    if fraction is None or fraction >= 1:
        return keep
    src = open_source(data_dir)
    out = {}
    for b in train_ids:
        ids = np.asarray(src.meta(split, b)["event_id"], dtype=np.int64)
        with np.errstate(over="ignore"):
            h = (ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
        chosen = ids[h < np.uint64(int(fraction * 2**24))]
        out[int(b)] = chosen if keep is None else np.intersect1d(chosen, keep.get(int(b), np.zeros(0, np.int64)))
    return out


def epoch_files(ts, train_ids: list[int], epoch: int) -> list[int]:
    """The training files of an epoch: all of them, or the next ``files_per_epoch`` round-robin."""
    if ts.files_per_epoch:
        return cycle_batches(train_ids, epoch, ts.files_per_epoch)
    return train_ids


def make_plan(ts, data_dir, train_ids, model, seed: int, dist: Distributed, workers: int,
              keep_events=None, split: str = "train") -> StepPlan:
    """Count the steps of ``ts.epochs`` epochs (fractions allowed), capped at ``ts.max_steps``."""
    epoch_steps: list[int] = []

    def plan_epoch() -> None:
        e = len(epoch_steps)
        n = len(loaders.make_train_loader(data_dir, epoch_files(ts, train_ids, e), model, ts.batch_size, seed, e, dist,
                                          workers, keep_events=keep_events, split=split))
        if n == 0:
            raise IcezooError(f"{data_dir}: the training batches of epoch {e} hold no usable events")
        epoch_steps.append(n)

    for _ in range(math.ceil(ts.epochs)):
        plan_epoch()
        if ts.max_steps and sum(epoch_steps) >= ts.max_steps:
            break  # the cap is reached within these epochs: the later ones are never trained
    whole, frac = int(ts.epochs), ts.epochs - int(ts.epochs)
    # after a stop at the cap fewer epochs are planned: their sum already reaches max_steps (min below)
    total_steps = sum(epoch_steps[:whole]) + (math.ceil(frac * epoch_steps[whole])
                                              if frac > 0 and whole < len(epoch_steps) else 0)
    total_steps = max(1, total_steps)
    if ts.max_steps:  # a cap: --max-steps never makes a run longer than its epochs
        total_steps = min(total_steps, ts.max_steps)
    return StepPlan(epoch_steps, total_steps, ts.accumulate)


def lr_factor(schedule: str, warmup: float, total: int):
    """Multiplier of the base lr at optimizer step i (0-based), for LambdaLR."""
    total = max(1, total)
    w = int(round(warmup * total))

    def f(i: int) -> float:
        if w and i < w:
            start = 1.0 / 25.0 if schedule == "onecycle" else 0.0
            return start + (1.0 - start) * (i + 1) / w
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (i - w) / max(1, total - w))
        floor = 1e-4 if schedule == "onecycle" else 0.0
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f
