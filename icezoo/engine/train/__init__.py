"""The training loop behind ``icezoo train``, as a small package.

One function, :func:`train`, does a fresh run, a fine-tune (``init_from``) or an exact resume:

* :mod:`.options`: the flags (:class:`TrainOptions`), the pipeline they name, the reproducing command;
* :mod:`.plan`: the data split and the step plan (loader steps per epoch, optimizer steps, lr schedule);
* :mod:`.state`: :class:`TrainState`, the one place that knows what a checkpoint holds and restores;
* :mod:`.guard`: the NaN guard (skip, count, fall back from bf16/fp16 to fp32);
* :mod:`.loop`: the loop itself.

Precision fp32 / bf16 / fp16 (autocast; losses always fp32, outside autocast, in core.Loss; fp16
uses a gradient scaler), gradient accumulation, onecycle / cosine / constant schedules (per
optimizer step, with warmup), gradient clipping, optional EMA of the weights; validation on the
fixed validation split at every epoch end (``best.pt`` keeps the weights best on validation,
``last.pt`` the full state); checkpoints every ``--save-every-steps`` loader steps, at every epoch
end, at the end and on Ctrl-C; ``--resume`` ends with the weights of an uninterrupted run. DDP under
torchrun (``WORLD_SIZE > 1``): gloo on CPU, nccl on GPUs; each rank reads its shard, rank 0
validates and writes.
"""

from icezoo.engine.train.loop import InterruptedRun, train
from icezoo.engine.train.options import TrainOptions
from icezoo.engine.train.state import TrainState

__all__ = ["train", "TrainOptions", "TrainState", "InterruptedRun"]
