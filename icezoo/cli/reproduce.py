"""``icezoo reproduce``: a study of the log's questions, trained and compared alike."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import pulsemap_option, truth_table_option
from icezoo.core.errors import IcezooError


def cmd_reproduce(
    study: Optional[str] = typer.Argument(None, help="study name (icezoo reproduce --list)"),
    list_: bool = typer.Option(False, "--list", help="list the studies (shipped and from plugins)"),
    data: Optional[Path] = typer.Option(None, help="dataset: Kaggle-layout dir, GraphNeT .db or Parquet folder "
                                                   "(icezoo list formats); default: the cached simulated set"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
    budget: Optional[str] = typer.Option(None, help="per variant and seed: events seen (30000, 30k) or wall clock (5min)"),
    seeds: Optional[int] = typer.Option(None, min=1, help="seeds 0..N-1 (default: the study's)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="the study's runs go to RUNS/studies/"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:1"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads (default: torch's)"),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Train every variant of a study alike, score them on the same validation events, and compare them
    with the reference (paired bootstrap 95% CI); writes results.md and forest.png. Rerunning resumes."""
    if list_:
        import shutil
        import textwrap

        from icezoo.engine.studies import load_studies

        width = min(shutil.get_terminal_size((100, 24)).columns, 120)
        blocks = []
        for s in load_studies().values():
            lines = [f"{s.name}: {len(s.variants)} variants, reference {s.reference}, budget {s.budget}, "
                     f"seeds {', '.join(map(str, s.seeds))}"]
            for label, text in (("", s.question), ("variants: ", ", ".join(s.variants)),
                                ("log rows: ", ", ".join(s.experiments))):
                lines += textwrap.wrap(label + text, width, initial_indent="  ", subsequent_indent="    ")
            blocks.append("\n".join(lines))
        print("\n\n".join(blocks))
        print("\nrun one: icezoo reproduce NAME [--budget 30k|5min] [--seeds N]")
        return
    if study is None:
        raise IcezooError("name a study (icezoo reproduce --list shows them)")
    from icezoo.engine.reproduce import StudyInterrupted, reproduce

    try:
        reproduce(study, data=str(data) if data else None, budget=budget, seeds=seeds, runs_dir=runs_dir,
                  device=device, progress=False if no_progress else None, threads=threads, pulsemap=pulsemap,
                  truth_table=truth_table)
    except StudyInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(130)
