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


def test_d1_check_output_refuses_a_single_file_source_and_keeps_plain_paths(tmp_path):
    from icezoo.core import IcezooError
    from icezoo.core.outputs import check_output

    db = tmp_path / "events.db"  # a GraphNeT SQLite source is one file
    db.write_bytes(b"x")
    with pytest.raises(IcezooError, match="is an input of this command"):
        check_output(db, dirs=[db])
    assert check_output(tmp_path / "sub.csv", dirs=[db]) == tmp_path / "sub.csv"
    assert not (tmp_path / "sub.csv").exists()


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


# ------------------------------------------------------------------------------ C1 nothing to score
def one_pulse_batch(data: Path, bid: int, split: str = "train") -> None:
    """Keep only the first pulse of every event of batch file ``bid`` (meta rewritten to match)."""
    import numpy as np
    import polars as pl

    from icezoo.data.kaggle_layout import write_batch, write_meta

    f = data / split / f"batch_{bid}.parquet"
    b = pl.read_parquet(f)
    eid = b["event_id"].to_numpy()
    first = np.flatnonzero(np.r_[True, eid[1:] != eid[:-1]])
    write_batch(f, eid[first], b["sensor_id"].to_numpy()[first], b["time"].to_numpy()[first],
                b["charge"].to_numpy()[first], b["auxiliary"].to_numpy()[first])
    meta = pl.read_parquet(data / f"{split}_meta.parquet")
    fp, lp = meta["first_pulse_index"].to_numpy().copy(), meta["last_pulse_index"].to_numpy().copy()
    rows = np.flatnonzero(meta["batch_id"].to_numpy() == bid)
    fp[rows] = lp[rows] = np.arange(len(rows))
    truth = {"azimuth": meta["azimuth"], "zenith": meta["zenith"]} if "azimuth" in meta.columns else {}
    write_meta(data / f"{split}_meta.parquet", meta["batch_id"], meta["event_id"], fp, lp, **truth)


def test_c1_evaluate_with_no_scorable_event_is_one_line_and_writes_nothing(copies, capsys):
    data, runs = copies
    one_pulse_batch(data, 1)
    before = digest(runs)
    line = one_line_error(capsys, "evaluate", "T", "--runs-dir", runs, "--data", data, "--batches", "1", "--no-plots",
                          contains=[data, "nothing to score"])
    assert "nan" not in line.lower()
    # the several-runs form says what it is about to do first (a progress line), then the same error
    shutil.copytree(runs / "T", runs / "T2")
    before = digest(runs)
    code, _, err = run_cli(capsys, "evaluate", "T", "T2", "--runs-dir", runs, "--data", data, "--batches", "1")
    assert code == 2 and "Traceback" not in err and "Warning" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: ") and "nothing to score" in err
    assert digest(runs) == before  # no metrics.json with a bare NaN, run.json untouched


# ------------------------------------------------------------------------------ C2 sizes beyond the machine
@pytest.mark.parametrize("setting, says", [("embedder.dim=1000000000", "refused"),
                                           ("backbone.depth=1000000000", "refused"),
                                           ("embedder.dim=8192", "refused")])
def test_c2_sizes_beyond_the_machine_are_one_line(world, tmp_path, capsys, monkeypatch, setting, says):  # noqa: F811
    import icezoo.core.sizes as sizes

    monkeypatch.setattr(sizes, "available_bytes", lambda: 1 << 30)  # as if 1 GiB were free: fast on any machine
    save = tmp_path / "p.toml"
    one_line_error(capsys, "compose", "--pipeline-file", world["pf"], "--pipeline", "tiny", "--set", setting,
                   "--save", save, contains=["pipelines.composed.", says])
    assert not save.exists()
    import resource

    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY  # the build's cap was lifted


def test_c2_the_parameter_count_stops_a_build_before_its_weights_are_written():
    from icezoo.core import IcezooError
    from icezoo.core.sizes import size_guard
    from torch import nn

    with pytest.raises(IcezooError, match=r"demo: more than 1,001,000 parameters \(3.8 MiB"):
        with size_guard("demo", limit_bytes=4_000_000):  # room for 1M fp32 weights
            nn.Sequential(nn.Linear(1000, 1000), nn.Linear(1000, 1000))
    with size_guard("demo", limit_bytes=8_100_000):
        nn.Sequential(nn.Linear(1000, 1000), nn.Linear(1000, 1000))  # fits: built as usual


def test_c2_an_allocation_refused_anywhere_is_one_line(world, tmp_path, capsys, monkeypatch):  # noqa: F811
    import icezoo.engine.predict as P

    def refuse(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 40000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(P, "predict", refuse)
    one_line_error(capsys, "predict", world["run"], "--data", world["data"], "--out", tmp_path / "s.csv",
                   contains=["out of memory", "37.3 GiB", "train.batch_size"])


# ------------------------------------------------------------------------------ C10 files that never end
def test_c10_a_pipeline_file_or_run_json_that_is_not_a_regular_file_is_one_line(world, tmp_path, capsys):  # noqa: F811
    fifo = tmp_path / "p.toml"
    os.mkfifo(fifo)  # reading it whole would wait forever; /dev/zero would read until the OOM killer
    for bad, kind in (("/dev/zero", "character device"), (fifo, "FIFO"), (tmp_path, "directory")):
        one_line_error(capsys, "show", "X", "--pipeline-file", bad, contains=[bad, kind, "regular files only"])
    run = tmp_path / "runs" / "R"
    run.mkdir(parents=True)
    os.mkfifo(run / "run.json")
    one_line_error(capsys, "evaluate", run, "--no-plots", contains=[run, "run.json"])
    code, out, _ = run_cli(capsys, "runs", "--runs-dir", tmp_path / "runs")  # the ledger shows it, never hangs
    assert code == 0 and "| R |" in out


# ------------------------------------------------------------------------------ C9 --threads below 1
@pytest.mark.parametrize("threads", [-1, 0])
def test_c9_bench_threads_below_one_is_one_line(capsys, threads):
    import torch

    before = torch.get_num_threads()
    for bench in ("model", "predict"):
        one_line_error(capsys, "bench", bench, "--threads", threads, contains=[f"--threads {threads}", "at least 1"])
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------------------ C5 a negative seed
@pytest.mark.parametrize("seeds", ["[-1]", "[0, 4294967296]"])
def test_c5_a_study_seed_out_of_range_is_refused_when_the_file_is_read(tmp_path, seeds):
    from icezoo.core import IcezooError
    from icezoo.engine.studies import parse_study_file

    f = tmp_path / "s.toml"
    f.write_text(ESCAPE.replace("NAME", "ok").replace('budget = "200"', f'budget = "200"\nseeds = {seeds}'))
    with pytest.raises(IcezooError) as err:
        parse_study_file(f)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{f}: studies.ok.seeds") and "from 0 to 2^32 - 1" in text, text


# ------------------------------------------------------------------------------ C7/C8 damaged run.json fields
@pytest.mark.parametrize("field, value, says", [("evaluation", {"mean": 1.2, "ci95": "oops", "split": "val"}, "ci95"),
                                                ("evaluation", {"mean": 1.2, "ci95": [1, 2, 3]}, "ci95"),
                                                ("split.val_batches", ["x"], "split.val_batches"),
                                                ("split.train_batches", ["1"], "split.train_batches")])
def test_c7_c8_malformed_run_json_fields_are_unreadable_everywhere(copies, capsys, field, value, says):
    import json

    _, runs = copies
    info_file = runs / "T" / "run.json"
    info = json.loads(info_file.read_text())
    if field.startswith("split."):
        info["split"][field.split(".")[1]] = value
    else:
        info[field] = value
    info_file.write_text(json.dumps(info))
    code, out, err = run_cli(capsys, "experiments", "--runs-dir", runs)
    assert code == 0 and "Traceback" not in err, err
    code, out, _ = run_cli(capsys, "runs", "--runs-dir", runs)
    assert code == 0 and "| T | unreadable |" in out and says in out, out
    one_line_error(capsys, "train", "--resume", runs / "T", contains=[info_file, says])


# ------------------------------------------------------------------------------ C6 a damaged study cache
def test_c6_a_damaged_val_errors_cache_is_stale_not_a_traceback(copies):
    import numpy as np

    from icezoo.engine.runs import ERRORS_FILE, RunDir

    _, runs = copies
    run = RunDir(runs / "T")
    good = {"event_id": np.arange(3, dtype=np.int64), "error": np.ones(3), "kappa": np.ones(3), "n_params": np.array(5)}
    run.write_val_errors(good)
    assert run.val_errors()["event_id"].tolist() == [0, 1, 2]
    cache = runs / "T" / ERRORS_FILE
    cache.write_bytes(cache.read_bytes()[:40])  # truncated
    assert run.val_errors() is None
    with open(cache, "wb") as fh:  # an object array (a pickle inside)
        np.savez(fh, event_id=np.array([object()], dtype=object), error=np.ones(1), kappa=np.ones(1))
    assert run.val_errors() is None
    run.write_val_errors({**good, "error": np.ones(2)})  # lengths that disagree
    assert run.val_errors() is None


@pytest.mark.parametrize("damage, says", [("options", "options.bogus: unknown option"),
                                          ("train_spec", "no split.train_spec")])
def test_c8_resume_with_an_unknown_option_or_a_missing_split_field_is_one_line(copies, capsys, damage, says):
    import json

    _, runs = copies
    info_file = runs / "T" / "run.json"
    info = json.loads(info_file.read_text())
    if damage == "options":
        info["options"]["bogus"] = 1
    else:
        del info["split"]["train_spec"]
    info_file.write_text(json.dumps(info))
    before = digest(runs)
    one_line_error(capsys, "train", "--resume", runs / "T", "--no-progress", contains=[info_file, says])
    assert digest(runs) == before
