"""Regression tests of issue 13 ("hardening and the newcomer's path"): one test (or more) per item,
named ``test_item_NN_...``. Every bad input must give one line naming the file or field, exit code
2, no traceback, and leave nothing lost or half-written. Tiny data, tiny models."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from icezoo.cli.main import main
from icezoo.core import IcezooError
from icezoo.data.io import write_toy_dataset
from tinyzoo import tiny_pipeline
from icezoo.data.kaggle_layout import write_batch, write_meta

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
    assert "Traceback" not in err
    for text in contains:
        assert str(text) in lines[0], (text, lines[0])
    return lines[0]


def toy(root: Path, n_files: int = 2, events: int = 40, split: str = "train") -> Path:
    return write_toy_dataset(root, n_files=n_files, events_per_file=events, seed=1, split=split, mean_pulses=12)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny simulated set (10 files of 30 events, a 60-event test split), a pipeline file and one
    trained run (2 epochs)."""
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("hardening")
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


# ------------------------------------------------------------------------------ data loss and safety
def test_item_01_simulate_overwrite_keeps_a_directory_icezoo_did_not_write(tmp_path, capsys):
    mine = tmp_path / "mydir"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep\n")
    one_line_error(capsys, "simulate", "--events", 20, "--out", mine, "--overwrite", contains=[mine, "notes.txt"])
    assert (mine / "notes.txt").read_text() == "keep\n"
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep\n")
    one_line_error(capsys, "simulate", "--events", 20, "--out", a_file, "--overwrite", contains=[a_file])
    assert a_file.read_text() == "keep\n"
    # a dataset icezoo wrote is replaced; one with a person's file added is not
    ds = tmp_path / "ds"
    assert run_cli(capsys, "simulate", "--events", 20, "--out", ds)[0] == 0
    assert run_cli(capsys, "simulate", "--events", 30, "--out", ds, "--overwrite", "--seed", 2)[0] == 0
    (ds / "train" / "mine.txt").write_text("keep\n")
    one_line_error(capsys, "simulate", "--events", 20, "--out", ds, "--overwrite", contains=["train/mine.txt"])
    assert (ds / "train" / "mine.txt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def device_node(tmp_path: Path) -> Path:
    """A character device (null's numbers) made in tmp_path: the tests never aim at the system's
    /dev nodes (an old writer would replace them); skipped where mknod is not allowed."""
    import stat

    node = tmp_path / "null-device"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("mknod not permitted here")
    return node


def test_item_02_atomic_writer_refuses_devices_and_fifos_and_follows_symlinks(tmp_path):
    from icezoo.core.atomic import write_text_atomic

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(IcezooError, match="is a FIFO"):
        write_text_atomic(fifo, "x")
    assert fifo.is_fifo()
    node = device_node(tmp_path)
    with pytest.raises(IcezooError, match="is a character device"):
        write_text_atomic(node, "x")
    assert node.is_char_device()
    link = tmp_path / "link.csv"
    os.symlink(node, link)
    with pytest.raises(IcezooError, match="character device .*via the link"):
        write_text_atomic(link, "x")
    # a link to a regular file: the file it names is replaced, the link stays a link
    target = tmp_path / "real.csv"
    target.write_text("old")
    link2 = tmp_path / "link2.csv"
    os.symlink(target, link2)
    write_text_atomic(link2, "new")
    assert link2.is_symlink() and target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.csv", "link2.csv", "null-device", "real.csv"]


def test_item_02_predict_to_a_device_node_is_refused(world, tmp_path, capsys):
    node = device_node(tmp_path)
    one_line_error(capsys, "predict", world["run"], "--data", world["data"], "--out", node,
                   contains=[node, "character device"])
    assert node.is_char_device()


def test_item_03_os_errors_are_one_line_naming_path_and_reason(world, tmp_path, capsys):
    # /sys refuses new files even for root: a real read-only target
    one_line_error(capsys, "linefit", "--data", world["data"], "--split", "test", "--out", "/sys/x.csv",
                   contains=["/sys/x.csv", "Permission denied"])
    one_line_error(capsys, "predict", world["run"], "--data", world["data"], "--out", "/sys/x.csv",
                   contains=["/sys/x.csv", "Permission denied"])
    one_line_error(capsys, "simulate", "--events", 10, "--out", "/sys/icezoo-sim", contains=["/sys/icezoo-sim"])
    one_line_error(capsys, "compose", "--save", "/sys/p.toml", contains=["/sys/p.toml", "Permission denied"])
    one_line_error(capsys, *train_args(world, "X", "--runs-dir", "/sys/runs"), contains=["/sys/runs"])


def test_item_03_full_disk_is_one_line_and_leaves_no_partial_file(world, tmp_path, capsys, monkeypatch):
    import icezoo.core.atomic as atomic

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))

    monkeypatch.setattr(atomic.os, "replace", full)
    out = tmp_path / "sub.csv"
    one_line_error(capsys, "linefit", "--data", world["data"], "--split", "test", "--out", out,
                   contains=[out, "No space left on device"])
    assert list(tmp_path.iterdir()) == []


def test_item_05_malformed_run_json_is_listed_and_refused_in_one_line(world, tmp_path, capsys):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(world["run"], runs / "good")
    for name, text in (("shape", "[1, 2, 3]"), ("truncated", '{"name": "trunc'), ("fields", '{"split": 7}')):
        (runs / name).mkdir(parents=True)
        (runs / name / "run.json").write_text(text)
    (runs / "empty").mkdir()
    code, out, err = run_cli(capsys, "runs", "--runs-dir", runs)
    assert code == 0, err
    for name in ("T", "shape", "truncated", "fields", "empty"):
        assert f"| {name} |" in out, out
    assert "unreadable" in out and "not valid JSON" in out and "expected a JSON object" in out
    assert "no run.json" in out
    for name in ("shape", "truncated", "fields"):
        one_line_error(capsys, "evaluate", runs / name, "--no-plots", contains=[runs / name / "run.json"])


def test_item_06_linefit_refuses_duplicate_event_ids_like_predict(tmp_path, capsys):
    data = toy(tmp_path / "d", n_files=2, split="test")
    import polars as pl

    meta = pl.read_parquet(data / "test_meta.parquet")
    ids = meta["event_id"].to_numpy().copy()
    ids[-1] = ids[0]  # the last event of batch 2 takes the id of the first of batch 1
    write_meta(data / "test_meta.parquet", meta["batch_id"], ids, meta["first_pulse_index"], meta["last_pulse_index"])
    # the pulse rows must carry the id too, else the reader stops earlier on a mismatch
    b2 = pl.read_parquet(data / "test" / "batch_2.parquet")
    eid = b2["event_id"].to_numpy().copy()
    eid[eid == eid[-1]] = ids[0]
    write_batch(data / "test" / "batch_2.parquet", eid, b2["sensor_id"], b2["time"], b2["charge"], b2["auxiliary"])
    out = tmp_path / "x.csv"
    one_line_error(capsys, "linefit", "--data", data, "--split", "test", "--out", out,
                   contains=["test_meta.parquet", f"duplicate event_id {ids[0]}"])
    assert not out.exists()


def test_item_07_meta_rows_naming_a_missing_batch_file_are_refused(tmp_path, capsys):
    data = toy(tmp_path / "d", n_files=3)
    (data / "train" / "batch_2.parquet").unlink()
    one_line_error(capsys, "linefit", "--data", data, contains=["train_meta.parquet", "batch_2.parquet is missing"])


def test_item_09_zero_pulse_events_are_valid_and_get_the_fallback(tmp_path, capsys):
    from icezoo.data.io import read_chunk
    from icezoo.recon.linefit import FALLBACK, linefit

    data = toy(tmp_path / "d", n_files=1, events=5)
    import polars as pl

    meta = pl.read_parquet(data / "train_meta.parquet")
    rows = meta.to_dicts()
    f = rows[2]["first_pulse_index"]
    empty = {**rows[2], "event_id": 999_001, "first_pulse_index": f, "last_pulse_index": f - 1}
    tail = {**rows[-1], "event_id": 999_002, "first_pulse_index": rows[-1]["last_pulse_index"] + 1,
            "last_pulse_index": rows[-1]["last_pulse_index"]}
    rows = rows[:2] + [empty] + rows[2:] + [tail]
    cols = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    write_meta(data / "train_meta.parquet", cols["batch_id"], cols["event_id"], cols["first_pulse_index"],
               cols["last_pulse_index"], cols["azimuth"], cols["zenith"])
    chunk = read_chunk(data, "train", 1)
    assert chunk.num_events == 7
    assert list(chunk.lengths[[2, 6]]) == [0, 0] and (chunk.lengths[[0, 1, 3, 4, 5]] > 0).all()
    u = linefit(chunk)
    assert np.allclose(u[[2, 6]], FALLBACK)
    code, out, err = run_cli(capsys, "linefit", "--data", data)
    assert code == 0 and "over 7 events" in out, err
    # last < first - 1 stays an error, worded as such
    cols["last_pulse_index"][2] = f - 2
    write_meta(data / "train_meta.parquet", cols["batch_id"], cols["event_id"], cols["first_pulse_index"],
               cols["last_pulse_index"], cols["azimuth"], cols["zenith"])
    one_line_error(capsys, "linefit", "--data", data, contains=["event 999001", "below first_pulse_index"])


def test_item_10_nan_in_the_geometry_names_the_geometry_file_and_line(tmp_path, capsys):
    from icezoo.resources import geometry_csv

    data = toy(tmp_path / "d", n_files=1)
    lines = Path(geometry_csv()).read_text().splitlines()
    sid, _, y, z = lines[10].split(",")
    lines[10] = f"{sid},nan,{y},{z}"
    geo = data / "sensor_geometry.csv"
    geo.write_text("\n".join(lines) + "\n")
    one_line_error(capsys, "linefit", "--data", data, contains=[geo, "line 11", f"sensor_id {sid}", "x is nan"])
    lines[10] = f"{sid},,{y},{z}"
    geo.write_text("\n".join(lines) + "\n")
    one_line_error(capsys, "linefit", "--data", data, contains=[geo, "line 11", "x is empty"])


def test_item_13_config_errors_name_the_file(tmp_path, capsys):
    pf = tmp_path / "uk.toml"
    pf.write_text('[pipelines.uk]\nparent = "default"\nbackbone = { name = "transformer", dpeth = 2 }\n')
    one_line_error(capsys, "compose", "--pipeline-file", pf, contains=[pf, "pipelines.uk.backbone.dpeth: unknown parameter"])
    one_line_error(capsys, "show", "uk", "--pipeline-file", pf, contains=[pf, "dpeth"])
    pf.write_text('[pipelines.uk]\nparent = "default"\ntrain = { lr = "fast" }\n')
    one_line_error(capsys, "train", "--pipeline-file", pf, "--data", tmp_path, contains=[pf, "pipelines.uk.train.lr"])


@pytest.mark.parametrize("kind", ["raw_pickle", "object_pickle", "truncated", "text"])
def test_item_08_checkpoint_errors_never_suggest_weights_only_false(world, tmp_path, kind, capsys):
    import pickle
    import shutil
    import warnings

    import torch

    run = tmp_path / "R"
    shutil.copytree(world["run"], run)
    best = run / "checkpoints" / "best.pt"
    if kind == "raw_pickle":
        best.write_bytes(pickle.dumps({"format": "icezoo-checkpoint"}, protocol=4))
    elif kind == "object_pickle":
        torch.save({"x": IcezooError("not a tensor")}, best)
    elif kind == "truncated":
        best.write_bytes(best.read_bytes()[:200])
    else:
        best.write_text("hello")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaked UserWarning fails the test
        line = one_line_error(capsys, "predict", run, "--data", world["data"], "--out", tmp_path / "s.csv",
                              contains=[best, "not an icezoo checkpoint"])
    assert "weights_only" not in line and "False" not in line
    assert not (tmp_path / "s.csv").exists()


def test_item_11_evaluate_on_a_single_batch_dataset(world, tmp_path, capsys):
    from icezoo.data.simulator import simulate

    one = simulate(tmp_path / "one", 40, events_per_batch=40, seed=9)
    code, out, err = run_cli(capsys, "evaluate", world["run"], "--data", one, "--no-plots")
    assert code == 0, err
    # The title names the data; rich may wrap it at the terminal width, so compare words.
    assert "one batch file" in " ".join(out.split()) and "training" not in err
    metrics = json.loads((world["run"] / "metrics.json").read_text())
    assert metrics["evaluation"]["batches"] == "1" and metrics["evaluation"]["n_events"] > 0


def test_item_20_a_small_simulated_set_trains_as_it_comes(tmp_path, capsys):
    data = tmp_path / "small"
    assert run_cli(capsys, "simulate", "--events", 300, "--out", data)[0] == 0
    assert len(list((data / "train").glob("batch_*.parquet"))) == 10  # 10 files of 30: one held out
    pf = tmp_path / "tiny.toml"
    pf.write_text(TINY)
    code, out, err = run_cli(capsys, "train", "--pipeline-file", pf, "--data", data, "--runs-dir", tmp_path / "runs",
                             "--name", "S", "--no-progress", "--max-steps", 2)
    assert code == 0, err
    info = json.loads((tmp_path / "runs" / "S" / "run.json").read_text())
    assert info["status"] == "done" and info["split"]["val_batches"] == [10]
    assert len(info["split"]["train_batches"]) == 9


def test_item_20_the_test_split_of_a_small_set_is_not_cut_into_small_files(tmp_path, capsys):
    # the training files are cut small so they train; the test split stays whole (one file here)
    data = tmp_path / "small"
    assert run_cli(capsys, "simulate", "--events", 300, "--test", "--test-events", 200, "--out", data)[0] == 0
    assert len(list((data / "train").glob("batch_*.parquet"))) == 10
    assert len(list((data / "test").glob("batch_*.parquet"))) == 1
    explicit = tmp_path / "explicit"
    assert run_cli(capsys, "simulate", "--events", 300, "--events-per-batch", 100, "--test", "--test-events", 200,
                   "--out", explicit)[0] == 0
    assert len(list((explicit / "test").glob("batch_*.parquet"))) == 2  # an explicit size applies to both


def test_item_21_compose_fills_unnamed_stages_from_default_and_says_so(tmp_path, capsys):
    import tomllib

    from icezoo.core.pipelines import pipeline_config
    from icezoo.zoo import registry

    default = pipeline_config("default", reg=registry())
    saved = tmp_path / "c.toml"
    code, out, err = run_cli(capsys, "compose", "--embed", "linear", "--backbone", "transformer", "--save", saved)
    assert code == 0, err
    table = tomllib.loads(saved.read_text())["pipelines"]["composed"]
    assert table["selection"] == default.selection.to_toml_value()
    assert [ls["name"] for ls in table["loss"]] == [ls.name for ls in default.loss]
    assert table["train"]["lr"] == default.train.lr
    assert "from" in out and "default" in out and "--embed" in out and "--backbone" in out


def test_item_22_learning_curves_overlay_and_metrics_csv(world, tmp_path, capsys):
    import shutil

    run = tmp_path / "runs" / "A"
    shutil.copytree(world["run"], run)
    shutil.copytree(world["run"], tmp_path / "runs" / "B")
    code, out, err = run_cli(capsys, "evaluate", run)
    assert code == 0, err
    curve = run / "plots" / "learning_curve.png"
    assert curve.is_file() and curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = tmp_path / "cmp.png"
    code, out, err = run_cli(capsys, "runs", "--plot", "A", "B", "--runs-dir", tmp_path / "runs", "--plot-out", png)
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG" and "A, B" in out, err
    one_line_error(capsys, "runs", "--plot", "nope", "--runs-dir", tmp_path / "runs", contains=["nope"])
    # metrics.csv: one row per epoch, the same numbers as metrics.json
    history = json.loads((world["run"] / "metrics.json").read_text())["history"]
    rows = (world["run"] / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].split(",")[:4] == ["epoch", "step", "train_loss", "val_mean"] and len(rows) == 1 + len(history)
    assert float(rows[-1].split(",")[3]) == pytest.approx(history[-1]["val_mean"])


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_item_04_non_finite_lr_is_refused_before_a_run_exists(world, tmp_path, value, capsys):
    runs = tmp_path / "runs"
    one_line_error(capsys, *train_args(world, "X", "--set", f"train.lr={value}", "--runs-dir", runs),
                   contains=["train.lr"])
    assert not runs.exists() or not list(runs.iterdir())


def test_item_04_predict_refuses_a_run_without_finite_weights(world, tmp_path, capsys):
    import shutil

    import torch

    run = tmp_path / "R"
    shutil.copytree(world["run"], run)
    best = run / "checkpoints" / "best.pt"
    payload = torch.load(best, weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name] = torch.full_like(payload["state_dict"][name], float("nan"))
    torch.save(payload, best)
    out = tmp_path / "s.csv"
    one_line_error(capsys, "predict", run, "--data", world["data"], "--out", out, contains=[best, "not finite", name])
    assert not out.exists()


def test_item_12_epochs_inf_is_one_line(world, tmp_path, capsys):
    one_line_error(capsys, *train_args(world, "X", "--epochs", "inf", "--runs-dir", tmp_path / "runs"),
                   contains=["epochs", "finite"])


# ------------------------------------------------------------------------------ the newcomer's path
def test_item_18_compact_list_never_wraps_names(capsys, monkeypatch):
    from icezoo.zoo import registry

    for columns in ("80", "60"):
        monkeypatch.setenv("COLUMNS", columns)
        for what in ([], ["pipelines"]):
            code, out, err = run_cli(capsys, "list", *what)
            assert code == 0, err
            lines = out.splitlines()
            assert all(len(ln) <= int(columns) for ln in lines), max(lines, key=len)
            names = ({src.name for src in registry().pipelines.values()} if what
                     else {spec.name for spec in registry().list()})
            firsts = {ln.split()[0] for ln in lines[2:] if ln.strip() and not ln.startswith("details:")}
            assert names <= firsts, names - firsts  # every name whole, at the start of its own line
    for name in ("center_of_gravity", "direction_kappa", "relbias_transformer", "sensor_embedding"):
        assert any(ln.startswith(name + " ") for ln in run_cli(capsys, "list")[1].splitlines()), name
    code, out, err = run_cli(capsys, "show", "direction_kappa")
    assert code == 0 and "direction_kappa (head" in out and "parameters" in out and "properties" in out


def test_item_19_show_toml_round_trips_through_pipeline_file(tmp_path, capsys, monkeypatch):
    import tomllib

    from icezoo.core.pipelines import pipeline_config, resolved_table
    from icezoo.zoo import registry

    monkeypatch.setenv("COLUMNS", "80")
    for args in (["show", "BASELINE_HF_V8", "--toml"], ["show", "BASELINE_HF_V8"]):  # piped: plain TOML too
        code, out, err = run_cli(capsys, *args)
        assert code == 0, err
        f = tmp_path / "p.toml"
        f.write_text(out)
        tables = tomllib.loads(out)["pipelines"]  # valid TOML even with 80 columns
        assert list(tables) == ["BASELINE_HF_V8"]
        reg = registry()
        again = pipeline_config(None, f, reg=reg)
        assert resolved_table(again, reg) == resolved_table(pipeline_config("BASELINE_HF_V8", reg=reg), reg)
        code, out2, err = run_cli(capsys, "show", "BASELINE_HF_V8", "--pipeline-file", f, "--toml")
        assert code == 0 and out2 == out, err


# ------------------------------------------------------------------------------ the engine
def test_item_04_a_run_whose_validation_is_never_finite_ends_failed(world, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = train_args(world, "DIV", "--runs-dir", runs, "--epochs", 1, "--set", "train.lr=1e30",
                      "--set", "train.grad_clip=1e30")
    one_line_error(capsys, *args, contains=["validation", "never finite"])
    info = json.loads((runs / "DIV" / "run.json").read_text())
    assert info["status"] == "failed" and "never finite" in info["error"]
    assert not (runs / "DIV" / "checkpoints" / "best.pt").exists()  # no "best" weights that are NaN
    one_line_error(capsys, "predict", runs / "DIV", "--data", world["data"], "--out", tmp_path / "s.csv",
                   contains=["no epoch validated to a finite score"])
    assert not (tmp_path / "s.csv").exists()


def test_item_12_max_steps_caps_the_epochs(world, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, *train_args(world, "CAP", "--runs-dir", runs, "--epochs", 1, "--max-steps", 45))
    assert code == 0, err
    info = json.loads((runs / "CAP" / "run.json").read_text())
    history = json.loads((runs / "CAP" / "metrics.json").read_text())["history"]
    assert len(history) == 1 and info["step"] == history[0]["step"] < 45  # one epoch, not 45 steps over two
    code, out, err = run_cli(capsys, *train_args(world, "CAP2", "--runs-dir", runs, "--epochs", 2, "--max-steps", 3))
    assert code == 0 and json.loads((runs / "CAP2" / "run.json").read_text())["step"] == 3, err


def test_item_14_input_errors_leave_no_run_directory(world, tmp_path, capsys):
    runs = tmp_path / "runs"
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"not a checkpoint")
    one_line_error(capsys, *train_args(world, "A", "--runs-dir", runs, "--init-from", bad_ckpt), contains=[bad_ckpt])
    one_line_error(capsys, *train_args(world, "B", "--runs-dir", runs, "--init-from", tmp_path / "nothing"),
                   contains=["nothing"])
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(world["data"], broken)
    (broken / "train" / "batch_4.parquet").write_bytes(b"PAR1 truncated")
    one_line_error(capsys, *train_args(world, "C", "--runs-dir", runs, "--data", broken), contains=["batch_4.parquet"])
    assert not runs.exists() or list(runs.iterdir()) == []


def test_item_07_train_refuses_meta_rows_naming_a_missing_batch_file(world, tmp_path, capsys):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(world["data"], data)
    (data / "train" / "batch_3.parquet").unlink()
    one_line_error(capsys, *train_args(world, "M", "--runs-dir", tmp_path / "runs", "--data", data),
                   contains=["train_meta.parquet", "batch_3.parquet is missing"])


def test_item_15_resumed_epoch_loss_is_the_whole_epochs(world, tmp_path, capsys, monkeypatch):
    import torch

    runs = tmp_path / "runs"
    assert run_cli(capsys, *train_args(world, "FULL", "--runs-dir", runs, "--epochs", 1))[0] == 0
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def interrupt_at_the_fifth(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", interrupt_at_the_fifth)
    assert run_cli(capsys, *train_args(world, "CUT", "--runs-dir", runs, "--epochs", 1))[0] == 130
    monkeypatch.setattr(torch.optim.AdamW, "step", original)
    assert run_cli(capsys, "train", "--resume", runs / "CUT", "--no-progress")[0] == 0
    full = json.loads((runs / "FULL" / "metrics.json").read_text())["history"]
    cut = json.loads((runs / "CUT" / "metrics.json").read_text())["history"]
    assert len(full) == len(cut) == 1
    assert cut[0]["train_loss"] == pytest.approx(full[0]["train_loss"], rel=1e-5)


def test_item_03_a_full_disk_marks_the_run_failed_and_it_resumes(world, tmp_path, capsys, monkeypatch):
    import icezoo.core.atomic as atomic

    runs = tmp_path / "runs"
    real_replace = os.replace
    state = {"checkpoints": 0}

    def replace(src, dst):
        if str(dst).endswith(".pt"):
            state["checkpoints"] += 1
        if state["checkpoints"] >= 3:  # the disk fills up after the first epoch's checkpoints
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    one_line_error(capsys, *train_args(world, "FULLDISK", "--runs-dir", runs), contains=["No space left on device"])
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    info = json.loads((runs / "FULLDISK" / "run.json").read_text())
    assert info["status"] == "failed" and "No space left on device" in info["error"]
    assert not [p for p in (runs / "FULLDISK").rglob(".*tmp*")]  # no temporary left behind
    assert run_cli(capsys, "train", "--resume", runs / "FULLDISK", "--no-progress")[0] == 0
    assert json.loads((runs / "FULLDISK" / "run.json").read_text())["status"] == "done"
