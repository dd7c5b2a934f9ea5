"""The engine's data loaders: training (sharded per rank, resumable mid-epoch) and evaluation (in order)."""

from __future__ import annotations

from icezoo.data.detector import check_needs
from icezoo.data.formats import foreign_source
from icezoo.data.loader import make_loader


def make_train_loader(data_dir, ids, model, batch_size, seed, epoch, dist, workers, start_step=0, shuffle=True,
                      keep_events=None, pin_memory=False, split="train"):
    """This rank's share of an epoch over the batch files ``ids`` (of ``split``), from loader step
    ``start_step``; ``keep_events`` ({batch_id: event ids}) leaves out the events it does not name (the
    kappa filter); ``pin_memory``: batches in page-locked memory, for asynchronous copies to a GPU."""
    return make_loader(data_dir, split, ids, model.selection, model.features, batch_size, shuffle=shuffle,
                       seed=seed, epoch=epoch, rank=dist.rank, world_size=dist.world_size, num_workers=workers,
                       start_step=start_step, keep_events=keep_events, pin_memory=pin_memory,
                       truth_columns=getattr(model, "truth_columns", tuple)())


def make_eval_loader(data_dir, split, ids, model, batch_size, workers=0, min_pulses=2, geometry=None,
                     truth_columns=()):
    """Every event of the batch files ``ids`` with at least ``min_pulses`` pulses, in file order;
    ``geometry`` replaces the DOM positions (the test-time rotations); ``truth_columns`` (e.g. the
    model's ``truth_columns()``, for scoring its tasks) come in ``Batch.truth``."""
    return make_loader(data_dir, split, ids, model.selection, model.features, batch_size, shuffle=False, seed=0,
                       epoch=0, rank=0, world_size=1, num_workers=workers, start_step=0, min_pulses=min_pulses,
                       geometry=geometry, truth_columns=truth_columns)


def check_detector(model, data_dir) -> None:
    """Refuse, in one line, a pipeline whose components need what the data's detector lacks (e.g. a
    sensor embedding on IceCube Upgrade sensors); Kaggle-layout data is IceCube-86."""
    src = foreign_source(data_dir)
    if src is None:
        return
    parts = [model.selection, *model.features, model.embedder, model.backbone, *model.poolers, model.head,
             *model.losses]
    if any(getattr(p, "needs", ()) for p in parts):
        check_needs(parts, src.detector(), data_dir)


def check_truth(model, data_dir, split: str, ids) -> None:
    """Refuse, in one line before any training, a task whose truth column the data lacks (naming the
    task, the column and the columns that exist); nothing to check without tasks."""
    if not getattr(model, "tasks", None):  # a pretraining model has no tasks
        return
    from icezoo.data.formats import open_source
    from icezoo.data.truth import available
    from icezoo.core.errors import IcezooError

    table = open_source(data_dir).truth(split, list(ids)[:1])
    have = available(table or {})
    for name, task in model.tasks.items():
        for column in type(task).columns(task.config):
            if column not in have:
                raise IcezooError(f"pipelines.{model.config.name}.tasks: task '{name}' needs truth column '{column}', "
                                  f"which {data_dir} lacks (truth columns: {', '.join(have) or 'none'})")
