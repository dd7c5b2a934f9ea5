"""Regression tests of issue 27's misleading (M1-M11) and cosmetic items: each input here used to be
accepted, or answered, in a way that misled the user. Tiny data, tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icezoo.cli.main import main
from icezoo.core import IcezooError
from tinyzoo import tiny_pipeline

TINY = tiny_pipeline(max_pulses=16, dim=8, pooler='["mean"]')


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``icezoo ARGS`` in this process."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *args, contains=()) -> str:
    """Run and require: exit 2, exactly one ``error:`` line on stderr, no traceback, naming ``contains``."""
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (code, out, err)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in contains:
        assert str(text) in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny simulated set (10 files of 30 events, a 60-event test split), a pipeline file and one
    trained run (2 epochs)."""
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("misleading")
    data = simulate(root / "data", 300, events_per_batch=30, seed=3, test=True, test_events=60)
    pf = root / "tiny.toml"
    pf.write_text(TINY)
    w = {"root": root, "data": data, "pf": pf, "runs": root / "runs"}
    try:
        main(train_args(w, "T"))
    except SystemExit as exc:
        assert exc.code in (0, None)
    w["run"] = w["runs"] / "T"
    return w


def train_args(world, name, *extra):
    return ["train", "--pipeline-file", str(world["pf"]), "--pipeline", "tiny", "--data", str(world["data"]),
            "--runs-dir", str(world["runs"]), "--name", name, "--no-progress", *map(str, extra)]


# ------------------------------------------------------------------------------ M1
def test_m1_a_log_row_without_config_name_is_not_matched_to_a_pipeline_without_experiment(tmp_path):
    from icezoo.engine.experiments import experiments_table

    rows = {r["name"]: r for r in experiments_table(tmp_path / "runs")}
    assert rows["hb_localattention"]["pipeline"] == "HB_LOCALATTENTION"
    assert all(r["pipeline"] != "default" for r in rows.values())  # no log row is the default pipeline's


# ------------------------------------------------------------------------------ M2
def _copy_run(world, name: str, **changes) -> Path:
    import shutil

    dst = world["runs"] / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(world["run"], dst)
    info = json.loads((dst / "run.json").read_text())
    info.update(name=name, **changes)
    info = {k: v for k, v in info.items() if v is not None}
    (dst / "run.json").write_text(json.dumps(info))
    return dst


@pytest.mark.parametrize("status", ["running", "failed"])
def test_m2_evaluate_and_predict_of_an_unfinished_run_warn_and_never_become_its_score(world, capsys, tmp_path, status):
    run = _copy_run(world, f"M2{status}", status=status, error="boom" if status == "failed" else None,
                    evaluation=None)
    code, out, err = run_cli(capsys, "evaluate", run, "--no-plots")
    assert code == 0, err
    assert f"warning: {run}" in err and "not the run's final result" in err and "not recorded" in err
    assert "evaluation" not in json.loads((run / "run.json").read_text())
    code, out, err = run_cli(capsys, "predict", run, "--data", world["data"], "--out", tmp_path / "s.csv")
    assert code == 0 and f"warning: {run}" in err
    code, out, err = run_cli(capsys, "evaluate", world["run"], "--no-plots")  # a finished run: silent, recorded
    assert code == 0 and "warning" not in err
    assert json.loads((world["run"] / "run.json").read_text())["evaluation"]["split"] == "val"


def test_m2_a_run_that_finishes_drops_an_evaluation_stored_while_it_ran(world, capsys):
    """A run whose last checkpoint was written but which never wrote 'done' (killed): resumed, it
    finishes; an evaluation stored mid-training (as older versions did) is not its ledger score."""
    from icezoo.engine.runs import ledger_rows

    run = _copy_run(world, "M2mid", status="running", evaluation={"mean": 1.5135, "split": "val", "n_events": 3})
    code, _, err = run_cli(capsys, "train", "--resume", run, "--runs-dir", world["runs"], "--no-progress")
    assert code == 0, err
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and not info.get("evaluation")
    row = next(r for r in ledger_rows(world["runs"]) if r["name"] == "M2mid")
    assert "1.5135" not in row["score"] and "val during training" in row["score"]


# ------------------------------------------------------------------------------ M3
def _dataset_copy(world, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "data"
    shutil.copytree(world["data"], dst)
    return dst


def test_m3_a_geometry_csv_with_missing_rows_is_named_not_the_batch_file(world, tmp_path, capsys):
    import polars as pl

    data = _dataset_copy(world, tmp_path)
    geo = data / "sensor_geometry.csv"
    df = pl.read_csv(geo)
    df.filter((pl.col("sensor_id") < 100) | (pl.col("sensor_id") > 199)).write_csv(geo)
    for args in (("linefit", "--data", data, "--out", tmp_path / "lf.csv"),
                 ("predict", world["run"], "--data", data, "--out", tmp_path / "s.csv")):
        line = one_line_error(capsys, *args, contains=(f"error: {geo}: no position for sensor_id", "100..199"))
        assert "batch_" in line  # which file uses the sensor is said too
    assert not (tmp_path / "lf.csv").exists() and not (tmp_path / "s.csv").exists()


def test_m3_a_geometry_csv_that_is_a_directory_is_an_error_not_ignored(world, tmp_path, capsys):
    data = _dataset_copy(world, tmp_path)
    geo = data / "sensor_geometry.csv"
    geo.unlink()
    geo.mkdir()
    one_line_error(capsys, "linefit", "--data", data, "--out", tmp_path / "lf.csv",
                   contains=(f"{geo}: is a directory",))


# ------------------------------------------------------------------------------ M4
def test_m4_max_pulses_zero_is_refused_at_compose_and_before_training(world, capsys):
    one_line_error(capsys, "compose", "--set", "selection.max_pulses=0",
                   contains=("selection.max_pulses", "greater than or equal to 1"))
    one_line_error(capsys, *train_args(world, "M4", "--set", "selection.max_pulses=0"),
                   contains=("pipelines.tiny.selection.max_pulses",))
    assert not (world["runs"] / "M4").exists()


# ------------------------------------------------------------------------------ M5 (and C4's egnn)
@pytest.mark.parametrize("backbone", ["pyg", "egnn"])
def test_m5_a_charge_column_beyond_the_features_is_refused_at_compose(world, capsys, backbone):
    spec = f'backbone={{name="{backbone}", space="xyztc", charge_column=99, depth=1, k=4}}'
    one_line_error(capsys, "compose", "--set", spec,
                   contains=("backbone.charge_column: column 99", "0..7: x, y, z, time, charge"))
    one_line_error(capsys, *train_args(world, f"M5{backbone}", "--set", spec),
                   contains=("pipelines.tiny.backbone.charge_column", "6 columns"))
    assert not (world["runs"] / f"M5{backbone}").exists()
    ok = spec.replace("charge_column=99", "charge_column=4")
    code, out, err = run_cli(capsys, "compose", "--set", ok)
    assert code == 0, err


# ------------------------------------------------------------------------------ M6
@pytest.mark.parametrize("weight", ["nan", "inf", "-1"])
def test_m6_a_loss_weight_that_is_not_finite_or_negative_is_refused(tmp_path, capsys, weight):
    pf = tmp_path / "w.toml"
    pf.write_text(TINY.replace('loss = [{ name = "vmf3d" }]', f'loss = [{{ name = "vmf3d", weight = {weight} }}]'))
    one_line_error(capsys, "show", "tiny", "--pipeline-file", pf, contains=(f"{pf}: pipelines.tiny.loss.weight",))
    one_line_error(capsys, "compose", "--set", f'loss=[{{name="vmf3d", weight={weight}}}]', contains=("loss.weight",))


# ------------------------------------------------------------------------------ M7
@pytest.mark.parametrize("damage", ["five_ids", "nan_kappa", "truncated"])
def test_m7_a_kappa_cache_with_wrong_content_is_predicted_anew_not_used(world, damage):
    import numpy as np

    from icezoo.engine.kappa_filter import predicted_kappa

    train_ids = json.loads((world["run"] / "run.json").read_text())["split"]["train_batches"][:2]
    good = predicted_kappa("T", world["data"], train_ids, world["runs"])
    f = next((world["run"] / "predictions").glob(f"*/train_{train_ids[0]}.npz"))
    eid, kappa = good[train_ids[0]]
    if damage == "five_ids":
        np.savez(f, event_id=eid[:5], kappa=kappa[:5])
    elif damage == "nan_kappa":
        np.savez(f, event_id=eid, kappa=np.full(len(eid), np.nan))
    else:
        f.write_bytes(f.read_bytes()[:40])
    lines = []
    again = predicted_kappa("T", world["data"], train_ids, world["runs"], log=lines.append)
    assert any(str(f) in ln and "predicted anew" in ln for ln in lines), lines
    assert "(1 made, 1 from the cache" in lines[-1]
    np.testing.assert_array_equal(again[train_ids[0]][0], eid)
    np.testing.assert_allclose(again[train_ids[0]][1], kappa, rtol=1e-6)
