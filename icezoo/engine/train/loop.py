"""The training loop: open (or reopen) a run, build the model, walk the step plan, validate at each epoch end."""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.nn.parallel import DistributedDataParallel

from icezoo.core.batch import angular_error
from icezoo.core.checkpoint import load_checkpoint
from icezoo.core.errors import IcezooError
from icezoo.core.pipelines import resolved_table
from icezoo.core.tomlwrite import pipelines_toml
from icezoo.data.io import check_batch_file, foreign_source, format_batches
from icezoo.engine import loaders, predict
from icezoo.engine.runs import RunDir, RunLog, git_commit, now_iso, package_versions
from icezoo.engine.checkpoints import (checkpoint_pipeline_table, config_from_checkpoint, init_report_text,
                                       init_run, init_source, init_stages, load_matching)
from icezoo.engine.device import Distributed, autocast, device_name, pick_device, setup_distributed
from icezoo.engine.kappa_filter import kept_events
from icezoo.engine.train.options import RUN_SETTINGS, SESSION_OPTIONS, TrainOptions, canonical_command, config_from_options
from icezoo.engine.train.objective import build_model, is_pretraining, masked_validation, metric_name
from icezoo.engine.train.plan import StepPlan, epoch_files, fraction_events, make_plan, resolve_data
from icezoo.engine.train.state import TrainState, seed_everything
from icezoo.zoo import registry


class InterruptedRun(KeyboardInterrupt):
    """Ctrl-C after the checkpoint was saved (the CLI prints one line and exits 130)."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


@dataclass
class Run:
    """One run as the loop sees it: its options and pipeline, where it writes, what it trains on."""

    opts: TrainOptions
    config: Any
    dist: Distributed
    device: torch.device
    command: str
    run_dir: Path | None = None
    data_dir: Path | None = None
    train_ids: list[int] | None = None
    val_ids: list[int] | None = None
    train_spec: str = ""
    val_spec: str | None = None
    info: dict[str, Any] | None = None
    resume_ckpt: dict[str, Any] | None = None
    log: Any = None
    keep_events: dict[int, np.ndarray] | None = None  # the kappa filter's training events

    def update(self, **changes: Any) -> None:
        """Update run.json (rank 0 only) and keep the copy here current."""
        if self.dist.main:
            self.info = RunDir(self.run_dir).update(**changes)


def train(opts: TrainOptions, echo=print) -> Path:
    """Run ``icezoo train``; returns the run directory. A run that fails is marked ``failed``."""
    where: dict[str, Any] = {}
    try:
        return _train(opts, echo, where)
    except InterruptedRun:  # Ctrl-C in the loop: checkpoint saved, run marked interrupted
        raise
    except KeyboardInterrupt:  # Ctrl-C before the loop (planning, building): nothing to resume from
        run_dir = where.get("run_dir")
        if run_dir is not None and RunDir(run_dir).is_run():
            RunDir(run_dir).update(status="interrupted", error="interrupted before the first training step")
        raise
    except BaseException as exc:
        run_dir = where.get("run_dir")
        if run_dir is not None and RunDir(run_dir).is_run():
            RunDir(run_dir).update(status="failed", error=f"{exc.__class__.__name__}: {exc}"[:500])
        raise


def _train(opts: TrainOptions, echo, where: dict[str, Any]) -> Path:
    # a skipped first optimizer step (NaN guard) makes torch warn about the scheduler order
    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
    dist = setup_distributed()
    device = pick_device(dist, opts.device)
    say = echo if dist.main else (lambda *_a, **_k: None)
    if opts.resume:
        run = _reopen(opts, dist, device, say)
    else:
        config = config_from_options(opts)
        run = Run(opts, config, dist, device, canonical_command(opts, config.name))
    opts, runs_dir = run.opts, Path(run.opts.runs_dir)
    seed_everything(opts.seed)
    try:
        model = build_model(opts, run.config)
    except IcezooError as exc:  # a build error names where the pipeline came from, like a validation error
        where = f"{opts.resume}: incompatible checkpoint" if run.resume_ckpt else opts.pipeline_file
        raise IcezooError(f"{where}: {exc}" if where and not str(exc).startswith(str(where)) else str(exc)) from None
    ts = run.config.train
    init_src = rep = None
    if run.resume_ckpt is None:
        # everything that can be checked is checked before the run directory exists (no 'failed' runs
        # from bad input): the data split and its files, the plan (from the meta), the --init-from weights
        run.data_dir, run.train_ids, run.val_ids, run.train_spec, run.val_spec = resolve_data(
            opts.data, ts.batches, ts.val_batches, say, dist, split=opts.split)
        _check_files(run, model)
        if opts.init_from or run.config.init_from:
            init_src = (init_source(opts.init_from, runs_dir) if opts.init_from
                        else init_run(run.config.init_from, runs_dir).checkpoint("best"))
            rep = load_matching(model, load_checkpoint(init_src)["state_dict"])  # fine-tuning: the tensors that fit
    # until a new run's directory exists, log lines are kept and written into it once it does
    run.log = RunLog(RunDir(run.run_dir).log_file if (dist.main and run.run_dir) else None, echo=say,
                     keep=dist.main and run.resume_ckpt is None)
    run.keep_events = fraction_events(ts.fraction, run.data_dir, run.train_ids, opts.split, _kappa_filter(run))
    plan = make_plan(ts, run.data_dir, run.train_ids, model, opts.seed, dist, opts.workers, run.keep_events,
                     split=opts.split)
    # stages taken from other runs (EXP_100): found and loaded before the run directory exists too
    stage_inits = init_stages(model, runs_dir, run.log) if run.resume_ckpt is None and model.stage_inits else None
    if run.resume_ckpt is None:
        run.run_dir = Path(dist.on_main(_open, run, where))
        if dist.main:
            run.log.attach(RunDir(run.run_dir).log_file)
        dist.on_main(_write_run_files, run)
    if init_src is not None:
        run.log(init_report_text(str(init_src), rep))
        run.update(init_from=str(init_src), init_report=rep)
    if stage_inits is not None:
        run.update(stage_inits=stage_inits)

    model.to(device)
    wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist.enabled else model
    state = TrainState.new(model, ts, device, plan)
    if run.resume_ckpt is not None:
        state.restore(run.resume_ckpt, plan, str(RunDir(run.run_dir).checkpoint("last")))
        where["run_dir"] = run.run_dir if dist.main else None
        if state.step >= plan.total_steps and RunDir(run.run_dir).info().get("status") == "done":
            run.log(f"{run.run_dir} already finished ({state.step}/{plan.total_steps} steps): nothing to resume")
            return run.run_dir
        run.update(status="running", resumed=(run.info.get("resumed", 0) or 0) + 1)
        run.log(f"resumed {run.run_dir} at step {state.step}/{plan.total_steps} (epoch {plan.epoch_of(state.step)})")
    _run_epochs(run, wrapped, plan, state)
    _finish(run, state)
    return run.run_dir


def _kappa_filter(run: Run) -> dict[int, np.ndarray] | None:
    """The kappa filter (EXP_33_FT_3_KAPPA): the training events run ``kappa_from`` predicts with
    kappa above ``min_kappa`` (rank 0 fills the prediction cache, the other ranks read it), or None."""
    ts = run.config.train
    if ts.min_kappa is None:
        return None
    args = (ts.kappa_from, ts.min_kappa, run.data_dir, run.train_ids, run.opts.runs_dir, run.device)
    keep = kept_events(*args, log=run.log) if run.dist.main else None
    run.dist.barrier()
    return keep if run.dist.main else kept_events(*args)


def _reopen(opts: TrainOptions, dist: Distributed, device, say) -> Run:
    """A run to resume: its own options, pipeline (from last.pt) and data split (from run.json)."""
    runs_dir = Path(opts.runs_dir)
    run_dir = RunDir.find(opts.resume, runs_dir)
    info = run_dir.info()
    defaults = TrainOptions()
    ignored = [f"--{k.replace('_', '-')}" for k in RUN_SETTINGS if getattr(opts, k) != getattr(defaults, k)]
    if ignored:
        say(f"note: --resume continues the run with its own settings; ignored: {' '.join(ignored)}")
    last = run_dir.checkpoint("last")
    ckpt = load_checkpoint(last)
    config = config_from_checkpoint(ckpt, str(last))
    unknown = sorted(set(info.get("options") or {}) - set(asdict(defaults)))  # issue 27, C8: one line, not a TypeError
    split = info.get("split") or {}
    missing = [k for k in ("data_dir", "train_batches", "val_batches", "train_spec") if k not in split]
    if unknown or missing:
        why = f"options.{unknown[0]}: unknown option" if unknown else f"no split.{missing[0]}"
        raise IcezooError(f"{run_dir.info_file}: cannot resume ({why}; not a run.json this icezoo wrote)")
    own = TrainOptions(**{**asdict(TrainOptions()), **info.get("options", {}), "resume": opts.resume,
                          "progress": opts.progress, "device": opts.device, "runs_dir": str(runs_dir)})
    return Run(own, config, dist, device, info.get("command", ""), run_dir=run_dir.path, data_dir=Path(split["data_dir"]),
               train_ids=split["train_batches"], val_ids=split["val_batches"], train_spec=split["train_spec"],
               val_spec=split.get("val_spec"), info=info, resume_ckpt=ckpt)


def _check_files(run: Run, model) -> None:
    """Every training and validation file: present, a readable parquet footer with the pulse columns,
    and validation events to score (all from footers and the meta: no pulse row is read)."""
    split = run.opts.split
    for b in [*run.train_ids, *run.val_ids]:
        check_batch_file(run.data_dir, split, b)
    loaders.check_detector(model, run.data_dir)
    loaders.check_truth(model, run.data_dir, split, [*run.train_ids, *run.val_ids])
    if len(loaders.make_eval_loader(run.data_dir, split, run.val_ids, model, run.config.train.batch_size)) == 0:
        raise IcezooError(f"{run.data_dir}: the validation batches {format_batches(run.val_ids)} hold no event with 2 or "
                          f"more pulses")


def _open(run: Run, where: dict[str, Any]) -> str:
    """A new run's directory (rank 0, once every input is checked)."""
    name = run.opts.name or f"{run.config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = RunDir.create(Path(run.opts.runs_dir), name).path
    where["run_dir"] = run_dir
    return str(run_dir)


def _write_run_files(run: Run) -> None:
    """config.toml, command.txt and run.json of a new run."""
    config, opts, ts = run.config, run.opts, run.config.train
    split = {"data_dir": str(Path(run.data_dir).resolve()), "data": "default simulated set" if opts.data is None
             else str(opts.data), "train_spec": run.train_spec, "val_spec": run.val_spec,
             "train_batches": [int(i) for i in run.train_ids], "val_batches": [int(i) for i in run.val_ids]}
    if opts.split != "train":
        split["files"] = opts.split
    src = foreign_source(run.data_dir)  # a GraphNeT source's tables, so that evaluate/predict need not be told
    if src is not None and src.pulsemap:
        split["pulsemap"] = src.pulsemap
    if src is not None and src.truth_table != "truth":
        split["truth_table"] = src.truth_table
    saved_opts = {k: v for k, v in asdict(opts).items() if k not in SESSION_OPTIONS}
    run.info = {
        "name": run.run_dir.name, "pipeline": config.name, "experiment": config.experiment,
        "description": opts.description or _description(opts, config), "command": run.command, "status": "running",
        "started": now_iso(), "finished": None, "git_commit": git_commit(), "packages": package_versions(),
        "device": device_name(run.device), "world_size": run.dist.world_size, "split": split, "options": saved_opts,
        "precision": {"requested": ts.precision, "final": ts.precision}, "best_val": None,
    }
    if is_pretraining(opts):  # the ledger and init_from tell pretraining runs apart by this field
        run.info.update(objective=dict(opts.objective), metric=metric_name(opts))
    RunDir(run.run_dir).start(run.info, pipelines_toml({config.name: resolved_table(config, registry())}),
                               run.command)
    run.log(f"run {run.run_dir} - pipeline {config.name} - {run.command}", echo=False)
    run.log(f"data {run.data_dir}: train batches {run.train_spec} -> {format_batches(run.train_ids)}, "
            f"validation {format_batches(run.val_ids)} (fixed, disjoint)")


def _description(opts: TrainOptions, config) -> str:
    if not is_pretraining(opts):
        return config.description
    return (f"pretraining ({opts.objective.get('name', 'masked_pulse')}) of the embedder and backbone of "
            f"{config.name}")


def _progress(run: Run) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]:>7.0f} ev/s  loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    disable=not (run.opts.progress and run.dist.main), transient=False)


@dataclass
class _Window:
    """Running sums between log lines and the last completed optimizer step."""

    loss_sum: float = 0.0
    loss_n: int = 0
    #: task name -> (sum, count) of its loss term since the last log line / in this epoch (multi-task
    #: pipelines; the epoch's sums start over on resume: the first epoch after it reports its tail)
    task_sums: dict | None = None
    task_epoch: dict | None = None
    bad: bool = False
    boundary_step: int = 0
    boundary_events: int = 0  # events seen at that step (a Ctrl-C drops the half-done window's events too)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.loss_n, 1)


def _run_epochs(run: Run, model, plan: StepPlan, state: TrainState) -> None:
    """Walk the plan from ``state.step`` to its end; on Ctrl-C save the last completed step and stop."""
    ts, raw = run.config.train, state.model
    progress = _progress(run)
    run.log(f"{run.config.name}: {sum(p.numel() for p in raw.parameters()):,} parameters on "
            f"{device_name(run.device)}; {plan.total_steps} steps ({plan.per_epoch_text()}, batch {ts.batch_size}, "
            f"accumulate {ts.accumulate}), {state.precision}, {ts.schedule} lr {ts.lr:g}"
            + (f", EMA {ts.ema}" if ts.ema else ""))
    window = _Window(loss_sum=state.epoch_loss[0], loss_n=state.epoch_loss[1], boundary_step=state.step,
                     boundary_events=state.events_seen)
    try:
        with progress:
            task = progress.add_task(run.config.name, total=plan.total_steps, completed=state.step, rate=0.0,
                                     loss=float("nan"), lr=state.scheduler.get_last_lr()[0])
            t_start = time.perf_counter() - state.train_time
            while state.step < plan.total_steps:
                epoch = plan.epoch_of(state.step)
                _train_epoch(run, model, plan, state, epoch, window, lambda: progress.update(
                    task, completed=state.step, rate=state.events_seen / max(state.train_time, 1e-9),
                    loss=window.mean_loss, lr=state.scheduler.get_last_lr()[0]), t_start)
                _end_epoch(run, plan, state, epoch, window, t_start)
    except KeyboardInterrupt:
        run.log(f"interrupted at step {state.step}: saving a checkpoint (resume with: icezoo train --resume "
                f"{run.run_dir})")
        # the state at the last completed optimizer step; a half-accumulated window is dropped
        state.optimizer.zero_grad(set_to_none=True)
        state.events_seen = window.boundary_events
        _save(run, state, plan, "last", window.boundary_step)
        run.update(status="interrupted", nan_guard=state.guard.public(), step=window.boundary_step)
        raise InterruptedRun(run.run_dir) from None


def _train_epoch(run: Run, model, plan: StepPlan, state: TrainState, epoch: int, window: _Window, show,
                 t_start: float) -> None:
    """Loader steps of one epoch from ``state.step``: forward, backward, and an optimizer step per window."""
    ts, dist, raw = run.config.train, run.dist, state.model
    end = plan.epoch_end(epoch)
    debug_sleep = float(os.environ.get("ICEZOO_DEBUG_STEP_SLEEP", "0") or 0)
    log_every = max(1, plan.total_steps // 100)
    loader = loaders.make_train_loader(run.data_dir, epoch_files(ts, run.train_ids, epoch), raw, ts.batch_size,
                                       run.opts.seed, epoch, dist, run.opts.workers,
                                       start_step=state.step - plan.starts[epoch], keep_events=run.keep_events,
                                       pin_memory=run.device.type == "cuda", split=run.opts.split)
    raw.train()
    for batch in loader:
        batch = batch.to(run.device)
        loss, pred = _forward_loss(model, raw, batch, state.precision, run.device, window)
        if bool(torch.isfinite(loss)):
            state.scaler.scale(loss / ts.accumulate).backward()
            window.loss_sum += float(loss.detach())
            window.loss_n += 1
        else:
            state.guard.loss_nonfinite()
            window.bad = True
            if dist.enabled:  # keep the collective: every rank runs backward
                (pred.float().sum() * 0.0).backward()
        state.step += 1
        state.events_seen += batch.num_events * dist.world_size
        at_boundary = plan.at_boundary(state.step, epoch)
        if at_boundary:
            skipped = state.optimizer_step(window.bad, ts, dist)
            precision = state.guard.after_window(skipped, state.step, state.precision, run.log, run.run_dir)
            if precision != state.precision:
                state.set_precision(precision)
            window.bad = False
            window.boundary_step, window.boundary_events = state.step, state.events_seen
            state.epoch_loss = (window.loss_sum, window.loss_n)
            if debug_sleep:
                time.sleep(debug_sleep)
        state.train_time = time.perf_counter() - t_start
        show()
        if state.step % log_every == 0:
            run.log(f"step {state.step}/{plan.total_steps} epoch {epoch} loss {window.mean_loss:.4f} "
                    f"lr {state.scheduler.get_last_lr()[0]:.3e} "
                    f"{state.events_seen / max(state.train_time, 1e-9):.0f} ev/s" + _task_text(window), echo=False)
        save_every = run.opts.save_every_steps
        if save_every and at_boundary and state.step % save_every == 0 and state.step < end:
            _save(run, state, plan, "last", state.step)
        if state.step >= end:
            break
    if state.step < end:  # the loader gave fewer batches than announced
        state.step = end
        window.boundary_step, window.boundary_events = end, state.events_seen


def _forward_loss(model, raw, batch, precision: str, device, window: _Window):
    """(training loss, direction output) of one batch: the direction's losses, plus each task's weighted
    loss where the pipeline has tasks (their terms summed into ``window.task_sums`` for the log)."""
    if not getattr(raw, "tasks", None):  # no tasks (a pretraining model has none): the computation as before
        with autocast(device, precision):
            pred = model(batch)
        return raw.loss(pred.float(), batch), pred
    with autocast(device, precision):
        pred, outs = model(batch, tasks=True)
    total, terms = raw.task_loss({k: v.float() for k, v in outs.items()}, batch)
    window.task_sums, window.task_epoch = window.task_sums or {}, window.task_epoch or {}
    for name, value in terms.items():
        value = float(value.detach())
        for sums in (window.task_sums, window.task_epoch) if math.isfinite(value) else ():
            s, n = sums.get(name, (0.0, 0))
            sums[name] = (s + value, n + 1)
    return raw.loss(pred.float(), batch) + total, pred


def _task_text(window: _Window, epoch: bool = False) -> str:
    """The tasks' mean losses since the last log line, or in the epoch (`` energy 0.812 event_type 0.433``),
    then reset."""
    sums = window.task_epoch if epoch else window.task_sums
    if not sums:
        return ""
    text = "".join(f" {name} {s / max(n, 1):.4f}" for name, (s, n) in sums.items())
    if epoch:
        window.task_epoch = {}
    else:
        window.task_sums = {}
    return text


def _end_epoch(run: Run, plan: StepPlan, state: TrainState, epoch: int, window: _Window, t_start: float) -> None:
    """Validate, keep the best weights (finite scores only), save the state and the metrics."""
    val = run.dist.on_main(_validate, run, state)  # every rank learns the score (and a failure)
    state.train_time = time.perf_counter() - t_start
    entry = {"epoch": epoch, "step": state.step, "train_loss": window.mean_loss, "val_mean": val,
             "lr": state.scheduler.get_last_lr()[0], "events_per_s": state.events_seen / max(state.train_time, 1e-9),
             "elapsed_s": state.train_time, "precision": state.precision}
    if window.task_epoch:  # multi-task: each task's mean training loss in the epoch
        entry["task_losses"] = {name: s / max(n, 1) for name, (s, n) in window.task_epoch.items()}
    state.history.append(entry)
    window.loss_sum, window.loss_n = 0.0, 0
    state.epoch_loss = (0.0, 0)
    improved = math.isfinite(val) and (state.best_val is None or val < state.best_val)
    if improved:
        state.best_val = val
    tasks = _task_text(window, epoch=True)
    run.log(f"epoch {epoch} (step {state.step}/{plan.total_steps}): train loss {entry['train_loss']:.4f}"
            + (f" (tasks:{tasks})" if tasks else "")
            + f", validation {metric_name(run.opts)} {val:.4f}{' (best)' if improved else ''}")
    run.dist.on_main(_write_epoch, run, plan, state, improved)
    run.dist.barrier()


def _write_epoch(run: Run, plan: StepPlan, state: TrainState, improved: bool) -> None:
    """Rank 0's files at an epoch end: best.pt (when improved), last.pt, the metrics and run.json."""
    if improved:
        _save(run, state, plan, "best", state.step, weights=state.weights())
    _save(run, state, plan, "last", state.step)
    RunDir(run.run_dir).write_history(state.history, state.best_val)
    run.update(best_val=state.best_val, best_step=state.step if improved else run.info.get("best_step"),
               nan_guard=state.guard.public(), train_time_s=round(state.train_time, 2),
               events_seen=state.events_seen, precision={"requested": run.config.train.precision,
                                                         "final": state.precision})


def _validate(run: Run, state: TrainState) -> float:
    """Mean angular error (pretraining: the objective's loss) on the fixed validation files, with the
    EMA weights where there are some."""
    raw = state.model
    backup = None
    if state.ema is not None:
        backup = {k: v.detach().clone() for k, v in raw.state_dict().items()}
        raw.load_state_dict(state.weights())
    loader = loaders.make_eval_loader(run.data_dir, run.opts.split, run.val_ids, raw,
                                      max(run.config.train.batch_size, 128))
    if is_pretraining(run.opts):
        score = masked_validation(raw, loader, run.device, state.precision)
    else:
        out = predict.infer(raw, loader, run.device, state.precision)
        score = float(np.mean(angular_error(out["direction"], out["target"])))
    if backup is not None:
        raw.load_state_dict(backup)
    return score


def _save(run: Run, state: TrainState, plan: StepPlan, kind: str, at_step: int, weights=None) -> None:
    if run.dist.main:
        state.save(RunDir(run.run_dir).checkpoint(kind), kind, at_step, plan,
                   checkpoint_pipeline_table(run.config), run.run_dir.name, weights=weights)


def _finish(run: Run, state: TrainState) -> None:
    if state.best_val is None:  # every validation NaN or inf: the run diverged, whatever its exit says
        last = state.history[-1]["val_mean"] if state.history else float("nan")
        raise IcezooError(f"{run.run_dir}: validation was never finite ({len(state.history)} epoch(s), last {last}): "
                          f"the run diverged and is marked failed (lower train.lr or keep train.grad_clip)")
    run.dist.on_main(_write_done, run, state)
    run.dist.barrier()


def _write_done(run: Run, state: TrainState) -> None:
    history = state.history
    # an evaluation stored while the run was not finished scored a snapshot: it is not the run's score
    stale = {"evaluation": None} if RunDir(run.run_dir).info().get("evaluation") else {}
    RunDir(run.run_dir).update(
        status="done", finished=now_iso(), best_val=state.best_val,
        final_val=history[-1]["val_mean"] if history else None, nan_guard=state.guard.public(),
        train_time_s=round(state.train_time, 2), events_seen=state.events_seen,
        precision={"requested": run.config.train.precision, "final": state.precision}, step=state.step, **stale)
    run.log(f"done: {state.step} steps in {state.train_time:.1f} s "
            f"({state.events_seen / max(state.train_time, 1e-9):.0f} ev/s); best validation {metric_name(run.opts)} "
            f"{state.best_val:.4f}; run {run.run_dir}")
    if state.guard.summary():
        run.log(state.guard.summary())
