"""Regression tests of issue 27 part 2, the destructive defects (D1-D3) and the crashes (C1-C10) a
hostile-user audit found: one test (or more) per item, named ``test_dN_...`` / ``test_cN_...``. Every
bad input gives one line naming the file or field, exit code 2, no traceback, and leaves nothing
lost or half-written. Tiny data, tiny models (the ``world`` of tests/test_hardening.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from test_hardening import one_line_error, run_cli, world  # noqa: F401  (world: a module fixture)


def digest(root: Path) -> dict[str, str]:
    """md5 of every file under ``root`` (or of ``root`` itself): to prove nothing was touched."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def copies(world, tmp_path):  # noqa: F811
    """A private copy of the world's dataset and run, free to be damaged."""
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    runs = tmp_path / "runs"
    shutil.copytree(world["run"], runs / "T")
    return data, runs


# ------------------------------------------------------------------------------ D1 --out onto inputs
@pytest.mark.parametrize("target", ["data/test_meta.parquet", "data/test/batch_1.parquet", "data/sensor_geometry.csv",
                                    "data/new.csv", "runs/T/checkpoints/best.pt", "runs/T/run.json", "runs/T/sub.csv"])
def test_d1_predict_refuses_an_out_inside_its_dataset_or_run(copies, tmp_path, capsys, target):
    data, runs = copies
    before = digest(tmp_path)
    out = tmp_path / target
    one_line_error(capsys, "predict", "T", "--runs-dir", runs, "--data", data, "--out", out,
                   contains=["--out", out, "lies inside", "dataset" if target.startswith("data") else "run directory"])
    assert digest(tmp_path) == before  # nothing replaced, nothing created


def test_d1_a_link_to_an_input_is_refused_and_a_plain_out_still_works(copies, tmp_path, capsys):
    data, runs = copies
    link = tmp_path / "sub.csv"
    os.symlink(data / "test_meta.parquet", link)
    before = digest(data)
    one_line_error(capsys, "predict", "T", "--runs-dir", runs, "--data", data, "--out", link,
                   contains=["a link to", "test_meta.parquet"])
    assert digest(data) == before and link.is_symlink()
    ok = tmp_path / "ok.csv"
    assert run_cli(capsys, "predict", "T", "--runs-dir", runs, "--data", data, "--out", ok)[0] == 0
    assert ok.read_text().startswith("event_id,azimuth,zenith")


def test_d1_linefit_runs_plot_compose_and_simulate_refuse_their_inputs(copies, world, tmp_path, capsys):  # noqa: F811
    data, runs = copies
    before = digest(tmp_path)
    one_line_error(capsys, "linefit", "--data", data, "--split", "test", "--out", data / "test_meta.parquet",
                   contains=["--out", "test_meta.parquet", "dataset"])
    one_line_error(capsys, "runs", "--runs-dir", runs, "--plot", "T", "--plot-out", runs / "T" / "run.json",
                   contains=["--plot-out", "run.json", "run directory"])
    one_line_error(capsys, "runs", "--runs-dir", runs, "--plot", "T", "--plot-out", data / "curves.png",
                   contains=["--plot-out", "curves.png", "dataset"])
    pf = tmp_path / "p.toml"
    shutil.copy(world["pf"], pf)
    saved = digest(pf)
    one_line_error(capsys, "compose", "--pipeline-file", pf, "--pipeline", "tiny", "--save", pf,
                   contains=["--save", "p.toml", "input"])
    assert digest(pf) == saved
    one_line_error(capsys, "simulate", "--events", 50, "--out", runs / "T" / "sim", contains=["--out", "run directory"])
    pf.unlink()
    assert digest(tmp_path) == before


# ------------------------------------------------------------------------------ D2 study names as paths
ESCAPE = """
[studies."NAME"]
question = "q"
reference = "a"
budget = "200"
[studies."NAME".variants]
a = "BASELINE_HF"
b = { pipeline = "BASELINE_HF_V1" }
"""


@pytest.mark.parametrize("name", ["../../../escape", "..", ".stale", "a/b", "a b"])
def test_d2_a_study_name_that_is_a_path_is_refused_before_anything_is_written(world, tmp_path, capsys, name,  # noqa: F811
                                                                               monkeypatch):
    import icezoo.zoo as zoo
    from icezoo.core import hookimpl

    f = tmp_path / "s.toml"
    f.write_text(ESCAPE.replace("NAME", name))

    class Plugin:
        @hookimpl
        def icezoo_study_files(self):
            return [f]

    reg = zoo.make_registry(extra_plugins=[("escape", Plugin())], autoload=False)
    monkeypatch.setattr(zoo, "registry", lambda: reg)
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    one_line_error(capsys, "reproduce", name, "--data", world["data"], "--runs-dir", "runs",
                   contains=[f"studies.{name}", "study name", "use letters"])
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == [Path(p) for p in ("a", "a/b", "a/b/c",
                                                                                              "s.toml")]


# ------------------------------------------------------------------------------ D3 exact int64 event ids
def big_ids(data: Path) -> list[int]:
    """Give the test split of ``data`` event ids above 2^53 (odd, so a float round trip changes them)
    and int64's maximum; returns them in meta order."""
    import numpy as np
    import polars as pl

    from icezoo.data.kaggle_layout import write_batch, write_meta

    meta = pl.read_parquet(data / "test_meta.parquet")
    old = meta["event_id"].to_numpy()
    new = 2**53 + 1 + 2 * np.arange(len(old), dtype=np.int64)
    new[-1] = np.iinfo(np.int64).max
    to_new = dict(zip(old.tolist(), new.tolist()))
    write_meta(data / "test_meta.parquet", meta["batch_id"], new, meta["first_pulse_index"], meta["last_pulse_index"])
    for f in (data / "test").glob("batch_*.parquet"):
        b = pl.read_parquet(f)
        eid = np.array([to_new[e] for e in b["event_id"].to_list()], dtype=np.int64)
        write_batch(f, eid, b["sensor_id"], b["time"], b["charge"], b["auxiliary"])
    (data / "test_truth.parquet").unlink(missing_ok=True)
    return new.tolist()


def test_d3_predict_and_linefit_write_event_ids_above_2_53_exactly(copies, tmp_path, capsys):
    data, runs = copies
    ids = big_ids(data)
    for args in (["predict", "T", "--runs-dir", runs, "--data", data], ["linefit", "--data", data, "--split", "test"]):
        out = tmp_path / f"{args[0]}.csv"
        code, _, err = run_cli(capsys, *args, "--out", out)
        assert code == 0, err
        lines = out.read_text().splitlines()
        assert [int(line.split(",")[0]) for line in lines[1:]] == ids, args[0]  # in meta order, every digit
        assert lines[-1].startswith("9223372036854775807,")
