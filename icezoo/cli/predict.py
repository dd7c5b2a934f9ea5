"""``icezoo predict``: a Kaggle submission from one run or the ensemble of several."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import pulsemap_option, truth_table_option, use_data



def cmd_predict(
    runs: Optional[list[str]] = typer.Argument(None, help="run directories or names in --runs-dir; several: their "
                                               "ensemble (or --model BUNDLE instead)"),
    model: Optional[Path] = typer.Option(None, "--model", help="a bundle of icezoo export, run through onnxruntime "
                                         "(or torch.jit for a TorchScript bundle) instead of a run"),
    data: Path = typer.Option(..., help="dataset: Kaggle-layout dir, GraphNeT .db or Parquet folder"),
    pulsemap: Optional[str] = pulsemap_option(),
    truth_table: Optional[str] = truth_table_option(),
    split: str = typer.Option("test", help="split to predict (DIR/<split>_meta.parquet)"),
    out: Path = typer.Option(Path("submission.csv"), help="CSV to write (atomically)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    workers: int = typer.Option(0, min=0),
    device: Optional[str] = typer.Option(None),
    tta: int = typer.Option(1, "--tta", min=1, help="combine N rotations about the vertical axis (1..32)"),
    stacker: Optional[Path] = typer.Option(None, "--stacker", help="combine the runs with this stacker "
                                           "(icezoo stack) instead of the kappa-weighted mean"),
    uncertainty: bool = typer.Option(False, "--uncertainty", help="also write the 50% and 90% vMF cone radii "
                                     "(radians) of the run's calibrated kappa (icezoo calibrate) after the Kaggle columns"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads of torch, or of onnxruntime "
                                          "with --model (default: theirs)"),
) -> None:
    """Write a Kaggle submission: one row per event of <split>_meta (event_id,azimuth,zenith); several runs:
    the kappa-weighted mean of their directions (plain mean for heads without kappa), or a fitted stacker."""
    if model is not None or not runs:
        _predict_bundle(model, runs, data, pulsemap, truth_table, split, out, batch_size, workers, tta, stacker,
                        uncertainty, threads)
        return
    from icezoo.engine.device import set_threads
    from icezoo.engine.predict import predict

    set_threads(threads)
    use_data(data, pulsemap, truth_table, runs=runs, runs_dir=runs_dir)
    predict(runs, str(data), split=split, out=out, runs_dir=runs_dir, batch_size=batch_size, workers=workers,
            device=device, tta=tta, stacker=str(stacker) if stacker else None, uncertainty=uncertainty)


def _predict_bundle(model, runs, data, pulsemap, truth_table, split, out, batch_size, workers, tta, stacker,
                    uncertainty, threads=None) -> None:
    """``--model BUNDLE``: the bundle's manifest drives reading, selection and features; onnxruntime runs it."""
    from icezoo.core.errors import IcezooError

    if model is None:
        raise IcezooError("name a run (or several) to predict with, or a bundle with --model")
    if runs:
        raise IcezooError(f"--model {model}: give a bundle or runs, not both ({', '.join(runs)})")
    if tta > 1 or stacker:
        raise IcezooError("--model: --tta and --stacker combine runs; a bundle predicts alone")
    from icezoo.engine.bundle import read_bundle

    training = read_bundle(model, verify=False).get("training") or {}  # the hash is checked before the model runs
    if not (pulsemap or truth_table) and Path(data).exists():  # a GraphNeT source: the tables it was trained on
        from icezoo.data.formats import open_source

        src = open_source(data)
        tables = src._tables() if src.format != "kaggle" and hasattr(src, "_tables") else ()
        if training.get("pulsemap") in tables:
            pulsemap = training["pulsemap"]
            truth_table = training.get("truth_table") if training.get("truth_table") in tables else None
    use_data(data, pulsemap, truth_table)
    from icezoo.engine.predict_bundle import predict_bundle

    predict_bundle(model, data, split=split, out=out, batch_size=batch_size, workers=workers, uncertainty=uncertainty,
                   threads=threads)
