"""``icezoo experiments``: the experiment log as a table, beside this machine's runs.

The log's rows ship with the package (``icezoo/resources/experiment_log.toml``: name, score as
written, config name, training set, one-line summary, in the log's order). Each row is matched to
the registered pipeline that reproduces it (its ``experiment`` field, else the log's config name);
a row whose pipeline no installed plugin provides yet says "pipeline pending". Where the ledger
(``--runs-dir``) holds runs of that pipeline, the best one is shown: its validation score with the
95% interval, the data it was scored on and its budget (events seen, training wall time, machine).
Scores the log gave as words (nan, NG, BAD, SAME, ES, NE) keep the word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from icezoo import zoo  # registry() looked up when called: a replaced one (tests) is used
from icezoo.core.errors import IcezooError
from icezoo.core.names import normalise, read_toml
from icezoo.data.io import format_batches
from icezoo.engine.runs import all_runs, score_of
from icezoo.resources import experiment_log_toml

FIELDS = ("name", "log_score", "config", "trn_set", "summary")


def log_rows(path: Path | None = None) -> list[dict[str, str]]:
    """The log's rows in its order."""
    path = Path(path or experiment_log_toml())
    rows = read_toml(path).get("rows")
    if not isinstance(rows, list) or not rows:
        raise IcezooError(f"{path}: no [[rows]] entries")
    for i, row in enumerate(rows):
        missing = [f for f in FIELDS if not isinstance(row.get(f), str)]
        if missing:
            raise IcezooError(f"{path}: rows.{i}.{missing[0]}: missing or not text")
    return rows


def pipeline_of(row: dict[str, str], reg) -> Any | None:
    """The registered pipeline of a log row: the one whose ``experiment`` is the row's name (or its
    config name), else the one named like the config; None when none is registered yet. Empty names
    never match: a row without a config name is not every pipeline without an ``experiment``."""
    keys = {normalise(row["name"]), normalise(row["config"])} - {""}
    for src in reg.pipelines.values():
        experiment = normalise(str(src.table.get("experiment", "")))
        if experiment and experiment in keys:
            return src
    try:
        return reg.pipelines.find(row["config"]) if row["config"] else None
    except IcezooError:
        return None


def _scored_on(info: dict[str, Any]) -> tuple[str | None, str]:
    """(data directory, text) of the run's validation score."""
    ev = info.get("evaluation") or {}
    split = info.get("split") or {}
    data = ev.get("data") or split.get("data_dir")
    label = split.get("data") or data or "?"
    where = f"{label}, val files {format_batches(split.get('val_batches', []))}"
    if ev.get("n_events"):
        where += f", n={ev['n_events']:,}"
    return data, where


def best_runs(runs_dir: Path | str, data: str | None = None) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Per pipeline (normalised name), its run with the lowest validation score (on ``data`` only
    when given)."""
    want = Path(data).resolve() if data else None
    best: dict[str, tuple[float, Path, dict[str, Any]]] = {}
    for path, info in all_runs(Path(runs_dir)):
        value, _ = score_of(info)
        if value is None:
            continue
        scored, _ = _scored_on(info)
        if want is not None and (scored is None or Path(scored).resolve() != want):
            continue
        key = normalise(str(info.get("pipeline", "")))
        if key not in best or value < best[key][0]:
            best[key] = (value, path, info)
    return {k: (p, i) for k, (_, p, i) in best.items()}


def experiments_table(runs_dir: Path | str = "runs", data: str | None = None, reg=None) -> list[dict[str, str]]:
    reg = reg or zoo.registry()
    best = best_runs(runs_dir, data)
    out = []
    for row in log_rows():
        src = pipeline_of(row, reg)
        entry = {"name": row["name"], "log_score": row["log_score"] or "-", "trn_set": row["trn_set"] or "-",
                 "pipeline": src.name if src else f"{row['config'] or '-'} (pipeline pending)",
                 "description": str(src.table.get("description", "")) if src else row["summary"],
                 "score": "-", "scored_on": "-", "budget": "-"}
        hit = best.get(normalise(src.name)) if src else None
        if hit:
            path, info = hit
            _, text = score_of(info)
            note = "" if (info.get("evaluation") or {}).get("mean") is not None else ", val during training"
            entry["score"] = f"{text.split(' (')[0]} ({path.name}{note})"
            entry["scored_on"] = _scored_on(info)[1]
            entry["budget"] = (f"{int(info.get('events_seen') or 0):,} events, {float(info.get('train_time_s') or 0):.0f} s"
                               f" on {info.get('device', '?')}")
        out.append(entry)
    return out


COLUMNS = (("name", "EXP_NAME"), ("pipeline", "PIPELINE"), ("description", "DESCRIPTION"), ("log_score", "LOG SCORE"),
           ("trn_set", "LOG TRN_SET"), ("score", "BEST RUN HERE (val, 95% CI)"), ("scored_on", "SCORED ON"),
           ("budget", "BUDGET"))


def experiments_markdown(rows: list[dict[str, str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + " :-- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[k]) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)
