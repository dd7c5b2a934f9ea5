"""``icezoo export``: a finished run as a model bundle (ONNX or TorchScript file, manifest.json, MODEL.md)."""

from __future__ import annotations

from pathlib import Path

import typer


def cmd_export(
    run: str = typer.Argument(..., help="run directory or name in --runs-dir ('last': the newest)"),
    out: Path = typer.Option(..., "--out", help="bundle directory to write (atomically)"),
    fmt: str = typer.Option("onnx", "--format", help="onnx (onnxruntime, C++) or torchscript (torch.jit.load)"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing bundle at --out"),
) -> None:
    """Export a finished run for inference without icezoo's training stack: the model file, a manifest
    with everything needed to feed it (selection, features, detector, inputs, outputs, calibration,
    score) and a model card; the exported outputs are checked against the torch model (within 1e-4)."""
    from icezoo.core.errors import IcezooError

    if fmt not in ("onnx", "torchscript"):  # before torch loads
        raise IcezooError(f"--format {fmt}: unknown format (choose onnx or torchscript)")
    if checkpoint not in ("best", "last"):
        raise IcezooError(f"--checkpoint {checkpoint}: choose best or last")
    if fmt == "onnx":
        _require_onnx()
    from icezoo.engine.bundle import export_run

    export_run(run, out, fmt=fmt, runs_dir=runs_dir, which=checkpoint, overwrite=overwrite)


def _require_onnx() -> None:
    """onnx, onnxscript (torch's exporter) and onnxruntime (the parity check), or one line naming the extra."""
    import importlib

    from icezoo.core.errors import IcezooError

    missing = []
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise IcezooError(f"--format onnx needs {', '.join(missing)}, not installed: pip install 'icezoo[onnx]'")
