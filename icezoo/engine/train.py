"""The training loop behind ``icezoo train``.

One function, :func:`train`, does a fresh run, a fine-tune (``init_from``) or an exact resume:

* precision fp32 / bf16 / fp16 (autocast; losses always fp32, outside autocast, in core.Loss;
  fp16 uses a gradient scaler), gradient accumulation, onecycle / cosine / constant schedules
  (per optimizer step, with warmup), gradient clipping, optional EMA of the weights;
* NaN guard: a non-finite loss or gradient skips the optimizer step and is counted; after
  ``train.nan_fallback_after`` skipped steps a bf16/fp16 run falls back to fp32 by itself; all of
  it goes to the log and the ledger;
* validation on the fixed validation split at every epoch end; ``best.pt`` keeps the weights best
  on validation, ``last.pt`` the full state;
* checkpoints (core ``save_checkpoint``: temporary name + rename; plain data and tensors only)
  every ``--save-every-steps`` loader steps, at every epoch end, at the end and on Ctrl-C;
  ``--resume`` restores model, optimizer, scheduler, scaler, EMA, sampler position and the
  torch / numpy RNG states, so a resumed run ends with the weights of an uninterrupted one;
* DDP under torchrun (``WORLD_SIZE > 1``): gloo on CPU, nccl on GPUs; each rank reads its shard,
  rank 0 validates and writes.
"""

from __future__ import annotations

import bisect
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from icezoo.core.errors import IcezooError
from icezoo.engine import runs as R

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class TrainOptions:
    """What the ``icezoo train`` flags say (None: the pipeline's own ``train`` table decides)."""

    pipeline: str | None = None
    pipeline_file: str | None = None
    data: str | None = None
    batches: str | None = None
    epochs: float | None = None
    batch_size: int | None = None
    max_pulses: int | None = None
    precision: str | None = None
    accumulate: int | None = None
    init_from: str | None = None
    resume: str | None = None
    save_every_steps: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    workers: int = 0
    runs_dir: str = "runs"
    seed: int = 0
    max_steps: int | None = None
    progress: bool = True
    device: str | None = None


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed() -> Distributed:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws <= 1:
        return Distributed()
    import torch
    import torch.distributed as td

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not td.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        td.init_process_group(backend)
    return Distributed(rank=td.get_rank(), world_size=td.get_world_size(), local_rank=local)


def pick_device(dist: Distributed | None = None, want: str | None = None):
    """``--device want`` (a bad name, or a GPU this machine lacks, is one IcezooError), else this
    rank's GPU (any GPU without ``dist``) when there is one, else the CPU."""
    import torch

    if want:
        try:
            device = torch.device(want)
        except (RuntimeError, ValueError):
            raise IcezooError(f"--device {want}: not a device (expected cpu, cuda or cuda:N)") from None
        if device.type == "cuda":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if n == 0:
                raise IcezooError(f"--device {want}: no CUDA GPU available here (use --device cpu)")
            if device.index is not None and device.index >= n:
                raise IcezooError(f"--device {want}: this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank) if dist is not None else torch.device("cuda")
    return torch.device("cpu")


# ------------------------------------------------------------------------------ configs
def config_from_options(opts: TrainOptions):
    """The pipeline named by the flags, with ``--set`` and the train flags applied."""
    from icezoo.zoo import pipeline_config

    name = opts.pipeline
    if name is None and opts.pipeline_file is None:
        name = "default"
    config = pipeline_config(name, opts.pipeline_file)
    over = dict(opts.overrides)
    for key, value in (("epochs", opts.epochs), ("batch_size", opts.batch_size), ("precision", opts.precision),
                       ("accumulate", opts.accumulate), ("batches", opts.batches), ("max_steps", opts.max_steps)):
        if value is not None:
            over[f"train.{key}"] = value
    if opts.max_pulses is not None:
        over["selection.max_pulses"] = opts.max_pulses
    if opts.precision is not None and opts.precision not in PRECISIONS:
        raise IcezooError(f"--precision {opts.precision}: expected one of {', '.join(PRECISIONS)}")
    return config.with_overrides(over) if over else config


def checkpoint_pipeline_table(config) -> dict[str, Any]:
    return {"name": config.name, **config.to_table()}


def config_from_checkpoint(ckpt: dict[str, Any], where: str):
    """Rebuild the PipelineConfig a checkpoint was trained with; one-line error when it cannot."""
    from icezoo.core.config import pipeline_from_table

    table = dict(ckpt["pipeline"])
    name = str(table.pop("name", "checkpoint"))
    try:
        return pipeline_from_table(name, table)
    except IcezooError as exc:
        raise IcezooError(f"{where}: incompatible checkpoint: {exc}") from None


def model_from_checkpoint(path: Path, map_location="cpu"):
    """(config, model, checkpoint) with the weights loaded strictly; IcezooError if anything differs."""
    from icezoo.core.checkpoint import load_checkpoint
    from icezoo.zoo import build

    ckpt = load_checkpoint(path, map_location=map_location)
    config = config_from_checkpoint(ckpt, str(path))
    try:
        model = build(config)
    except IcezooError as exc:
        raise IcezooError(f"{path}: incompatible checkpoint (pipeline {config.name}): {exc}") from None
    load_strict(model, ckpt["state_dict"], str(path))
    return config, model, ckpt


def load_strict(model, state: dict, where: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad:
            k = bad[0]
            parts.append(f"{len(bad)} of another shape (e.g. {k}: {list(state[k].shape)} vs {list(own[k].shape)})")
        raise IcezooError(f"{where}: incompatible checkpoint: its tensors do not fit the pipeline: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def load_matching(model, state: dict) -> dict[str, Any]:
    """Load the tensors whose name and shape match; report by name what did not."""
    import torch

    own = model.state_dict()
    loaded, shape_mismatch = [], []
    new_state = {}
    for k, v in state.items():
        if k in own:
            if tuple(own[k].shape) == tuple(v.shape):
                new_state[k] = v
                loaded.append(k)
            else:
                shape_mismatch.append({"name": k, "checkpoint": list(v.shape), "model": list(own[k].shape)})
    missing = [k for k in own if k not in state]
    unused = [k for k in state if k not in own]
    with torch.no_grad():
        model.load_state_dict(new_state, strict=False)
    return {"loaded": len(loaded), "total": len(own), "shape_mismatch": shape_mismatch,
            "missing_in_checkpoint": missing, "unused_from_checkpoint": unused}


def init_report_text(source: str, rep: dict[str, Any]) -> str:
    lines = [f"init from {source}: loaded {rep['loaded']}/{rep['total']} tensors"]
    for m in rep["shape_mismatch"]:
        lines.append(f"  not loaded (shape): {m['name']} {m['checkpoint']} in checkpoint vs {m['model']} here")
    for k in rep["missing_in_checkpoint"]:
        lines.append(f"  not in checkpoint (kept fresh): {k}")
    for k in rep["unused_from_checkpoint"]:
        lines.append(f"  unused from checkpoint: {k}")
    return "\n".join(lines)


def init_source(spec: str, runs_dir: Path) -> Path:
    """A checkpoint file, a run directory or a run name -> the checkpoint to initialise from."""
    path = Path(spec)
    if path.is_file():
        return path
    run = R.resolve_run(spec, runs_dir)
    for rel in (R.BEST, R.LAST):
        if (run / rel).is_file():
            return run / rel
    raise IcezooError(f"{run}: no checkpoint to initialise from")


# ------------------------------------------------------------------------------ schedule
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


# ------------------------------------------------------------------------------ RNG states
def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": _py_state_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def _py_state_plain(st):
    version, internal, gauss = st
    return {"version": int(version), "internal": [int(i) for i in internal],
            "gauss": None if gauss is None else float(gauss)}


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state.get("python")
    if p:
        random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------ data
def resolve_data(data: str | None, train_spec: str, val_spec: str | None, log, dist: Distributed):
    """(data_dir, train_ids, val_ids, train_spec, val_spec) under the validation protocol."""
    from icezoo.data.io import list_batches, split_batches
    from icezoo.engine.default_data import default_dataset, read_split

    if data is None:
        if dist.main:
            dd = default_dataset(log=log)
        if dist.enabled:
            import torch.distributed as td

            td.barrier()
            if not dist.main:
                dd = default_dataset(log=None)
        data_dir = dd.path
    else:
        data_dir = Path(data)
        if not data_dir.is_dir():
            raise IcezooError(f"--data {data}: no such directory")
    split = read_split(data_dir)
    if split is not None and val_spec is None:
        val_spec = split.val_spec
    available = list_batches(data_dir, "train")
    train_ids, val_ids = split_batches(available, train_spec, val_spec)
    if not train_ids:
        raise IcezooError(f"{data_dir}: no training batch files for '{train_spec}'")
    if not val_ids:
        raise IcezooError(f"{data_dir}: no validation batch files (val_batches = {val_spec!r}); "
                          f"the engine needs a fixed validation split")
    return data_dir, list(train_ids), list(val_ids), train_spec, val_spec


def make_train_loader(data_dir, ids, model, batch_size, seed, epoch, dist, workers, start_step=0, shuffle=True):
    from icezoo.data.loader import make_loader

    return make_loader(data_dir, "train", ids, model.selection, model.features, batch_size, shuffle=shuffle,
                       seed=seed, epoch=epoch, rank=dist.rank, world_size=dist.world_size, num_workers=workers,
                       start_step=start_step)


def make_eval_loader(data_dir, split, ids, model, batch_size, workers=0, min_pulses=2):
    from icezoo.data.loader import make_loader

    return make_loader(data_dir, split, ids, model.selection, model.features, batch_size, shuffle=False, seed=0,
                       epoch=0, rank=0, world_size=1, num_workers=workers, start_step=0, min_pulses=min_pulses)


def canonical_command(opts: TrainOptions, config_name: str) -> str:
    """The exact ``icezoo train`` command that reproduces the run (flags that were given)."""
    import shlex

    parts = ["icezoo", "train"]
    if opts.pipeline_file:
        parts += ["--pipeline-file", str(opts.pipeline_file)]
        if opts.pipeline:
            parts += ["--pipeline", opts.pipeline]
    elif opts.pipeline:
        parts += ["--pipeline", opts.pipeline]
    for flag, value in (("--data", opts.data), ("--batches", opts.batches), ("--epochs", opts.epochs),
                        ("--batch-size", opts.batch_size), ("--max-pulses", opts.max_pulses),
                        ("--precision", opts.precision), ("--accumulate", opts.accumulate),
                        ("--init-from", opts.init_from), ("--save-every-steps", opts.save_every_steps),
                        ("--max-steps", opts.max_steps)):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if opts.seed:
        parts += ["--seed", str(opts.seed)]
    if opts.workers:  # the loader's step sequence depends on the number of workers
        parts += ["--workers", str(opts.workers)]
    for key, value in opts.overrides.items():
        from icezoo.core.tomlwrite import toml_value

        text = value if isinstance(value, str) else toml_value(value)
        parts += ["--set", f"{key}={text}"]
    if opts.name:
        parts += ["--name", opts.name]
    cmd = " ".join(shlex.quote(p) for p in parts)
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws > 1:
        cmd = f"torchrun --nproc_per_node {ws} -m icezoo.cli.main " + cmd.split(" ", 1)[1]
    return cmd


# ------------------------------------------------------------------------------ the loop
def train(opts: TrainOptions, echo=print) -> Path:
    """Run ``icezoo train``; returns the run directory. A run that fails is marked ``failed``."""
    where: dict[str, Any] = {}
    try:
        return _train(opts, echo, where)
    except _InterruptedRun:  # Ctrl-C in the loop: checkpoint saved, run marked interrupted
        raise
    except KeyboardInterrupt:  # Ctrl-C before the loop (planning, building): nothing to resume from
        run_dir = where.get("run_dir")
        if run_dir is not None and (run_dir / R.RUN_FILE).is_file():
            R.update_run(run_dir, status="interrupted", error="interrupted before the first training step")
        raise
    except BaseException as exc:
        run_dir = where.get("run_dir")
        if run_dir is not None and (run_dir / R.RUN_FILE).is_file():
            R.update_run(run_dir, status="failed", error=f"{exc.__class__.__name__}: {exc}"[:500])
        raise


def _train(opts: TrainOptions, echo, where: dict[str, Any]) -> Path:
    import numpy as np
    import torch

    import warnings

    # a skipped first optimizer step (NaN guard) makes torch warn about the scheduler order
    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
    dist = setup_distributed()
    device = pick_device(dist, opts.device)
    runs_dir = Path(opts.runs_dir)
    say = echo if dist.main else (lambda *_a, **_k: None)

    resume_ckpt = None
    if opts.resume:
        from icezoo.core.checkpoint import load_checkpoint

        run_dir = R.resolve_run(opts.resume, runs_dir)
        info = R.load_run(run_dir)
        defaults = TrainOptions()
        ignored = [f"--{k.replace('_', '-')}" for k in ("pipeline", "pipeline_file", "data", "batches", "epochs",
                                                         "batch_size", "max_pulses", "precision", "accumulate",
                                                         "init_from", "save_every_steps", "overrides", "name",
                                                         "description", "max_steps")
                   if getattr(opts, k) != getattr(defaults, k)]
        if ignored and dist.main:
            echo(f"note: --resume continues the run with its own settings; ignored: {' '.join(ignored)}")
        last = run_dir / R.LAST
        resume_ckpt = load_checkpoint(last)
        config = config_from_checkpoint(resume_ckpt, str(last))
        saved = info.get("options", {})
        opts = TrainOptions(**{**asdict(TrainOptions()), **saved, "resume": opts.resume, "progress": opts.progress,
                               "device": opts.device, "runs_dir": str(runs_dir)})
        data_dir = Path(info["split"]["data_dir"])
        train_ids, val_ids = info["split"]["train_batches"], info["split"]["val_batches"]
        train_spec, val_spec = info["split"]["train_spec"], info["split"]["val_spec"]
        command = info.get("command", "")
    else:
        config = config_from_options(opts)
        info = None
        command = canonical_command(opts, config.name)

    from icezoo.zoo import build, resolved_table

    ts = config.train
    seed_everything(opts.seed)
    try:
        model = build(config)
    except IcezooError as exc:
        raise IcezooError(f"{opts.resume}: incompatible checkpoint: {exc}" if resume_ckpt else str(exc)) from None

    init_src = None
    if resume_ckpt is None and (opts.init_from or config.init_from):
        init_src = (init_source(opts.init_from, runs_dir) if opts.init_from
                    else R.newest_successful_run(config.init_from, runs_dir) / R.BEST)

    if resume_ckpt is None:
        # the data split first (a bad --data makes no run directory), then the run directory
        data_dir, train_ids, val_ids, train_spec, val_spec = resolve_data(opts.data, ts.batches, ts.val_batches,
                                                                           say, dist)
        run_dir = None
        if dist.main:
            name = opts.name or f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            run_dir = R.new_run_dir(runs_dir, name)
            where["run_dir"] = run_dir
        if dist.enabled:
            import torch.distributed as td

            box = [str(run_dir) if run_dir else None]
            td.broadcast_object_list(box, src=0)
            run_dir = Path(box[0])
    log = R.RunLog(run_dir / R.LOG_FILE if dist.main else None, echo=say)

    from icezoo.core.tomlwrite import pipelines_toml

    split = {"data_dir": str(Path(data_dir).resolve()), "data": "default simulated set" if opts.data is None
             else str(opts.data), "train_spec": train_spec, "val_spec": val_spec,
             "train_batches": [int(i) for i in train_ids], "val_batches": [int(i) for i in val_ids]}
    if resume_ckpt is None and dist.main:
        R.write_text_atomic(run_dir / R.CONFIG_FILE, pipelines_toml({config.name: resolved_table(config)}))
        R.write_text_atomic(run_dir / "command.txt", command + "\n")
        saved_opts = {k: v for k, v in asdict(opts).items() if k not in ("resume", "progress", "device", "runs_dir")}
        info = {
            "name": run_dir.name, "pipeline": config.name, "experiment": config.experiment,
            "description": opts.description or config.description, "command": command, "status": "running",
            "started": R.now_iso(), "finished": None, "git_commit": R.git_commit(), "packages": R.package_versions(),
            "device": device_name(device), "world_size": dist.world_size, "split": split, "options": saved_opts,
            "precision": {"requested": ts.precision, "final": ts.precision}, "best_val": None,
        }
        R.write_json_atomic(run_dir / R.RUN_FILE, info)
        log(f"run {run_dir} - pipeline {config.name} - {command}", echo=False)
        log(f"data {data_dir}: train batches {train_spec} -> {R._ranges(train_ids)}, "
            f"validation {R._ranges(val_ids)} (fixed, disjoint)")

    # ---- initialise from another run (fine-tuning)
    if init_src is not None:
        src = init_src
        from icezoo.core.checkpoint import load_checkpoint

        ck = load_checkpoint(src)
        rep = load_matching(model, ck["state_dict"])
        log(init_report_text(str(src), rep))
        if dist.main:
            info = R.update_run(run_dir, init_from=str(src), init_report=rep)

    model.to(device)
    raw_model = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


    # ---- the plan: steps of each epoch (from the meta alone), total steps, optimizer steps
    def epoch_files(e: int) -> list[int]:
        if ts.files_per_epoch:
            from icezoo.data.io import cycle_batches

            return cycle_batches(train_ids, e, ts.files_per_epoch)
        return train_ids

    epoch_steps: list[int] = []

    def plan_epoch() -> None:
        e = len(epoch_steps)
        n = len(make_train_loader(data_dir, epoch_files(e), raw_model, ts.batch_size, opts.seed, e, dist,
                                  opts.workers))
        if n == 0:
            raise IcezooError(f"{data_dir}: the training batches of epoch {e} hold no usable events")
        epoch_steps.append(n)

    if ts.max_steps:
        total_steps = ts.max_steps
        while sum(epoch_steps) < total_steps:
            plan_epoch()
    else:
        for _ in range(math.ceil(ts.epochs)):
            plan_epoch()
        whole, frac = int(ts.epochs), ts.epochs - int(ts.epochs)
        total_steps = sum(epoch_steps[:whole]) + (math.ceil(frac * epoch_steps[whole]) if frac > 0 else 0)
        total_steps = max(1, total_steps)
    starts = [0]
    for n in epoch_steps:
        starts.append(starts[-1] + n)
    per_epoch = (f"{epoch_steps[0]}/epoch" if len(set(epoch_steps)) == 1
                 else f"{min(epoch_steps)}-{max(epoch_steps)}/epoch")
    opt_steps_total = sum(math.ceil(max(0, min(n, total_steps - starts[e])) / ts.accumulate)
                          for e, n in enumerate(epoch_steps))

    decay, no_decay = [], []
    for n, p in raw_model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": ts.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=ts.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(ts.schedule, ts.warmup, opt_steps_total))

    precision = ts.precision
    guard = {"skipped": 0, "loss_nonfinite": 0, "grad_nonfinite": 0, "fp16_overflows": 0,
             "fell_back_to_fp32_at_step": None, "skipped_since_precision": 0, "consecutive": 0}
    ema = None
    if ts.ema:
        ema = {k: v.detach().clone() for k, v in raw_model.state_dict().items() if v.is_floating_point()}

    def make_scaler(prec):
        return torch.amp.GradScaler(device.type, enabled=(prec == "fp16"), init_scale=2.0**12)

    scaler = make_scaler(precision)
    step = 0
    best_val = None
    history: list[dict[str, Any]] = []
    events_seen = 0
    train_time = 0.0

    if resume_ckpt is not None:
        load_strict(raw_model, resume_ckpt["state_dict"], str(run_dir / R.LAST))
        where["run_dir"] = run_dir if dist.main else None
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        scheduler.load_state_dict(resume_ckpt["scheduler"])
        precision = resume_ckpt["guard"].get("precision", precision)
        scaler = make_scaler(precision)
        if resume_ckpt.get("scaler"):
            scaler.load_state_dict(resume_ckpt["scaler"])
        guard.update({k: v for k, v in resume_ckpt["guard"].items() if k in guard})
        if ema is not None and resume_ckpt.get("ema"):
            ema = {k: v.to(device) for k, v in resume_ckpt["ema"].items()}
        step = int(resume_ckpt["step"])
        best_val = resume_ckpt.get("best_val")
        history = list(resume_ckpt.get("history", []))
        events_seen = int(resume_ckpt.get("events_seen", 0))
        train_time = float(resume_ckpt.get("train_time", 0.0))
        if list(resume_ckpt.get("epoch_steps", epoch_steps)) != epoch_steps:
            raise IcezooError(f"{run_dir}: the data changed since the checkpoint ({epoch_steps} steps per epoch "
                              f"now, {resume_ckpt.get('epoch_steps')} then): cannot resume exactly")
        set_rng_state(resume_ckpt["rng"])
        if step >= total_steps and R.load_run(run_dir).get("status") == "done":
            log(f"{run_dir} already finished ({step}/{total_steps} steps): nothing to resume")
            return run_dir
        if dist.main:
            info = R.update_run(run_dir, status="running", resumed=(info.get("resumed", 0) or 0) + 1)
        log(f"resumed {run_dir} at step {step}/{total_steps} (epoch {bisect.bisect_right(starts, step) - 1})")
    elif ema is not None:
        ema = {k: v.to(device) for k, v in ema.items()}

    ptable = checkpoint_pipeline_table(config)

    def save(kind: str, path: Path, at_step: int, weights=None):
        if not dist.main:
            return
        from icezoo.core.checkpoint import save_checkpoint

        state = {k: v.detach().cpu() for k, v in (weights or raw_model.state_dict()).items()}
        extra: dict[str, Any] = {"kind": kind, "run": run_dir.name, "step": at_step}
        if kind == "last":
            extra.update(
                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                ema={k: v.detach().cpu() for k, v in ema.items()} if ema is not None else {},
                rng=rng_state(), guard={**guard, "precision": precision}, best_val=best_val, history=history,
                epoch_steps=list(epoch_steps), total_steps=total_steps, events_seen=events_seen,
                train_time=train_time,
            )
        else:
            extra.update(val=best_val)
        save_checkpoint(path, ptable, state, provenance=raw_model.provenance, **extra)

    def current_weights():
        if ema is None:
            return raw_model.state_dict()
        state = dict(raw_model.state_dict())
        state.update(ema)
        return state

    def validate() -> float:
        from icezoo.engine.predict import infer

        weights = current_weights()
        backup = None
        if ema is not None:
            backup = {k: v.detach().clone() for k, v in raw_model.state_dict().items()}
            raw_model.load_state_dict(weights)
        loader = make_eval_loader(data_dir, "train", val_ids, raw_model, max(ts.batch_size, 128))
        out = infer(raw_model, loader, device, precision)
        if backup is not None:
            raw_model.load_state_dict(backup)
        from icezoo.core.batch import angular_error

        return float(np.mean(angular_error(out["direction"], out["target"])))

    save_every = opts.save_every_steps
    ctx_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}

    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]:>7.0f} ev/s  loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        disable=not (opts.progress and dist.main), transient=False)
    log(f"{config.name}: {sum(p.numel() for p in raw_model.parameters()):,} parameters on {device_name(device)}; "
        f"{total_steps} steps ({per_epoch}, batch {ts.batch_size}, accumulate {ts.accumulate}), "
        f"{precision}, {ts.schedule} lr {ts.lr:g}" + (f", EMA {ts.ema}" if ts.ema else ""))

    debug_sleep = float(os.environ.get("ICEZOO_DEBUG_STEP_SLEEP", "0") or 0)
    log_every = max(1, total_steps // 100)
    status = "done"
    boundary_step = step
    loss_sum, loss_n = 0.0, 0
    try:
        with progress:
            task = progress.add_task(config.name, total=total_steps, completed=step, rate=0.0, loss=float("nan"),
                                     lr=scheduler.get_last_lr()[0])
            t_start = time.perf_counter() - train_time
            window_bad = False
            window_events = 0
            while step < total_steps:
                epoch = bisect.bisect_right(starts, step) - 1
                epoch_end_step = min(starts[epoch + 1], total_steps)
                loader = make_train_loader(data_dir, epoch_files(epoch), raw_model, ts.batch_size, opts.seed, epoch,
                                           dist, opts.workers, start_step=step - starts[epoch])
                raw_model.train()
                for batch in loader:
                    batch = batch.to(device)
                    with torch.autocast(device_type=device.type, dtype=ctx_dtype.get(precision, torch.float32),
                                        enabled=precision != "fp32"):
                        pred = model(batch)
                    loss = raw_model.loss(pred.float(), batch)
                    finite = bool(torch.isfinite(loss))
                    if finite:
                        scaler.scale(loss / ts.accumulate).backward()
                        loss_sum += float(loss.detach())
                        loss_n += 1
                    else:
                        guard["loss_nonfinite"] += 1
                        window_bad = True
                        if dist.enabled:  # keep the collective: every rank runs backward
                            (pred.float().sum() * 0.0).backward()
                    step += 1
                    window_events += batch.num_events
                    events_seen += batch.num_events * dist.world_size
                    at_boundary = (step - starts[epoch]) % ts.accumulate == 0 or step == epoch_end_step
                    if at_boundary:
                        window_bad = _optimizer_step(raw_model, optimizer, scaler, scheduler, ts, guard, window_bad,
                                                     dist, precision, ema)
                        if window_bad:
                            guard["consecutive"] += 1
                            msg = (f"NaN guard: step {step}: non-finite loss or gradient, optimizer step skipped "
                                   f"({guard['skipped']} so far)")
                            log(msg, echo=False)
                            if (precision != "fp32" and guard["skipped_since_precision"] >= ts.nan_fallback_after):
                                log(f"NaN guard: {guard['skipped_since_precision']} skipped steps in {precision}: "
                                    f"falling back to fp32 from step {step}")
                                precision = "fp32"
                                scaler = make_scaler(precision)
                                guard["fell_back_to_fp32_at_step"] = step
                                guard["skipped_since_precision"] = 0
                            elif guard["consecutive"] >= max(50, 10 * ts.nan_fallback_after):
                                raise IcezooError(f"training diverged: {guard['consecutive']} consecutive "
                                                  f"non-finite steps in fp32 (run {run_dir})")
                        else:
                            guard["consecutive"] = 0
                        window_bad = False
                        boundary_step = step
                        if debug_sleep:
                            time.sleep(debug_sleep)
                    train_time = time.perf_counter() - t_start
                    rate = events_seen / max(train_time, 1e-9)
                    mean_loss = loss_sum / max(loss_n, 1)
                    progress.update(task, completed=step, rate=rate, loss=mean_loss, lr=scheduler.get_last_lr()[0])
                    if step % log_every == 0:
                        log(f"step {step}/{total_steps} epoch {epoch} loss {mean_loss:.4f} "
                            f"lr {scheduler.get_last_lr()[0]:.3e} {rate:.0f} ev/s", echo=False)
                    if save_every and at_boundary and step % save_every == 0 and step < epoch_end_step:
                        save("last", run_dir / R.LAST, step)
                    if step >= epoch_end_step:
                        break
                if step < epoch_end_step:  # the loader gave fewer batches than announced
                    step = epoch_end_step
                    boundary_step = step
                # ---- epoch end: validate, keep the best, save the state
                val = validate() if dist.main else 0.0
                train_time = time.perf_counter() - t_start
                entry = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(loss_n, 1), "val_mean": val,
                         "lr": scheduler.get_last_lr()[0], "events_per_s": events_seen / max(train_time, 1e-9),
                         "elapsed_s": train_time, "precision": precision}
                history.append(entry)
                loss_sum, loss_n = 0.0, 0
                improved = best_val is None or val < best_val
                if improved:
                    best_val = val
                log(f"epoch {epoch} (step {step}/{total_steps}): train loss {entry['train_loss']:.4f}, "
                    f"validation mean angular error {val:.4f}{' (best)' if improved else ''}")
                if dist.main:
                    if improved:
                        save("best", run_dir / R.BEST, step, weights=current_weights())
                    save("last", run_dir / R.LAST, step)
                    R.write_json_atomic(run_dir / R.METRICS_FILE, {"history": history, "best_val": best_val})
                    info = R.update_run(run_dir, best_val=best_val, best_step=step if improved else info.get("best_step"),
                                        nan_guard=_guard_public(guard), train_time_s=round(train_time, 2),
                                        events_seen=events_seen,
                                        precision={"requested": ts.precision, "final": precision})
                if dist.enabled:
                    import torch.distributed as td

                    td.barrier()
    except KeyboardInterrupt:
        status = "interrupted"
        log(f"interrupted at step {step}: saving a checkpoint (resume with: icezoo train --resume {run_dir})")
        # the state at the last completed optimizer step; a half-accumulated window is dropped
        optimizer.zero_grad(set_to_none=True)
        save("last", run_dir / R.LAST, boundary_step)
        if dist.main:
            R.update_run(run_dir, status="interrupted", nan_guard=_guard_public(guard), step=boundary_step)
        raise _InterruptedRun(run_dir) from None

    if dist.main:
        R.update_run(run_dir, status=status, finished=R.now_iso(), best_val=best_val, final_val=history[-1]["val_mean"]
                     if history else None, nan_guard=_guard_public(guard), train_time_s=round(train_time, 2),
                     events_seen=events_seen, precision={"requested": ts.precision, "final": precision}, step=step)
        log(f"done: {step} steps in {train_time:.1f} s ({events_seen / max(train_time, 1e-9):.0f} ev/s); best validation "
            f"mean angular error {best_val:.4f}; run {run_dir}")
        if guard["skipped"]:
            log(f"NaN guard: {guard['skipped']} optimizer steps skipped"
                + (f"; fell back to fp32 at step {guard['fell_back_to_fp32_at_step']}"
                   if guard["fell_back_to_fp32_at_step"] is not None else ""))
    if dist.enabled:
        import torch.distributed as td

        td.barrier()
    return run_dir


class _InterruptedRun(KeyboardInterrupt):
    """Ctrl-C after the checkpoint was saved (the CLI prints one line and exits 130)."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


InterruptedRun = _InterruptedRun


def _guard_public(guard: dict[str, Any]) -> dict[str, Any]:
    return {k: guard[k] for k in ("skipped", "loss_nonfinite", "grad_nonfinite", "fp16_overflows",
                                  "fell_back_to_fp32_at_step")}


def _optimizer_step(model, optimizer, scaler, scheduler, ts, guard, window_bad, dist, precision, ema) -> bool:
    """Clip, check, step (or skip) at an accumulation boundary. Returns True when skipped."""
    import torch

    params = [p for p in model.parameters() if p.grad is not None]
    overflow = False
    if scaler.is_enabled():
        scaler.unscale_(optimizer)
    if params:
        norm = torch.nn.utils.clip_grad_norm_(params, ts.grad_clip or float("inf"))
        grad_ok = bool(torch.isfinite(norm))
    else:
        grad_ok = True
    bad = window_bad or not grad_ok
    if dist.enabled:
        import torch.distributed as td

        flag = torch.tensor([1.0 if bad else 0.0], device=params[0].device if params else "cpu")
        td.all_reduce(flag, op=td.ReduceOp.MAX)
        bad = bool(flag.item() > 0)
    if bad:
        if not window_bad and not grad_ok:
            if scaler.is_enabled():
                overflow = True
                guard["fp16_overflows"] += 1
            else:
                guard["grad_nonfinite"] += 1
        guard["skipped"] += 1
        if not overflow:
            guard["skipped_since_precision"] += 1
        if scaler.is_enabled():
            for p in params:  # make the scaler see the skip (found_inf) and lower its scale
                p.grad = None
            scaler.update(scaler.get_scale() * 0.5)
    else:
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            with torch.no_grad():
                d = ts.ema
                for k, v in model.state_dict().items():
                    if k in ema:
                        ema[k].mul_(d).add_(v.detach(), alpha=1.0 - d)
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return bad


def device_name(device) -> str:
    """The machine: GPU name or CPU model, with the core count."""
    import platform

    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
