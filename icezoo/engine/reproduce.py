"""``icezoo reproduce STUDY``: train every variant of a study alike, score them on the same
validation events, and compare each with the reference (paired bootstrap 95% interval).

Same for every variant: the data and its training files (``train.batches``, default ``cycle``), the
fixed validation split, the seeds, the budget (loader steps = events / batch size, or the steps a
short benchmark of the variant says fit in the wall-clock budget on this machine, measured once and
kept), and the study's model size. The runs live in ``RUNS/studies/STUDY-BUDGET-KEY/VARIANT-sSEED``,
KEY a hash of everything that decides the runs (data, budget, each variant's resolved pipeline and
its init source): rerunning the same study reuses finished runs, resumes an interrupted one from
its ``last.pt`` (the engine's exact resume) and trains the rest; changing the study makes a new
directory. Per-event validation errors are cached in each run (``val_errors.npz``). The
comparison is written to ``results.md`` and ``forest.png`` in the study directory (atomically).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from icezoo.core.atomic import atomic_path, write_text_atomic
from icezoo.core.errors import IcezooError
from icezoo.core.tomlwrite import toml_value
from icezoo.data.formats import detect_format, open_source
from icezoo.data.io import format_batches
from icezoo.engine import bench
from icezoo.engine import train as training  # module attributes, looked up when called (tests replace them)
from icezoo.engine.default_data import default_dataset, read_split
from icezoo.engine.device import Distributed, pick_device
from icezoo.engine.evaluate import score, summary
from icezoo.engine.runs import LAST, RunDir, now_iso, read_json, write_json_atomic
from icezoo.engine.stats import paired, reading
from icezoo.engine.task_eval import score_tasks
from icezoo.engine.task_metrics import scores_text
from icezoo.engine.studies import Budget, Study, get_study, variant_config
from icezoo.engine.train import InterruptedRun, TrainOptions
from icezoo.engine.train.plan import resolve_data

MANIFEST = "study.json"


@contextlib.contextmanager
def study_lock(study_dir: Path):
    """One ``icezoo reproduce`` per study directory at a time (two would resume the same run twice);
    a lock left by a process that no longer exists is taken over."""
    lock = study_dir / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale
                continue
            except PermissionError:
                pass
            raise IcezooError(f"{study_dir}: another icezoo reproduce (pid {pid}) is running this study") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


class StudyInterrupted(Exception):
    """Ctrl-C during a study: the interrupted run saved its checkpoint; rerunning resumes."""


@dataclass
class Plan:
    study: Study
    budget: Budget
    seeds: list[int]
    data: str | None  # as given (None: the cached simulated set)
    data_dir: Path
    study_dir: Path
    configs: dict[str, Any]
    steps: dict[str, int] = field(default_factory=dict)
    command: str = ""

    def run_name(self, label: str, seed: int) -> str:
        return f"{label}-s{seed}"

    def run_dir(self, label: str, seed: int) -> Path:
        return self.study_dir / self.run_name(label, seed)

    def jobs(self) -> list[tuple[str, int]]:
        return [(label, seed) for seed in self.seeds for label in self.study.order()]


def _key(study: Study, budget: Budget, data_dir: Path, configs: dict[str, Any], tables=None) -> str:
    # "length": how a budget becomes a run's length (2: epochs raised so that max_steps decides; runs
    # of the old rule stopped at the pipeline's epochs and are not reused)
    blob = {"budget": budget.model_dump(), "data": str(data_dir.resolve()), "length": 2,
            **({"tables": list(tables)} if tables and any(tables) else {}),
            "variants": {label: [configs[label].to_table(), study.variants[label].init_from] +
                         ([study.variants[label].pretrain] if study.variants[label].pretrain is not None else [])
                         for label in configs}}
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:8]


def plan_study(name: str, data: str | None = None, budget: str | None = None, seeds: int | None = None,
              runs_dir: str | Path = "runs", log=print, tables: tuple[str | None, str | None] | None = None) -> Plan:
    """Validate the study and every variant's pipeline, fix the data and the study directory.
    ``tables``: (pulsemap, truth_table) of a GraphNeT source, as given (part of the study's key)."""
    study = get_study(name)
    try:
        bud = Budget.parse(budget) if budget is not None else study.budget
    except ValueError as exc:
        raise IcezooError(f"--budget: {exc}") from None
    if seeds is not None and seeds < 1:
        raise IcezooError(f"--seeds {seeds}: at least 1")
    seed_list = list(range(seeds)) if seeds is not None else list(study.seeds)
    configs = {label: variant_config(study, label) for label in study.order()}
    if data is None:
        if tables and any(tables):
            raise IcezooError("--pulsemap/--truth-table name tables of --data (a GraphNeT file or folder): give --data")
        data_dir = default_dataset(log=log).path
    else:
        data_dir = Path(data)
        # any readable source (Kaggle folder, GraphNeT .db or Parquet folder), else one line; the tables
        # are set for every later opening in this process (the variants' trainings, their scoring)
        if tables and any(tables) and open_source(data_dir, *tables).format == "kaggle":
            raise IcezooError(f"--data {data}: a Kaggle-layout folder has no pulse maps or truth tables "
                              f"(--pulsemap/--truth-table are for GraphNeT files)")
        detect_format(data_dir)
    key = _key(study, bud, data_dir, configs, tables)
    study_dir = Path(runs_dir) / "studies" / f"{study.name}-{bud.slug}-{key}"
    cmd = ["icezoo", "reproduce", study.name]
    if data is not None:
        cmd += ["--data", str(data)]
    for flag, value in zip(("--pulsemap", "--truth-table"), tables or (None, None)):
        cmd += [flag, value] if value else []
    if budget is not None:
        cmd += ["--budget", f"'{budget}'" if " " in budget else budget]
    if seeds is not None:
        cmd += ["--seeds", str(seeds)]
    if str(runs_dir) != "runs":
        cmd += ["--runs-dir", str(runs_dir)]
    return Plan(study, bud, seed_list, data, data_dir, study_dir, configs, command=" ".join(cmd))


def check_inputs(plan: Plan, device: str | None) -> None:
    """What every variant's training would check first, checked before anything is written: the
    device, and the data's training and validation files under each variant's split."""
    pick_device(None, device)
    splits = {(c.train.batches, c.train.val_batches) for c in plan.configs.values()}
    for batches, val_batches in sorted(splits, key=str):
        resolve_data(str(plan.data_dir), batches, val_batches, lambda *_a, **_k: None, Distributed())


def _overrides(plan: Plan, label: str) -> dict[str, Any]:
    over = dict(plan.study.overrides(label))
    over["train.max_steps"] = plan.steps[label]
    # the budget decides the length, not the pipeline's epochs: max_steps only caps a run, so a
    # budget beyond the pipeline's epochs (30k events on a 20k-event set, 1 epoch) would stop short.
    # Every epoch has at least one step, so this many epochs always reach the cap.
    over["train.epochs"] = float(plan.steps[label])
    return over


def fix_steps(plan: Plan, device: str | None, log) -> None:
    """Loader steps per variant: from the events budget, or measured for a wall-clock budget (once:
    kept in the study's manifest so a resumed study trains exactly the planned runs). The speed is
    measured once per model size (:func:`size_key`): variants of one size train the same number of
    steps, never a length decided by how loaded the machine was during each one's probe."""
    manifest = plan.study_dir / MANIFEST
    known = read_json(manifest).get("steps", {}) if manifest.is_file() else {}
    speed: dict[str, tuple[str, float]] = {}  # size key -> (variant probed, events/s)
    for label, config in plan.configs.items():
        if label in known:
            plan.steps[label] = int(known[label])
            continue
        bs = config.train.batch_size
        steps = plan.budget.steps(bs)
        if steps is None:  # minutes: a short benchmark of this size on this machine
            key = size_key(config)
            if key not in speed:
                over = {k: v for k, v in plan.study.overrides(label).items() if k != "train.max_steps"}
                res = bench.bench_model(plan.study.pipeline_of(label), overrides=over, steps=5, warmup=2, device=device)
                speed[key] = (label, float(res["train_events_per_s"]))
            probed, rate = speed[key]
            steps = max(1, int(plan.budget.minutes * 60 * rate / bs))
            how = "benchmark" if probed == label else f"benchmark of {probed}, the same size"
            log(f"{label}: {rate:.0f} events/s ({how}) -> {steps} steps in {plan.budget}")
        plan.steps[label] = steps


def size_key(config) -> str:
    """What decides a variant's training speed: its embedder and backbone (the model's size and
    shape), pulses per event, batch size, precision and accumulation; not its features, pooling,
    head, loss or learning rate, which cost little or nothing per step."""
    table = config.to_table()
    ts = config.train
    return json.dumps({"embedder": table.get("embedder"), "backbone": table.get("backbone"),
                       "max_pulses": config.max_pulses, "batch_size": ts.batch_size, "precision": ts.precision,
                       "accumulate": ts.accumulate}, sort_keys=True, default=str)


def write_manifest(plan: Plan) -> None:
    split = read_split(plan.data_dir)
    manifest = {
        "study": plan.study.name, "question": plan.study.question, "file": plan.study.file,
        "budget": str(plan.budget), "seeds": plan.seeds, "data": str(plan.data_dir),
        "simulator_version": _simulator_version(plan.data_dir), "command": plan.command,
        "steps": plan.steps, "split": {"train": split.train_spec, "val": split.val_spec} if split else None,
        "variants": {label: {"pipeline": c.name, "set": plan.study.variants[label].set,
                             "init_from": plan.study.variants[label].init_from,
                             **({"pretrain": plan.study.variants[label].pretrain}
                                if plan.study.variants[label].pretrain is not None else {})}
                     for label, c in plan.configs.items()},
    }
    write_json_atomic(plan.study_dir / MANIFEST, manifest)


def _simulator_version(data_dir: Path) -> str | None:
    f = Path(data_dir) / "icezoo_split.json"
    if f.is_file():
        try:
            return json.loads(f.read_text(encoding="utf-8")).get("simulator_version")
        except ValueError:
            return None
    return None


def _data_origin(data_dir: Path) -> str:
    """What the report says the data is: which simulator made it, or that icezoo did not simulate it."""
    version = _simulator_version(data_dir)
    if version:
        return f"simulator {version}; simulated, not Kaggle"
    if (Path(data_dir) / "simulator_config.json").is_file():
        return "written by icezoo simulate, version not recorded; simulated, not Kaggle"
    return "not simulated by icezoo: scores are on this data"


# ------------------------------------------------------------------------------ running
def run_state(run_dir: Path) -> str:
    """``done`` (finished, reuse), ``resume`` (interrupted or killed with a checkpoint) or ``fresh``
    (nothing there, or an unusable attempt: failed, no checkpoint, or a run.json that cannot be read)."""
    run = RunDir(run_dir)
    if not run.is_run():
        return "fresh"
    try:
        status = run.info().get("status")
    except IcezooError:  # a damaged run.json (truncated by a crash): an unusable attempt, set aside and retrained
        return "fresh"
    if status == "done" and run.checkpoint("best").is_file():
        return "done"
    if status in ("running", "interrupted") and run.checkpoint("last").is_file():
        return "resume"
    return "fresh"


def _set_aside(run_dir: Path) -> Path:
    """A failed run, or one killed before its first checkpoint, is kept (not deleted) under
    ``.stale/`` in the study directory, out of the way of its fresh retry."""
    dest = run_dir.parent / ".stale" / f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), str(dest))
    return dest


class _StepWatcher:
    """Follows the running run's train.log ("step N/M") so the study's bar moves within a run."""

    PATTERN = re.compile(r"step (\d+)/(\d+)")

    def __init__(self, path: Path, update: Callable[[int], None]):
        self.path, self.update = path, update
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=2)

    def _loop(self) -> None:
        offset = 0
        while not self.stop.wait(0.5):
            try:
                with open(self.path, encoding="utf-8") as fh:
                    fh.seek(offset)
                    text = fh.read()
                    offset = fh.tell()
            except OSError:
                continue
            found = self.PATTERN.findall(text)
            if found:
                self.update(int(found[-1][0]))


def train_variant(plan: Plan, label: str, seed: int, device: str | None, on_step: Callable[[int], None],
                  say) -> str:
    """Make sure the run of (label, seed) is finished: reuse, resume or train. Returns what was done."""
    run_dir = plan.run_dir(label, seed)
    state = run_state(run_dir)
    if state == "done":
        return "reused"
    quiet = lambda *_a, **_k: None  # noqa: E731  (the study's bar and lines speak instead)
    if state == "resume":
        opts = TrainOptions(resume=str(run_dir), runs_dir=str(plan.study_dir), progress=False, device=device)
        say(f"{run_dir.name}: resuming from {LAST}")
    else:
        if run_dir.exists():
            say(f"{run_dir.name}: unusable earlier attempt kept in {_set_aside(run_dir)}")
        v = plan.study.variants[label]
        init = None
        if v.init_from is not None:
            init = str(plan.run_dir(v.init_from, seed))
        opts = TrainOptions(pipeline=plan.study.pipeline_of(label), data=plan.data, overrides=_overrides(plan, label),
                            name=plan.run_name(label, seed), runs_dir=str(plan.study_dir), seed=seed, init_from=init,
                            description=f"study {plan.study.name}, variant {label}" +
                                        (f": {v.description}" if v.description else ""),
                            save_every_steps=max(1, plan.steps[label] // 10), progress=False, device=device,
                            objective=v.pretrain)
    try:
        with _StepWatcher(RunDir(run_dir).log_file, on_step):
            training.train(opts, echo=quiet)
    except InterruptedRun:
        raise StudyInterrupted(f"{run_dir.name} interrupted (checkpoint saved); rerun `{plan.command}` to resume") \
            from None
    if run_state(run_dir) != "done":
        raise IcezooError(f"{run_dir}: training ended without finishing (status {RunDir(run_dir).info().get('status')})")
    return "resumed" if state == "resume" else "trained"


def score_run(run_dir: Path, device: str | None = None) -> dict[str, np.ndarray]:
    """Per-event validation errors of a finished run (best.pt on its validation split, scored by the
    evaluation core), cached in the run as val_errors.npz; the summary also goes to the run's
    ledger entry."""
    cached = RunDir(run_dir).val_errors()
    if cached is not None:
        return cached
    scored = score(str(run_dir), run_dir.parent, device=device)
    res, model = scored.res, scored.model
    out = {"event_id": res["event_id"].astype(np.int64), "error": scored.err.astype(np.float64),
           "kappa": res["kappa"].astype(np.float64), "n_params": np.array(sum(p.numel() for p in model.parameters()))}
    scored.run.write_val_errors(out)
    tasks = score_tasks(model, res, None, scored.config.name)  # None for a direction-only pipeline
    scored.run.update(evaluation={**scored.result, **({"tasks": tasks} if tasks else {}), "time": now_iso()})
    return out


def reproduce(name: str, data: str | None = None, budget: str | None = None, seeds: int | None = None,
              runs_dir: str | Path = "runs", device: str | None = None, progress: bool | None = None,
              threads: int | None = None, echo=print, pulsemap: str | None = None,
              truth_table: str | None = None) -> dict[str, Any]:
    """Run (or finish) the study and write its comparison; returns the comparison. ``threads`` sets
    torch's CPU threads (on a CPU shared with other jobs, 1 thread per process is much faster);
    ``pulsemap``/``truth_table`` pick the tables of a GraphNeT ``data``."""
    plan = plan_study(name, data, budget, seeds, runs_dir, log=echo, tables=(pulsemap, truth_table))
    check_inputs(plan, device)  # before the study directory exists: a bad input leaves nothing behind
    if threads is not None:
        from icezoo.engine.device import set_threads

        set_threads(threads)
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    with study_lock(plan.study_dir):
        return _run_study(plan, device, progress, echo)


def _run_study(plan: Plan, device: str | None, progress: bool | None, echo) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    fix_steps(plan, device, echo)
    write_manifest(plan)
    jobs = plan.jobs()
    echo(f"study {plan.study.name}: {len(plan.configs)} variants x {len(plan.seeds)} seed(s) at {plan.budget} each "
         f"on {plan.data_dir}; runs in {plan.study_dir}")
    total = sum(plan.steps[label] for label, _ in jobs)
    done_before = {job: plan.steps[job[0]] if run_state(plan.run_dir(*job)) == "done" else 0 for job in jobs}
    show = sys.stderr.isatty() if progress is None else progress
    console = Console(stderr=True)
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                   disable=not show, transient=False)
    say = console.print if show else echo
    with bar:
        task = bar.add_task(plan.study.name, total=total, completed=sum(done_before.values()))
        finished = sum(done_before.values())
        for i, (label, seed) in enumerate(jobs, 1):
            bar.update(task, description=f"{plan.study.name} [{i}/{len(jobs)}] {label} seed {seed}")
            what = train_variant(plan, label, seed, device,
                                 lambda s, base=finished: bar.update(task, completed=base + s), say)
            finished += plan.steps[label]
            bar.update(task, completed=finished)
            pretraining = plan.study.variants[label].pretrain is not None
            if not pretraining:
                score_run(plan.run_dir(label, seed), device)
            info = RunDir(plan.run_dir(label, seed)).info()
            val = f"masked-pulse loss {info['best_val']:.4f}" if pretraining else f"{info['evaluation']['mean']:.4f}"
            say(f"{plan.run_name(label, seed)}: {what}; {info.get('events_seen', 0):,} events in "
                f"{info.get('train_time_s', 0):.0f} s; validation {val}")
    comparison = compare(plan)
    write_report(plan, comparison)
    echo(report_markdown(plan, comparison, for_console=True))
    echo(f"wrote {plan.study_dir / 'results.md'} and {plan.study_dir / 'forest.png'}")
    return comparison


# ------------------------------------------------------------------------------ comparing
def compare(plan: Plan) -> dict[str, Any]:
    """Per variant: score with its bootstrap CI (errors averaged over seeds, per event), budget
    actually used, and the paired difference to the reference on the common events."""
    per: dict[str, dict[str, Any]] = {}
    for label in plan.study.scored():
        scores = [score_run(plan.run_dir(label, s)) for s in plan.seeds]
        infos = [RunDir(plan.run_dir(label, s)).info() for s in plan.seeds]
        ids = scores[0]["event_id"]
        for sc in scores[1:]:
            ids = np.intersect1d(ids, sc["event_id"])
        errs = np.mean([_take(sc, ids) for sc in scores], axis=0)
        per[label] = {"ids": ids, "err": errs, "summary": summary(errs), "seeds": scores,
                      "seed_means": [float(sc["error"].mean()) for sc in scores],
                      "n_params": int(scores[0]["n_params"]), "events_seen": [int(i.get("events_seen", 0)) for i in infos],
                      "train_time_s": [float(i.get("train_time_s", 0.0)) for i in infos],
                      "device": infos[0].get("device", ""), "val_batches": infos[0]["split"]["val_batches"],
                      "tasks": [(i.get("evaluation") or {}).get("tasks") for i in infos],
                      "train_batches": infos[0]["split"]["train_batches"]}
    vals = {tuple(p["val_batches"]) for p in per.values()}
    if len(vals) != 1:
        raise IcezooError(f"study {plan.study.name}: the variants were validated on different files {sorted(vals)}")
    for label in plan.study.compared():
        ref = per[plan.study.reference_of(label)]
        p = paired(per[label]["ids"], per[label]["err"], ref["ids"], ref["err"])
        v = plan.study.variants[label]
        log_delta = _log_delta(v.log_score, plan.study.variants[plan.study.reference_of(label)].log_score)
        # the interval covers the validation sample; the seeds show the training's own spread
        seed_diffs = [paired(a["event_id"], a["error"], b["event_id"], b["error"]).diff
                      for a, b in zip(per[label]["seeds"], ref["seeds"])]
        per[label].update(paired=p, reading=reading(p, v.log, seed_diffs), log_delta=log_delta, seed_diffs=seed_diffs,
                          reference=plan.study.reference_of(label),
                          events_needed=p.events_to_resolve(log_delta if log_delta else p.diff))
    return per


def _take(scores: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    order = np.argsort(scores["event_id"])
    pos = order[np.searchsorted(scores["event_id"], ids, sorter=order)]
    return scores["error"][pos]


def _log_delta(a: str, b: str) -> float | None:
    def num(text: str) -> float | None:
        m = re.search(r"\d+\.\d+", text or "")
        return float(m.group(0)) if m else None

    x, y = num(a), num(b)
    return None if x is None or y is None else x - y


def report_markdown(plan: Plan, per: dict[str, Any], for_console: bool = False) -> str:
    s = plan.study
    ref = per[s.reference]
    machine = ref["device"]
    lines = [f"### Study `{s.name}`: {s.question}", ""]
    if s.log:
        lines += [f"The log: {s.log}", ""]
    lines += [
        f"- data: {plan.data_dir.name} ({_data_origin(plan.data_dir)}), training files "
        f"{format_batches(ref['train_batches'])}, validation files "
        f"{format_batches(ref['val_batches'])}: {ref['summary']['n_events']:,} events, the same for every variant",
        f"- budget: {plan.budget} per variant and seed; seeds {', '.join(map(str, plan.seeds))}; "
        f"model size {_kv(s.size) or 'as the pipelines'}; common {_kv(s.common) or '-'}",
        f"- machine: {machine}; command: `{plan.command}`",
        "",
        "| variant | pipeline | changes | params | events seen | train s | val mean [95% CI] | "
        f"Δ vs {s.reference} [95% CI] | log | reading |",
        "| :-- | :-- | :-- | --: | --: | --: | :-- | :-- | :-- | :-- |",
    ]
    for label, r in per.items():
        v = s.variants[label]
        sm = r["summary"]
        if label == s.reference:
            delta, rd = "reference", "-"
        else:
            p = r["paired"]
            delta = f"{p.diff:+.4f} [{p.ci95[0]:+.4f}, {p.ci95[1]:+.4f}]"
            delta += f" vs {s.reference_of(label)}" if s.reference_of(label) != s.reference else ""
            rd = r["reading"]
        changes = _kv(v.set) + (f"; init from {v.init_from}" if v.init_from else "")
        log = v.log_score or "-" if label == s.reference else (f"{v.log_score} ({v.log})" if v.log_score else v.log)
        lines.append(f"| {label} | {plan.configs[label].name} | {changes.strip('; ') or '-'} | {r['n_params']:,} | "
                     f"{int(np.mean(r['events_seen'])):,} | {np.mean(r['train_time_s']):.0f} | "
                     f"{sm['mean']:.4f} [{sm['ci95'][0]:.4f}, {sm['ci95'][1]:.4f}] | {delta} | {log} | {rd} |")
    if len(plan.seeds) > 1:
        lines += ["", "Per seed (" + ", ".join(map(str, plan.seeds)) + "), validation mean and Δ vs the reference "
                  "of the same seed: " + "; ".join(
                      f"{label} " + ", ".join(f"{m:.4f}" for m in r["seed_means"]) +
                      (" (Δ " + ", ".join(f"{d:+.4f}" for d in r["seed_diffs"]) + ")" if "seed_diffs" in r else "")
                      for label, r in per.items())]
    pre = [label for label in s.variants if label not in per]
    if pre:
        lines += ["", "Pretraining variants (icezoo pretrain on the training files, labels unused; not scored): " +
                  "; ".join(f"{label} ({_kv(s.variants[label].pretrain) or 'masked_pulse defaults'})" for label in pre)]
    lines += ["", "Δ = variant - reference, mean angular error (rad) per validation event, paired on the same "
              "events (errors averaged over seeds), percentile bootstrap 95% interval (1,000 resamples); "
              "negative = the variant is better. The interval covers the validation sample only, not the spread "
              "of training from another seed" + (" (see the seeds above; a reading needs every seed's Δ on the "
                                                 "same side)" if len(plan.seeds) > 1 else "; one seed was run") + "."]
    tasked = [(label, r["tasks"]) for label, r in per.items() if any(r.get("tasks") or [])]
    if tasked:  # the variants' own task figures (icezoo evaluate RUN prints them in full)
        lines += ["", "Task figures of the variants on the same validation events (bootstrap 95% CI; per seed): " +
                  "; ".join(f"{label} (" + " / ".join(scores_text(t) for t in ts if t) + ")" for label, ts in tasked)
                  + "."]
    needed = [(label, r) for label, r in per.items() if r.get("events_needed")]
    if needed:
        lines += ["Validation events for 80% power at the two-sided 5% level, at the spread seen here, for the log's Δ "
                  "(or the measured Δ where the log gives none): " +
                  "; ".join(f"{label} {r['events_needed']:,}" for label, r in needed) + "."]
    return "\n".join(lines)


def _kv(table: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v if isinstance(v, str) else toml_value(v)}" for k, v in table.items())


def write_report(plan: Plan, per: dict[str, Any]) -> None:
    write_text_atomic(plan.study_dir / "results.md", report_markdown(plan, per) + "\n")
    forest_plot(plan, per, plan.study_dir / "forest.png")
    write_json_atomic(plan.study_dir / "comparison.json", {
        label: {"mean": r["summary"]["mean"], "ci95": r["summary"]["ci95"], "n_events": r["summary"]["n_events"],
                "seed_means": r["seed_means"], "seed_diffs": r.get("seed_diffs"), "n_params": r["n_params"], "events_seen": r["events_seen"],
                "train_time_s": r["train_time_s"],
                **({"diff": r["paired"].diff, "diff_ci95": list(r["paired"].ci95), "reading": r["reading"],
                    "log_delta": r["log_delta"], "events_needed": r["events_needed"]} if "paired" in r else {})}
        for label, r in per.items()})


def forest_plot(plan: Plan, per: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = plan.study.compared()
    fig, ax = plt.subplots(figsize=(6.8, 1.2 + 0.45 * len(labels)))
    crossed = False  # the legend names the log's cross once, on the first row that has one
    for y, label in enumerate(reversed(labels)):
        p = per[label]["paired"]
        color = "tab:green" if p.ci95[1] < 0 else "tab:red" if p.ci95[0] > 0 else "tab:gray"
        ax.errorbar(p.diff, y, xerr=[[p.diff - p.ci95[0]], [p.ci95[1] - p.diff]], fmt="o", color=color, capsize=4)
        if per[label].get("log_delta") is not None:
            ax.plot(per[label]["log_delta"], y, "kx", ms=7, label=None if crossed else "log's Δ")
            crossed = True
    ax.axvline(0.0, color="k", lw=1)
    ax.set_yticks(range(len(labels)), list(reversed(labels)))
    refs = sorted({per[label].get("reference", plan.study.reference) for label in labels})
    ax.set_xlabel(f"Δ mean angular error vs {', '.join(refs)} (rad; < 0: better), paired 95% CI")
    ax.set_title(f"{plan.study.name}: {plan.budget}/variant, seeds {len(plan.seeds)}, "
                 f"n={per[plan.study.reference]['summary']['n_events']:,} val events", fontsize=9)
    if crossed:
        ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
