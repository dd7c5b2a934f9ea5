"""Where a command may write a file the user named (``--out``, ``--plot-out``, ``--save``): never
onto one of the command's own inputs, never inside a dataset, a run or a study directory.

Issue 27 (D1): ``icezoo predict RUN --data D --out D/test_meta.parquet`` replaced the meta file
it had just read with a CSV, ``--out runs/RUN/checkpoints/best.pt`` the checkpoint it predicted
from. Paths are compared after resolving symbolic links (an atomic write follows a link and
replaces the file it names). Directories are recognised by the files that make them: a run by its
``run.json``, a study by its ``study.json``, a dataset by its geometry, meta or simulator file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from icezoo.core.errors import IcezooError

RUN_MARKERS = ("run.json",)
STUDY_MARKERS = ("study.json",)
DATASET_MARKERS = ("sensor_geometry.csv", "simulator_config.json", "train_meta.parquet", "test_meta.parquet")


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def protected_kind(directory: Path) -> str | None:
    """``the run directory`` / ``the study directory`` / ``the dataset`` when ``directory`` is one."""
    for markers, kind in ((RUN_MARKERS, "the run directory"), (STUDY_MARKERS, "the study directory"),
                          (DATASET_MARKERS, "the dataset")):
        if any(os.path.lexists(directory / m) for m in markers):
            return kind
    return None


def check_output(path: str | Path, flag: str = "--out", inputs: Iterable[str | Path] = (),
                 dirs: Iterable[str | Path] = ()) -> Path:
    """Refuse (IcezooError, one line) an output ``path`` that is one of ``inputs`` (files the command
    reads), lies inside one of ``dirs`` (its dataset, its runs) or inside any dataset, run or study
    directory. Returns ``path`` unchanged. Nothing is created or read but the directory entries."""
    path = Path(path)
    real = _real(path)
    shown = f"{path} (a link to {real})" if path.is_symlink() else str(path)
    dirs = [d for d in dirs if d is not None]
    for item in [*inputs, *dirs]:  # a data source may be one file (a GraphNeT .db)
        if item is not None and _real(item) == real:
            raise IcezooError(f"{flag} {shown}: is an input of this command ({item}); icezoo never writes over "
                              f"its inputs (choose another file)")
    for d in dirs:
        if _real(d) in real.parents:
            kind = protected_kind(_real(d)) or "an input directory"
            raise IcezooError(f"{flag} {shown}: lies inside {kind} {d}, an input of this command; icezoo never "
                              f"writes into its inputs (choose a path outside it)")
    for parent in real.parents:
        kind = protected_kind(parent)
        if kind is not None:
            raise IcezooError(f"{flag} {shown}: lies inside {kind} {parent}; icezoo never writes into a dataset, "
                              f"run or study directory (choose a path outside it)")
    return path
