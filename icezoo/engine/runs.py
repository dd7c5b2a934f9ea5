"""Run directories and the run ledger.

A run directory (``RUNS/NAME``) holds everything needed to understand and reproduce a run::

    config.toml          the resolved pipeline (every component's params filled in), TOML
    run.json             the ledger entry: name, pipeline, description, command, status, split,
                         scores, NaN-guard counters, git commit, package versions, timings
    metrics.json         per-epoch training/validation history and the last evaluation
    metrics.csv          the same history as a table (one row per epoch), for any plotting tool
    tensorboard/         the same scalars for TensorBoard, when the tensorboard package is installed
    command.txt          the exact icezoo command that reproduces the run
    train.log            the log file (also evaluate/predict lines)
    checkpoints/last.pt  the latest state (model, optimizer, scheduler, sampler position, RNG states)
    checkpoints/best.pt  the weights best on validation
    plots/*.png          written by ``icezoo evaluate``
    calibration.json     the predicted-kappa map of ``icezoo calibrate`` (applied by predict)

:class:`RunDir` is the one object that reads and writes these files (other modules ask it for
a checkpoint's path, the run's info, its history, its log); the functions below it find runs,
list them as the ledger and format its table. The ledger is the set of ``run.json`` files under
the runs directory: nothing is shared between runs, so concurrent runs never race on one file.
Every JSON file is written atomically.
"""

from __future__ import annotations

import datetime as _dt
import errno
import importlib.metadata as md
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from icezoo.core.atomic import WriteError, atomic_path, readable_file, write_text_atomic
from icezoo.core.errors import IcezooError
from icezoo.core.names import normalise
from icezoo.data.io import format_batches

DEFAULT_RUNS_DIR = Path("runs")
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
METRICS_CSV = "metrics.csv"
#: the columns of metrics.csv, in order (the keys of a history entry)
HISTORY_COLUMNS = ("epoch", "step", "train_loss", "val_mean", "lr", "events_per_s", "elapsed_s", "precision")
CONFIG_FILE = "config.toml"
COMMAND_FILE = "command.txt"
PLOTS_DIR = "plots"
ERRORS_FILE = "val_errors.npz"
CALIBRATION_FILE = "calibration.json"
LOG_FILE = "train.log"
LAST = "checkpoints/last.pt"
BEST = "checkpoints/best.pt"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else (missing, truncated, a list) is one IcezooError."""
    try:
        data = json.loads(readable_file(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IcezooError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise IcezooError(f"{path}: unreadable (not UTF-8 text: {exc.reason})") from None
    except ValueError as exc:
        raise IcezooError(f"{path}: unreadable (not valid JSON, truncated?: {exc})") from None
    except OSError as exc:
        raise IcezooError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise IcezooError(f"{path}: unreadable (expected a JSON object, found {type(data).__name__})")
    return data


#: the run.json fields other code reads, and the JSON type each must have when present
RUN_FIELDS = {"name": str, "pipeline": str, "description": str, "command": str, "status": str, "started": str,
              "split": dict, "options": dict, "precision": dict, "nan_guard": dict, "evaluation": dict,
              "best_val": (int, float), "resumed": int, "objective": dict}
SPLIT_FIELDS = {"data_dir": str, "train_batches": list, "val_batches": list, "pulsemap": str, "truth_table": str}
EVALUATION_FIELDS = {"mean": (int, float), "ci95": list, "n_events": int, "split": str}


# ------------------------------------------------------------------------------ provenance
def git_commit() -> str:
    """The commit of the source tree icezoo runs from (``+dirty`` with local changes), or ''."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return ""
        commit = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return commit + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("icezoo", "torch", "numpy", "polars", "pyarrow", "pydantic", "x-transformers", "pluggy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


# ------------------------------------------------------------------------------ a run directory
class RunDir:
    """A run's directory and the one reader and writer of its files (config.toml, command.txt,
    run.json: its status and ledger entry, metrics.json/.csv, train.log, val_errors.npz,
    calibration.json); the
    checkpoints, plots and prediction caches are written by their makers at the paths this names."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # ---- finding and creating
    @classmethod
    def create(cls, runs_dir: Path, name: str) -> "RunDir":
        """Create ``runs_dir/name`` (``name-2``, ``name-3``... when taken) with its checkpoints folder."""
        runs_dir = Path(runs_dir)
        safe = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name) or "run"
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
            for i in range(1, 10_000):
                path = runs_dir / (safe if i == 1 else f"{safe}-{i}")
                try:
                    path.mkdir()
                    (path / "checkpoints").mkdir()
                    return cls(path)
                except FileExistsError:
                    continue
        except OSError as exc:  # read-only or full filesystem, a file where the directory should be
            raise IcezooError(f"--runs-dir {runs_dir}: cannot create a run directory ({exc.strerror or exc})") from None
        raise IcezooError(f"{runs_dir}: cannot find a free run directory name for '{name}'")

    @classmethod
    def find(cls, run: str | Path, runs_dir: Path | None = None) -> "RunDir":
        """The run named by a directory, a name in ``runs_dir`` or ``last`` (see :func:`resolve_run`)."""
        return cls(resolve_run(run, runs_dir))

    # ---- paths of its files
    @property
    def info_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    @property
    def plots(self) -> Path:
        return self.path / PLOTS_DIR

    @property
    def predictions(self) -> Path:
        """Cached predictions of the run's model (the kappa filter of runs fine-tuned from it)."""
        return self.path / "predictions"

    def checkpoint(self, which: str = "best") -> Path:
        """The path of ``best`` (the weights best on validation) or ``last`` (the full state)."""
        if which not in ("best", "last"):
            raise ValueError(f"checkpoint: 'best' or 'last', not {which!r}")
        return self.path / (BEST if which == "best" else LAST)

    def is_run(self) -> bool:
        """Whether the directory has a run.json (its start got that far)."""
        return self.info_file.is_file()

    # ---- run.json: status, options, split, scores
    def info(self) -> dict[str, Any]:
        """run.json, its shape checked: one IcezooError naming the file and field when it is not
        what icezoo writes (so a damaged run is refused in one line, never a traceback)."""
        info = read_json(self.info_file)
        _check_fields(self.info_file, "", info, RUN_FIELDS)
        if isinstance(info.get("split"), dict):  # types checked where present; what reads a field needs it
            _check_fields(self.info_file, "split.", info["split"], SPLIT_FIELDS)
            for key in ("train_batches", "val_batches"):  # batch ids: whole numbers (issue 27, C7/C8)
                _check_items(self.info_file, f"split.{key}", info["split"].get(key) or [], int)
        if isinstance(info.get("evaluation"), dict):
            _check_fields(self.info_file, "evaluation.", info["evaluation"], EVALUATION_FIELDS)
            ci95 = info["evaluation"].get("ci95")
            if ci95 is not None and len(ci95) != 2:
                raise IcezooError(f"{self.info_file}: unreadable (evaluation.ci95 has {len(ci95)} values, expected 2)")
            _check_items(self.info_file, "evaluation.ci95", ci95 or [], (int, float), none_ok=True)
        return info

    def data_tables(self) -> tuple[str | None, str | None]:
        """(pulsemap, truth_table) the run was trained with (``--pulsemap``/``--truth-table`` of a
        GraphNeT source; None where not given): evaluate and predict take them as defaults."""
        split = self.info().get("split") or {}
        return split.get("pulsemap"), split.get("truth_table")

    def start(self, info: dict[str, Any], config_toml: str, command: str) -> None:
        """A new run's config.toml (the resolved pipeline), command.txt and run.json."""
        write_text_atomic(self.path / CONFIG_FILE, config_toml)
        write_text_atomic(self.path / COMMAND_FILE, command + "\n")
        write_json_atomic(self.info_file, info)

    def update(self, **changes: Any) -> dict[str, Any]:
        """Change fields of run.json (atomically). On a full disk the new state (``failed``, say) is
        written in place, compacted, when it fits in the old file's blocks: a run stopped by a full disk
        must not stay marked ``running``."""
        path = self.info_file
        info = self.info() if path.is_file() else {}
        info.update(changes)
        try:
            write_json_atomic(path, info)
        except WriteError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.is_file():
                raise
            text = json.dumps(info, separators=(",", ":"), default=_json_default)
            if len(text.encode()) > path.stat().st_size:
                raise
            with open(path, "r+", encoding="utf-8") as fh:  # overwrites allocated blocks: needs no free space
                fh.write(text)
                fh.truncate()
        return info

    def ledger_row(self, info: dict[str, Any] | None = None) -> dict[str, Any]:
        """The run's row of the ledger table (from ``info`` when given, else its run.json)."""
        return _ledger_row(self.path, self.info() if info is None else info)

    # ---- metrics.json / metrics.csv / tensorboard
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch history of the run (empty when it has none yet)."""
        path = self.path / METRICS_FILE
        if not path.is_file():
            return []
        history = read_json(path).get("history", [])
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise IcezooError(f"{path}: unreadable (history is not a list of epochs)")
        return history

    def write_history(self, history: list[dict[str, Any]], best_val: float | None) -> None:
        """The per-epoch history as metrics.json (keeping a stored evaluation), metrics.csv and, when
        the tensorboard package is installed, TensorBoard scalars of the newest epoch."""
        self._write_metrics(history=history, best_val=best_val)
        lines = [",".join(HISTORY_COLUMNS)]
        for entry in history:
            lines.append(",".join("" if entry.get(c) is None else str(entry.get(c)) for c in HISTORY_COLUMNS))
        write_text_atomic(self.path / METRICS_CSV, "\n".join(lines) + "\n")
        if history:
            _tensorboard(self.path, history[-1])

    def record_evaluation(self, result: dict[str, Any], ledger: bool) -> None:
        """An evaluation into metrics.json and, with ``ledger``, into run.json as the run's score."""
        self._write_metrics(evaluation=result, strict=True)
        if ledger:
            self.update(evaluation=result)

    def _write_metrics(self, strict: bool = False, **fields: Any) -> None:
        """Set ``fields`` of metrics.json, keeping the others (an unreadable file: an error with
        ``strict``, else started afresh)."""
        path = self.path / METRICS_FILE
        old: dict[str, Any] = {}
        if path.is_file():
            try:
                old = read_json(path)
            except IcezooError:
                if strict:
                    raise
        write_json_atomic(path, {**old, **fields})

    # ---- val_errors.npz (the studies' per-event validation errors)
    def val_errors(self) -> dict[str, np.ndarray] | None:
        """The cached per-event validation errors, or None when there are none, best.pt is newer, or
        the file is damaged (truncated, pickled objects, arrays of the wrong shape): a stale cache
        is scored anew and rewritten (issue 27, C6)."""
        path, best = self.path / ERRORS_FILE, self.checkpoint("best")
        if not path.is_file() or not best.is_file() or path.stat().st_mtime < best.stat().st_mtime:
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
        except Exception:  # noqa: BLE001 - not a zip, truncated, object arrays: rebuilt, never used
            return None
        cols = [out.get(k) for k in ("event_id", "error", "kappa")]
        if any(c is None or c.ndim != 1 or c.dtype.kind not in "iuf" for c in cols) or len({len(c) for c in cols}) != 1:
            return None
        return out

    def write_val_errors(self, arrays: dict[str, np.ndarray]) -> None:
        """Cache per-event validation errors (numpy arrays, no pickles), atomically."""
        with atomic_path(self.path / ERRORS_FILE) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    # ---- calibration.json (icezoo calibrate: the predicted-kappa map)
    @property
    def calibration_file(self) -> Path:
        return self.path / CALIBRATION_FILE

    def calibration(self) -> dict[str, Any] | None:
        """The run's kappa calibration (checked: one IcezooError naming the file and field), or None."""
        from icezoo.engine.vmf import check

        path = self.calibration_file
        return check(read_json(path), path) if path.is_file() else None

    def write_calibration(self, cal: dict[str, Any]) -> None:
        """Store the kappa calibration as JSON, atomically."""
        write_json_atomic(self.calibration_file, cal)

    # ---- train.log
    def log(self, echo=None) -> "RunLog":
        """A writer of timestamped lines to the run's log file (and to ``echo``)."""
        return RunLog(self.log_file, echo=echo)


def _tensorboard(run_dir: Path, entry: dict[str, Any]) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: tensorboard is not a dependency
        return
    with SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard")) as writer:
        for key in ("train_loss", "val_mean", "lr", "events_per_s"):
            if isinstance(entry.get(key), (int, float)):
                writer.add_scalar(key, entry[key], global_step=int(entry.get("step", 0)))


# ------------------------------------------------------------------------------ finding runs
def resolve_run(run: str | Path, runs_dir: Path | None = None) -> Path:
    """RUN is a run directory path, a run name inside ``runs_dir`` (default ./runs), or ``last``
    (the most recently started run there)."""
    if str(run) == "last" and not Path(run).exists():
        runs = all_runs(runs_dir)
        if not runs:
            raise IcezooError(f"run 'last': no runs in {runs_dir or DEFAULT_RUNS_DIR}/ (train something first)")
        return max(runs, key=lambda pair: (str(pair[1].get("started", "")), pair[0].name))[0]
    path = Path(run)
    if (path / RUN_FILE).is_file():
        return path
    candidate = Path(runs_dir or DEFAULT_RUNS_DIR) / str(run)
    if (candidate / RUN_FILE).is_file():
        return candidate
    if path.is_dir() or candidate.is_dir():
        where = path if path.is_dir() else candidate
        raise IcezooError(f"{where}: not a run directory (no {RUN_FILE})")
    raise IcezooError(f"run '{run}' not found (neither a directory nor a run in {runs_dir or DEFAULT_RUNS_DIR}/)")


def distinct_runs(runs: list[str], runs_dir: Path | None = None) -> None:
    """Several runs (an ensemble, a comparison) must be different runs: one named twice would be
    counted twice ('2 run(s)') and shown once."""
    seen: dict[Path, str] = {}
    for run in runs:
        path = resolve_run(run, runs_dir).resolve()
        if path in seen:
            raise IcezooError(f"run '{run}' is named twice ('{seen[path]}' is the same run {path.name}): "
                              f"name each run once")
        seen[path] = str(run)


def _check_fields(path: Path, prefix: str, table: dict, fields: dict, required: bool = False) -> None:
    for key, kind in fields.items():
        if key not in table or table[key] is None:
            if required:
                raise IcezooError(f"{path}: unreadable (no {prefix}{key})")
            continue
        value = table[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            want = kind.__name__ if isinstance(kind, type) else "a number"
            raise IcezooError(f"{path}: unreadable ({prefix}{key} is {json.dumps(value)[:40]}, expected {want})")


def _check_items(path: Path, where: str, items: list, kind, none_ok: bool = False) -> None:
    for item in items:
        if (item is None and none_ok) or (isinstance(item, kind) and not isinstance(item, bool)):
            continue
        want = kind.__name__ if isinstance(kind, type) else "a number"
        raise IcezooError(f"{path}: unreadable ({where} holds {json.dumps(item)[:40]}, expected {want})")


def unfinished_note(run_dir: Path, info: dict[str, Any], checkpoint: Path | None = None) -> str | None:
    """A warning for scoring or predicting with a run that has not finished (``running``, ``failed``,
    ``interrupted``): its checkpoint is a snapshot, not the run's result. None for a finished run."""
    status = info.get("status")
    if status in (None, "done"):
        return None
    why = {"running": "is still training (or was killed)", "failed": "failed", "interrupted": "was interrupted"}
    text = f"warning: {run_dir} {why.get(status, f'has status {status!r}')}"
    if status == "failed" and info.get("error"):
        text += f" ({str(info['error'])[:100]})"
    where = f"{Path(checkpoint).name} as it is now" if checkpoint else "its checkpoint as it is now"
    return text + f": using {where}, not the run's final result"


def scan_runs(runs_dir: Path | None = None) -> list[tuple[Path, dict[str, Any] | None, str | None]]:
    """Every directory under ``runs_dir`` as (path, run info, None), or (path, None, why it is not a
    readable run): nothing is hidden, a damaged run shows up as such."""
    runs_dir = Path(runs_dir or DEFAULT_RUNS_DIR)
    if not runs_dir.is_dir():
        return []
    out = []
    for path in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (path / RUN_FILE).is_file():
            out.append((path, None, f"no {RUN_FILE}: not a run, or its start was interrupted"))
            continue
        try:
            out.append((path, RunDir(path).info(), None))
        except IcezooError as exc:
            out.append((path, None, str(exc).split(": ", 1)[-1]))
    return out


def all_runs(runs_dir: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """The readable runs under ``runs_dir`` (see :func:`scan_runs` for all of them)."""
    return [(path, info) for path, info, _ in scan_runs(runs_dir) if info is not None]


def newest_successful_run(pipeline: str, runs_dir: Path | None = None, pretraining: bool = False) -> RunDir:
    """The most recently finished successful run of ``pipeline`` (for a pipeline's ``init_from``): a
    training run, or with ``pretraining`` an ``icezoo pretrain`` run."""
    key = normalise(pipeline)
    done = [(info.get("finished", ""), path) for path, info in all_runs(runs_dir)
            if normalise(str(info.get("pipeline", ""))) == key and info.get("status") == "done"
            and (path / BEST).is_file() and (info.get("objective") is not None) == pretraining]
    if not done:
        what, cmd = ("pretraining run", "pretrain") if pretraining else ("successful run", "train")
        raise IcezooError(
            f"init_from = '{'pretrain:' if pretraining else ''}{pipeline}': no {what} of pipeline {pipeline} in "
            f"{runs_dir or DEFAULT_RUNS_DIR}/ ({cmd} it first: icezoo {cmd} --pipeline {pipeline}, or pass --init-from RUN)"
        )
    return RunDir(max(done)[1])



# ------------------------------------------------------------------------------ ledger
def score_of(info: dict[str, Any]) -> tuple[float | None, str]:
    """(value for sorting, text for the table) of a run's score: the evaluation when there is one,
    else the best validation score seen in training."""
    ev = info.get("evaluation")
    if ev and ev.get("mean") is not None:
        lo, hi = ev.get("ci95", [None, None])
        text = f"`{ev['mean']:.4f}`"
        if lo is not None:
            text += f" [{lo:.4f}, {hi:.4f}]"
        text += f" ({ev.get('split', 'val')}, n={ev.get('n_events', '?')}"
        if ev.get("linefit_mean") is not None:
            text += f"; LineFit {ev['linefit_mean']:.4f}"
        text += ")"
        if ev.get("tasks"):  # one score per task beside the direction's (icezoo.engine.task_metrics)
            from icezoo.engine.task_metrics import scores_text

            text += "; " + scores_text(ev["tasks"]) if scores_text(ev["tasks"]) else ""
        return float(ev["mean"]), text
    best = info.get("best_val")
    if best is not None and info.get("objective") is not None:  # not a direction score: never sorted among them
        return None, f"`{best:.4f}` ({info.get('metric', 'pretraining loss')}, pretraining)"
    if best is not None:
        return float(best), f"`{best:.4f}` (val during training)"
    status = info.get("status", "")
    return None, status or "-"


def _ledger_row(path: Path, info: dict[str, Any]) -> dict[str, Any]:
    value, score = score_of(info)
    desc = info.get("description") or ""
    notes = []
    if info.get("status") not in (None, "done"):
        notes.append(f"status: {info.get('status')}")
        if info.get("error"):
            notes.append(str(info["error"])[:120])
    nan = info.get("nan_guard") or {}
    if nan.get("skipped"):
        notes.append(f"NaN guard: {nan['skipped']} steps skipped")
    if nan.get("fell_back_to_fp32_at_step") is not None:
        notes.append(f"fell back to fp32 at step {nan['fell_back_to_fp32_at_step']}")
    if info.get("init_from"):
        notes.append(f"init from {info['init_from']}")
    if notes:
        desc = (desc + " " if desc else "") + "(" + "; ".join(notes) + ")"
    split = info.get("split") or {}
    trn = f"`{split.get('train_spec', '?')}`"
    if split.get("train_batches"):
        trn += f" train {format_batches(split['train_batches'])}, val {format_batches(split.get('val_batches', []))}"
    if split.get("data"):
        trn += f" of {split['data']}"
    return {"name": info.get("name", path.name), "value": value, "score": score, "description": desc,
            "script": f"`{info.get('command', '')}`", "trn_set": trn, "pipeline": info.get("pipeline", ""),
            "started": info.get("started", "")}


def ledger_rows(runs_dir: Path | None = None, sort: str | None = None, filter_text: str | None = None,
                names: list[str] | None = None):
    """One row per run directory (only the runs ``names`` names, when given); one whose run.json
    cannot be read is a row saying why."""
    wanted = {resolve_run(n, runs_dir).name for n in names} if names else None
    rows = []
    for path, info, problem in scan_runs(runs_dir):
        row = None
        if info is not None:
            try:
                row = RunDir(path).ledger_row(info)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a field of an unexpected shape
                problem = f"unreadable ({exc.__class__.__name__}: {exc})"
        if row is None:
            row = {"name": path.name, "value": None, "score": "-" if problem.startswith("no ") else "unreadable",
                   "description": problem if problem.startswith("no ") else f"{RUN_FILE} {problem}", "script": "", "trn_set": "", "pipeline": "", "started": ""}
        if wanted is not None and row["name"] not in wanted:
            continue
        if filter_text:
            hay = " ".join(str(v) for v in row.values()).lower()
            if filter_text.lower() not in hay:
                continue
        rows.append(row)
    if sort in ("score", "SCORE"):
        rows.sort(key=lambda r: (r["value"] is None, r["value"] if r["value"] is not None else 0.0))
    elif sort in ("name", "EXP_NAME"):
        rows.sort(key=lambda r: r["name"])
    elif sort in (None, "time", "started"):
        rows.sort(key=lambda r: r["started"])
    else:
        raise IcezooError(f"--sort {sort}: expected score, name or time")
    return rows


def ledger_markdown(rows: list[dict[str, Any]]) -> str:
    """The experiment log's table: ``| EXP_NAME | SCORE | DESCRIPTION | SCRIPT | TRN_SET |``."""

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| EXP_NAME | SCORE | DESCRIPTION | SCRIPT | TRN_SET |",
             "| :------- | :---- | :---------- | :----- | :------ |"]
    for r in rows:
        lines.append("| " + " | ".join(cell(r[k]) for k in ("name", "score", "description", "script", "trn_set")) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ logging
class RunLog:
    """Appends timestamped lines to the run's log file (and optionally echoes them)."""

    def __init__(self, path: Path | None, echo=None, keep: bool = False):
        self.path = Path(path) if path else None
        self.echo = echo
        #: with ``keep`` and no file yet, lines wait here for :meth:`attach` (a run's directory is made
        #: only after its inputs are checked, and what was said meanwhile belongs in its log)
        self.kept: list[str] | None = [] if keep else None

    def attach(self, path: Path) -> "RunLog":
        """Start writing to ``path``, first the lines kept so far."""
        self.path = Path(path)
        if self.kept:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.writelines(f"{line}\n" for line in self.kept)
        self.kept = None
        return self

    def __call__(self, message: str, echo: bool = True) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(f"{now_iso()} {message}\n")
        elif self.kept is not None:
            self.kept.append(f"{now_iso()} {message}")
        if echo and self.echo is not None:
            self.echo(message)
