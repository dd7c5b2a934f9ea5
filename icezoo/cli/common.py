"""What several commands share: ``--set`` parsing, writing a file the user named, plain tables, and the
``--pulsemap``/``--truth-table`` options of every command with ``--data``."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from icezoo.core.errors import IcezooError

PRECISION_HELP = "fp32 | bf16 | fp16 (autocast; losses stay fp32)"


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values are read as TOML (``8``, ``true``, ``"x"``, ``[1,2]``), else as text."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise IcezooError(f"--set {item}: expected key=value (e.g. backbone.depth=8)")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError as exc:
            if raw.strip()[:1] in ("{", "[", '"', "'"):  # meant as TOML (a table, array, string): say why not
                raise IcezooError(f"--set {key.strip()}: not a valid TOML value "
                                  f"({str(exc).split(' (at line')[0]}): {raw}") from None
            value = raw
        out[key.strip()] = value
    return out


def write_text_atomic(path: Path, text: str, inputs=()) -> None:
    """Write a file the user named (``--save``): one-line errors for a missing directory, a directory
    given as the file, one of the command's ``inputs`` or a path inside a dataset or run directory
    (:func:`icezoo.core.outputs.check_output`), then the core's atomic write (temporary name, rename)."""
    from icezoo.core.outputs import check_output

    path = check_output(path, "--save", inputs=[i for i in inputs if i is not None])
    if path.parent and not path.parent.exists():
        raise IcezooError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise IcezooError(f"{path}: is a directory (give a file name)")
    from icezoo.core.atomic import write_text_atomic as write

    write(path, text)


def _properties_text(cls) -> str:
    props = sorted(cls.properties)
    try:
        cfg = cls.Config.model_validate(cls.example_params)
        props = sorted(cls.declared_properties(cfg) | (cls.properties if cls.kind != "backbone" else frozenset()))
    except Exception:  # a component whose defaults are not valid: show the class-level declaration
        pass
    extra = []
    if getattr(cls, "output", None) and cls.kind == "head":
        extra.append(f"output={cls.output}")
    if cls.kind == "loss":
        extra.append("accepts=" + "|".join(sorted(cls.accepts)))
    needs = [f"needs {r}" for r in sorted(cls.requires)]
    return ", ".join([*props, *needs, *extra]) or "-"


def terminal_width() -> int | None:
    """Columns to fit: the terminal's (or $COLUMNS); None when stdout is not a terminal (no cutting)."""
    import os
    import shutil
    import sys

    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return shutil.get_terminal_size().columns
    return None


def compact_table(headers: tuple[str, ...], rows: list[tuple[str, ...]], width: int | None) -> str:
    """Plain columns, never wrapped: every column as wide as its longest cell except the last,
    which is cut (``...``) to fit ``width`` (no cut when ``width`` is None). Names stay whole."""
    def cut(text: str, n: int) -> str:
        return text if len(text) <= n else text[:n - 3] + "..."

    def column_widths(table) -> list[int]:  # table[0] is the header row
        return [max(len(r[i]) for r in table) for i in range(len(headers) - 1)]

    if width is not None:  # middle columns (experiment, parent, ...) give way too, the first never
        for cap in range(18, 3, -1):
            cut_rows = [(r[0], *(cut(c, cap) for c in r[1:-1]), r[-1]) for r in rows]
            cut_headers = (headers[0], *(cut(h, cap) for h in headers[1:-1]), headers[-1])
            if sum(w + 2 for w in column_widths([cut_headers, *cut_rows])) + 12 <= width:
                break
        rows, headers = cut_rows, cut_headers
    widths = column_widths([headers, *rows])
    room = None if width is None else max(width - sum(w + 2 for w in widths), 0)

    def line(cells) -> str:
        last = cells[-1]
        if room is not None and len(last) > room:
            last = cut(last, room) if room >= 8 else ""
        return ("  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths)) + "  " + last).rstrip()

    return "\n".join([line(headers), line(tuple("-" * len(h) for h in headers)), *(line(r) for r in rows)])


def component_details(spec) -> str:
    """Everything about one component: what it is, its params with types and defaults, its properties."""
    from icezoo.core.components import STAGES

    cls = spec.cls
    stage = next((st for st in STAGES if st.kind == spec.kind), None)
    lines = [f"{spec.name} ({spec.kind}, {spec.provider})"]
    doc = " ".join((cls.__doc__ or "").split())
    if doc:
        lines.append(f"  {doc}")
    if cls.aliases:
        lines.append(f"  aliases: {', '.join(cls.aliases)}")
    if stage is not None:
        lines.append(f"  stage: a pipeline names {'a list' if stage.many else 'one'} ({stage.key} = ...)")
    lines.append("  parameters:" if cls.Config.model_fields else "  parameters: none")
    for name, field in cls.Config.model_fields.items():
        kind = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        default = "required" if field.is_required() else f"= {field.get_default(call_default_factory=True)!r}"
        note = f"  ({field.description})" if field.description else ""
        lines.append(f"    {name}: {kind} {default}{note}")
    lines.append(f"  properties: {_properties_text(cls)}")
    return "\n".join(lines)


PULSEMAP_HELP = "pulse table of a GraphNeT file or folder (default: the only one)"
TRUTH_HELP = "truth table of a GraphNeT file or folder (default: truth)"


def pulsemap_option():
    import typer

    return typer.Option(None, "--pulsemap", help=PULSEMAP_HELP)


def truth_table_option():
    import typer

    return typer.Option(None, "--truth-table", help=TRUTH_HELP)


def run_tables(data, runs, runs_dir) -> tuple[Any, str | None, str | None]:
    """(data, pulsemap, truth_table) a command on ``runs`` defaults to: the tables the first run that
    stored any was trained with, on ``data`` (the run's own data when None), where that data is a
    GraphNeT source. A stored pulse map the data lacks is one line naming it; a bad run is left to the
    command's own check."""
    from icezoo.engine.runs import RunDir

    for name in runs or ():
        try:
            run = RunDir.find(name, runs_dir)
            pulsemap, truth_table = run.data_tables()
            target = data if data is not None else (run.info().get("split") or {}).get("data_dir")
        except IcezooError:
            return data, None, None
        if pulsemap or truth_table:
            break
    else:
        return data, None, None
    if target is None or not Path(target).exists():
        return data, None, None
    from icezoo.data.formats import open_source

    src = open_source(target)
    if src.format == "kaggle" or not hasattr(src, "_tables"):  # a plugin format has its own tables, if any
        return data, None, None
    tables = src._tables()
    if pulsemap and pulsemap not in tables:
        raise IcezooError(f"--data {target}: no pulse table '{pulsemap}' (run {run.name} was trained on it; "
                          f"tables: {', '.join(tables)}): pick one with --pulsemap")
    return target, pulsemap, truth_table if truth_table in tables else None


def use_data(data, pulsemap: str | None, truth_table: str | None, runs=None, runs_dir=None) -> None:
    """Open ``--data`` with the table options, when given (a missing path, or --data without them, is left
    to the command, whose own checks, a pipeline's first, then come before any data message). With
    ``runs`` (evaluate, predict, train --resume) and no table option, the runs' stored tables are the
    defaults (see :func:`run_tables`)."""
    if runs and not (pulsemap or truth_table):
        data, pulsemap, truth_table = run_tables(data, runs, runs_dir)
    if data is None:
        if pulsemap or truth_table:
            raise IcezooError("--pulsemap/--truth-table name tables of --data (a GraphNeT file or folder): give --data")
        return
    if not Path(data).exists() or not (pulsemap or truth_table):
        return  # without table options the command opens --data itself, after its own checks (a pipeline's first)
    from icezoo.data.formats import open_source

    src = open_source(data, pulsemap, truth_table)
    if src.format == "kaggle" and (pulsemap or truth_table):
        raise IcezooError(f"--data {data}: a Kaggle-layout folder has no pulse maps or truth tables "
                          f"(--pulsemap/--truth-table are for GraphNeT files)")


def run_training(opts, command: str, next_hint: str) -> None:
    """Train (or pretrain) with ``opts``; Ctrl-C: the resume line for ``icezoo COMMAND``, exit 130;
    done: the run and ``next_hint`` (with ``{run}`` filled in)."""
    import sys

    from icezoo.engine.train import InterruptedRun, train

    try:
        run_dir = train(opts)
    except InterruptedRun as exc:
        print(f"interrupted: checkpoint saved; resume with: icezoo {command} --resume {exc.run_dir}", file=sys.stderr)
        sys.exit(130)
    print(f"run: {run_dir}   next: {next_hint.format(run=run_dir)}")

