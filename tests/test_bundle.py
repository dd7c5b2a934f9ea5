"""Model bundles (issue 24): icezoo export, predict --model, show BUNDLE, MODEL.md and the refusals.

One tiny `default` run (d32, 1 epoch of 270 simulated events) is exported once to ONNX; the bad
inputs work on copies. Every refusal: one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from icezoo.cli.main import main
from test_hardening import one_line_error, run_cli

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SETS = ["--set", "embedder.dim=32", "--set", "backbone.heads=4", "--set", "train.epochs=1",
        "--set", "selection.max_pulses=32"]


def _ok(*args) -> None:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None), args


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Simulated data (10 files of 30 events, a 60-event test split), a finished, evaluated and
    calibrated run of `default` at test size, and its ONNX bundle."""
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("bundle")
    data = simulate(root / "data", 300, events_per_batch=30, seed=3, test=True, test_events=60)
    runs = root / "runs"
    _ok("train", "--pipeline", "default", "--data", data, "--runs-dir", runs, "--name", "T", "--no-progress", *SETS)
    _ok("evaluate", runs / "T", "--data", data, "--runs-dir", runs)
    _ok("calibrate", runs / "T", "--runs-dir", runs)
    _ok("export", "T", "--runs-dir", runs, "--out", root / "bundle")
    return {"root": root, "data": data, "runs": runs, "run": runs / "T", "bundle": root / "bundle"}


def _angles(path: Path) -> tuple[pl.DataFrame, np.ndarray]:
    from icezoo.core.batch import angles_to_vector

    df = pl.read_csv(path)
    return df, angles_to_vector(df["azimuth"].to_numpy(), df["zenith"].to_numpy())


def _separation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between unit vectors, accurate near 0 (2 arcsin of half the chord)."""
    return 2 * np.arcsin(np.clip(np.linalg.norm(a - b, axis=1) / 2, 0, 1))


def test_predict_model_reproduces_predict_run(world, tmp_path):
    """The done-when of the issue: the bundle's CSV is the run's within 1e-4 rad per event (cones too)."""
    _ok("predict", world["run"], "--data", world["data"], "--out", tmp_path / "run.csv", "--uncertainty")
    _ok("predict", "--model", world["bundle"], "--data", world["data"], "--out", tmp_path / "model.csv",
        "--uncertainty")
    run, vr = _angles(tmp_path / "run.csv")
    model, vm = _angles(tmp_path / "model.csv")
    assert model.columns == run.columns == ["event_id", "azimuth", "zenith", "cone_radius_50", "cone_radius_90"]
    assert model["event_id"].to_list() == run["event_id"].to_list() and len(run) == 60
    assert _separation(vr, vm).max() < 1e-4
    for col in ("cone_radius_50", "cone_radius_90"):
        np.testing.assert_allclose(model[col].to_numpy(), run[col].to_numpy(), atol=1e-4)


def test_torchscript_bundle_predicts_the_same(world, tmp_path):
    _ok("export", world["run"], "--format", "torchscript", "--out", tmp_path / "ts")
    assert (tmp_path / "ts" / "model.pt").is_file()
    _ok("predict", world["run"], "--data", world["data"], "--out", tmp_path / "run.csv")
    _ok("predict", "--model", tmp_path / "ts", "--data", world["data"], "--out", tmp_path / "ts.csv")
    assert _separation(_angles(tmp_path / "run.csv")[1], _angles(tmp_path / "ts.csv")[1]).max() < 1e-4


def test_predict_threads_reach_torch_and_onnxruntime(world, tmp_path, monkeypatch):
    """``icezoo predict --threads N``: torch's threads for a run, the onnxruntime session's for a bundle."""
    import icezoo.engine.device as device
    import icezoo.engine.export as export

    seen = {}
    monkeypatch.setattr(device, "set_threads", lambda n: seen.setdefault("torch", n))
    real_init = export.ExportedRunner.__init__

    def init(self, path, threads=None):
        seen["onnxruntime"] = threads
        real_init(self, path, threads=threads)

    monkeypatch.setattr(export.ExportedRunner, "__init__", init)
    _ok("predict", world["run"], "--data", world["data"], "--out", tmp_path / "run.csv", "--threads", "1")
    _ok("predict", "--model", world["bundle"], "--data", world["data"], "--out", tmp_path / "model.csv",
        "--threads", "1")
    assert seen == {"torch": 1, "onnxruntime": 1}
    assert _separation(_angles(tmp_path / "run.csv")[1], _angles(tmp_path / "model.csv")[1]).max() < 1e-4


def test_manifest_says_what_a_reader_needs(world):
    from icezoo.engine.bundle import FORMAT_VERSION, sha256
    from icezoo.engine.checkpoints import model_from_checkpoint

    m = json.loads((world["bundle"] / "manifest.json").read_text())
    _, p, _ = model_from_checkpoint(world["run"] / "checkpoints" / "best.pt")
    assert m["format_version"] == FORMAT_VERSION and m["model"]["sha256"] == sha256(world["bundle"] / "model.onnx")
    assert m["model"]["opset"] >= 17 and m["versions"]["torch"] and m["versions"]["onnxruntime"]
    assert m["selection"] == {**m["selection"], "name": "aux_first", "max_pulses": 32}
    assert m["feature_columns"] == [c for f in p.features for c in f.feature_names()]
    assert [f["name"] for f in m["features"]] == ["kaggle_norm", "qe", "ice_properties"]
    assert [i["name"] for i in m["inputs"]] == ["features", "mask", "xyzt", "sensor_id"]
    assert m["inputs"][0]["shape"] == ["batch", "pulses", len(m["feature_columns"])]
    assert m["inputs"][0]["dynamic_axes"] == {"0": "batch", "1": "pulses"}
    assert [o["name"] for o in m["outputs"]] == ["direction", "kappa"]
    stats = m["normalisation"]["in_model"]["embedder.standardize"]
    np.testing.assert_allclose(stats["mean"], p.embedder.standardize.mean.numpy(), rtol=1e-6)
    assert m["detector"]["name"] == "IceCube-86" and m["detector"]["pad_sensor"] == 5160
    assert m["calibration"] == json.loads((world["run"] / "calibration.json").read_text())
    run = json.loads((world["run"] / "run.json").read_text())
    assert m["validation"]["mean"] == run["evaluation"]["mean"] and m["validation"]["ci95"] == run["evaluation"]["ci95"]
    assert m["validation"]["data"] and m["training"]["events_seen"] == run["events_seen"]
    assert m["parity"]["max_abs_diff"] < 1e-4


def test_model_card_snippet_runs(world):
    """MODEL.md's three lines of onnxruntime Python run as written on a real batch and give unit vectors."""
    from icezoo.core.compose import Pipeline  # noqa: F401  (torch loaded for the loader below)
    from icezoo.data.loader import make_loader
    from icezoo.engine.bundle import bundle_preprocessing, read_bundle

    card = (world["bundle"] / "MODEL.md").read_text()
    for heading in ("## Training data and budget", "## Scores", "## Calibration", "## Limits", "95% bootstrap CI",
                    "IceCube-86", "at most 32 pulses", "simulated"):
        assert heading in card, heading
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert len(code.strip().splitlines()) == 3
    m = read_bundle(world["bundle"])
    sel, feats = bundle_preprocessing(m, "bundle")
    batch = next(iter(make_loader(world["data"], "test", [1], sel, feats, 16, shuffle=False)))
    scope = {name: getattr(batch, name).numpy() for name in ("features", "mask", "xyzt", "sensor_id")}
    code = code.replace('"model.onnx"', repr(str(world["bundle"] / "model.onnx")))
    exec(code, scope)  # noqa: S102  (the card's own example)
    np.testing.assert_allclose(np.linalg.norm(scope["direction"], axis=1), 1.0, atol=1e-5)
    assert scope["kappa"].shape == (batch.num_events,)


def test_show_bundle(world, capsys):
    code, out, err = run_cli(capsys, "show", world["bundle"])
    assert code == 0, err
    for text in ("format_version 1", "model.onnx", "verified", "aux_first {max_pulses = 32}", "IceCube-86",
                 "input      features", "output     kappa", "calibration power", "score      mean angular error"):
        assert text in out, text


# ------------------------------------------------------------------------------ refusals
def _copy_run(world, tmp_path, name="C") -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(world["run"], runs / name)
    return runs


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_unfinished_run_is_refused(world, tmp_path, capsys):
    runs = _copy_run(world, tmp_path)
    info = json.loads((runs / "C" / "run.json").read_text())
    (runs / "C" / "run.json").write_text(json.dumps({**info, "status": "running"}))
    one_line_error(capsys, "export", "C", "--runs-dir", runs, "--out", tmp_path / "b", contains=["never finished"])
    _nothing_written(tmp_path / "b")


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_checkpoint_is_refused(world, tmp_path, capsys, damage):
    runs = _copy_run(world, tmp_path)
    best = runs / "C" / "checkpoints" / "best.pt"
    if damage == "missing":
        best.unlink()
    else:
        best.write_bytes(best.read_bytes()[:200])
    one_line_error(capsys, "export", "C", "--runs-dir", runs, "--out", tmp_path / "b", "--format", "torchscript",
                   contains=["best.pt", "no such checkpoint" if damage == "missing" else "corrupt"])
    _nothing_written(tmp_path / "b")


def test_unknown_format_and_existing_out(world, tmp_path, capsys):
    one_line_error(capsys, "export", world["run"], "--format", "tflite", "--out", tmp_path / "b",
                   contains=["--format tflite", "onnx or torchscript"])
    _nothing_written(tmp_path / "b")
    out = tmp_path / "ts"
    _ok("export", world["run"], "--format", "torchscript", "--out", out)
    before = (out / "manifest.json").read_text()
    one_line_error(capsys, "export", world["run"], "--format", "torchscript", "--out", out, contains=["--overwrite"])
    assert (out / "manifest.json").read_text() == before
    _ok("export", world["run"], "--format", "torchscript", "--out", out, "--overwrite", "--checkpoint", "last")
    assert json.loads((out / "manifest.json").read_text())["run"]["checkpoint"] == "last"


def _copy_bundle(world, tmp_path) -> Path:
    shutil.copytree(world["bundle"], tmp_path / "b")
    return tmp_path / "b"


def test_hash_mismatch_is_refused(world, tmp_path, capsys):
    bundle = _copy_bundle(world, tmp_path)
    raw = bytearray((bundle / "model.onnx").read_bytes())
    raw[-10] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(raw))
    for args in (["predict", "--model", bundle, "--data", world["data"], "--out", tmp_path / "f.csv"],
                 ["show", bundle]):
        one_line_error(capsys, *args, contains=["model.onnx", "SHA-256"])
    assert not (tmp_path / "f.csv").exists()


def test_newer_format_version_is_refused(world, tmp_path, capsys):
    bundle = _copy_bundle(world, tmp_path)
    m = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**m, "format_version": m["format_version"] + 1}))
    one_line_error(capsys, "predict", "--model", bundle, "--data", world["data"], "--out", tmp_path / "f.csv",
                   contains=["manifest.json", "newer", "upgrade icezoo"])
    assert not (tmp_path / "f.csv").exists()


def test_data_from_another_detector_is_refused(world, tmp_path, capsys):
    from graphnet_files import upgrade_events, write_sqlite

    pulses, truth = upgrade_events(n_events=6)
    db = write_sqlite(tmp_path / "upgrade.db", {"UpgradePulses": pulses, "truth": truth})
    one_line_error(capsys, "predict", "--model", world["bundle"], "--data", db, "--pulsemap", "UpgradePulses",
                   "--split", "train", "--out", tmp_path / "f.csv", contains=["detector", "IceCube-86"])
    assert not (tmp_path / "f.csv").exists()


def test_missing_onnxruntime_is_one_line(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    one_line_error(capsys, "predict", "--model", world["bundle"], "--data", world["data"], "--out",
                   tmp_path / "f.csv", contains=["pip install 'icezoo[onnx]'"])
    one_line_error(capsys, "export", world["run"], "--out", tmp_path / "b", contains=["pip install 'icezoo[onnx]'"])
    assert not (tmp_path / "f.csv").exists()
    _nothing_written(tmp_path / "b")


def test_model_and_runs_together_are_refused(world, tmp_path, capsys):
    one_line_error(capsys, "predict", world["run"], "--model", world["bundle"], "--data", world["data"], "--out",
                   tmp_path / "f.csv", contains=["not both"])
    one_line_error(capsys, "show", tmp_path, contains=["no manifest.json"])


def test_fallback_events_match_predict_run(world, tmp_path):
    """Events without pulses (in the meta file only) get the run's fallback through the bundle too."""
    from icezoo.data.kaggle_layout import write_meta

    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    rows = pl.read_parquet(data / "test_meta.parquet").to_dicts()
    f = rows[3]["first_pulse_index"]
    rows = rows[:3] + [{**rows[3], "event_id": 999_001, "first_pulse_index": f, "last_pulse_index": f - 1}] + rows[3:]
    cols = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    write_meta(data / "test_meta.parquet", cols["batch_id"], cols["event_id"], cols["first_pulse_index"],
               cols["last_pulse_index"])
    _ok("predict", world["run"], "--data", data, "--out", tmp_path / "run.csv")
    _ok("predict", "--model", world["bundle"], "--data", data, "--out", tmp_path / "model.csv")
    run, vr = _angles(tmp_path / "run.csv")
    model, vm = _angles(tmp_path / "model.csv")
    assert model["event_id"].to_list() == run["event_id"].to_list() and 999_001 in run["event_id"].to_list()
    assert _separation(vr, vm).max() < 1e-4
    row = model.filter(pl.col("event_id") == 999_001)
    assert (row["azimuth"][0], row["zenith"][0]) == pytest.approx((0.0, np.pi / 2))


def test_graphnet_sqlite_through_a_bundle(world, tmp_path):
    """The same events as a GraphNeT SQLite file give the bundle's Kaggle-layout predictions."""
    from graphnet_files import from_kaggle, write_sqlite

    pulses, truth = from_kaggle(world["data"], "train")
    db = write_sqlite(tmp_path / "sim.db", {"SRTInIcePulses": pulses, "truth": truth})
    _ok("predict", "--model", world["bundle"], "--data", db, "--pulsemap", "SRTInIcePulses", "--split", "train",
        "--out", tmp_path / "db.csv")
    _ok("predict", "--model", world["bundle"], "--data", world["data"], "--split", "train", "--out", tmp_path / "k.csv")
    db_df, vd = _angles(tmp_path / "db.csv")
    k_df, vk = _angles(tmp_path / "k.csv")
    order = np.argsort(db_df["event_id"].to_numpy())
    assert sorted(k_df["event_id"].to_list()) == db_df["event_id"].to_numpy()[order].tolist()
    assert _separation(vd[order], vk[np.argsort(k_df["event_id"].to_numpy())]).max() < 1e-4


def test_error_paths_import_no_onnx(world, tmp_path):
    """A refused bundle and a refused format stop before onnx, onnxruntime or onnxscript load."""
    import subprocess

    bundle = _copy_bundle(world, tmp_path)
    (bundle / "model.onnx").write_bytes(b"not a model")
    for args in (["predict", "--model", str(bundle), "--data", str(world["data"]), "--out", str(tmp_path / "f.csv")],
                 ["export", str(world["run"]), "--format", "tflite", "--out", str(tmp_path / "b")]):
        probe = (f"import sys\nfrom icezoo.cli.main import main\ntry:\n    main({args!r})\nexcept SystemExit as e:\n"
                 f"    print('EXIT', e.code)\nprint('ONNX', sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript') "
                 f"if m in sys.modules))")
        res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
        assert "EXIT 2" in res.stdout and "ONNX []" in res.stdout, res.stdout + res.stderr


def test_task_columns_through_a_bundle(world, tmp_path):
    """A multi-task run's bundle writes predict RUN's task columns (energy, p_track, vertex) within 1e-4."""
    runs = tmp_path / "runs"
    _ok("train", "--pipeline", "MULTITASK_V0", "--data", world["data"], "--runs-dir", runs, "--name", "M",
        "--no-progress", *SETS)
    _ok("export", runs / "M", "--format", "torchscript", "--out", tmp_path / "m")
    m = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert [o["name"] for o in m["outputs"]][:3] == ["direction", "kappa", "energy"]
    _ok("predict", runs / "M", "--data", world["data"], "--out", tmp_path / "run.csv")
    _ok("predict", "--model", tmp_path / "m", "--data", world["data"], "--out", tmp_path / "model.csv")
    run, vr = _angles(tmp_path / "run.csv")
    model, vm = _angles(tmp_path / "model.csv")
    assert model.columns == run.columns and "p_track" in run.columns and "vertex_z" in run.columns
    assert _separation(vr, vm).max() < 1e-4
    for col in run.columns[3:]:
        a, b = run[col].to_numpy(), model[col].to_numpy()
        assert (np.abs(a - b) / np.maximum(1, np.abs(a))).max() < 1e-4, col


def test_malformed_manifest_and_unloadable_model(world, tmp_path, capsys):
    """A manifest field of the wrong type, and a model file onnxruntime cannot read whose hash was
    updated to match: one line each, never a traceback."""
    from icezoo.engine.bundle import sha256

    bundle = _copy_bundle(world, tmp_path)
    m = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**m, "features": "kaggle_norm"}))
    one_line_error(capsys, "show", bundle, contains=["manifest.json", "'features'"])
    (bundle / "model.onnx").write_bytes(b"not an onnx file")
    (bundle / "manifest.json").write_text(json.dumps({**m, "model": {**m["model"], "sha256": sha256(bundle / "model.onnx")}}))
    one_line_error(capsys, "predict", "--model", bundle, "--data", world["data"], "--out", tmp_path / "f.csv",
                   contains=["model.onnx", "onnxruntime cannot load it"])
    assert not (tmp_path / "f.csv").exists()


def test_bundle_inside_the_run_is_refused(world, capsys):
    one_line_error(capsys, "export", world["run"], "--format", "torchscript", "--out", world["run"] / "bundle",
                   contains=["inside", "run"])
    assert not (world["run"] / "bundle").exists()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_component_that_cannot_export_is_refused(world, tmp_path, capsys, monkeypatch, fmt):
    """A component whose ``export_refusal`` gives a reason (e.g. a pyg conv without a parity test):
    one line naming the stage, the component and the reason, exit 2, nothing written."""
    from icezoo.plugins.backbones.transformer import Transformer

    runs = _copy_run(world, tmp_path)
    monkeypatch.setattr(Transformer, "export_refusal", classmethod(lambda cls, config: "a stand-in reason"))
    one_line_error(capsys, "export", "C", "--runs-dir", runs, "--format", fmt, "--out", tmp_path / "b",
                   contains=["cannot be exported: backbone transformer: a stand-in reason"])
    _nothing_written(tmp_path / "b")
