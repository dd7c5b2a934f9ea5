"""Regression tests of issue 27's misleading (M1-M11) and cosmetic items: each input here used to be
accepted, or answered, in a way that misled the user. Tiny data, tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icezoo.core import IcezooError
from test_hardening import TINY, one_line_error, run_cli, train_args, world  # noqa: F401  (world: a module fixture)


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


# ------------------------------------------------------------------------------ studies (M8-M10)
STUDY = """
[studies.mstudy]
question = "does masked pooling help a tiny model?"
pipeline = "BASELINE_HF"
reference = "plain"
budget = "64"
seeds = [0]
size = { "embedder.dim" = 8, "backbone.depth" = 1, "backbone.heads" = 2 }
common = { "selection.max_pulses" = 16, "train.batch_size" = 32 }
[studies.mstudy.variants]
plain = {}
masked = { pipeline = "BASELINE_HF_V1", log = "better", log_score = "1.169" }
slower = { set = { "train.lr" = 1e-4 } }
"""


@pytest.fixture
def study(world, monkeypatch):
    """The registry seen by the engine, with the study file above added through the hook."""
    import icezoo.zoo as zoo
    from icezoo.core import hookimpl

    f = world["root"] / "mstudies.toml"
    f.write_text(STUDY)

    class Plugin:
        @hookimpl
        def icezoo_study_files(self):
            return [f]

    reg = zoo.make_registry(extra_plugins=[("m-study", Plugin())], autoload=False)
    monkeypatch.setattr(zoo, "registry", lambda: reg)
    return world


def test_m10_a_truncated_run_json_in_a_study_is_set_aside_and_retrained(study, tmp_path):
    from icezoo.engine.reproduce import plan_study, reproduce

    runs, data, quiet = tmp_path / "runs", str(study["data"]), (lambda *a: None)
    reproduce("mstudy", data=data, runs_dir=runs, progress=False, echo=quiet)
    plan = plan_study("mstudy", data=data, runs_dir=runs, log=quiet)
    masked = plan.run_dir("masked", 0)
    text = (masked / "run.json").read_text()
    (masked / "run.json").write_text(text[: len(text) // 2])  # a crash mid-write (older versions, another tool)
    said = []
    out = reproduce("mstudy", data=data, runs_dir=runs, progress=False, echo=said.append)
    assert any("masked-s0: unusable earlier attempt kept in" in str(s) for s in said), said
    assert any("masked-s0: trained" in str(s) for s in said) and any("plain-s0: reused" in str(s) for s in said)
    stale = list((plan.study_dir / ".stale").iterdir())
    assert len(stale) == 1 and stale[0].name.startswith("masked-s0-")
    assert (stale[0] / "run.json").read_text() == text[: len(text) // 2]  # kept, not deleted
    assert json.loads((masked / "run.json").read_text())["status"] == "done" and "masked" in out


def test_m8_a_wall_clock_budget_gives_equal_size_variants_equal_steps(study, tmp_path, monkeypatch):
    """The probe is run once per model size: a machine that slows down between probes (1,628 vs 240
    steps on a loaded machine) no longer trains two equal-size variants for different lengths."""
    import icezoo.engine.bench as bench
    from icezoo.engine.reproduce import fix_steps, plan_study

    speeds = iter([64.0, 9.6, 32.0, 5.0])  # events/s of successive probes: the machine gets busier
    probed = []

    def fake_bench(pipeline, overrides=None, **kw):
        probed.append(dict(overrides or {}))
        return {"train_events_per_s": next(speeds)}

    monkeypatch.setattr(bench, "bench_model", fake_bench)
    said = []
    plan = plan_study("mstudy", data=str(study["data"]), budget="0.5min", runs_dir=tmp_path, log=said.append)
    plan.study_dir.mkdir(parents=True)
    fix_steps(plan, None, said.append)
    assert plan.steps == {"plain": 60, "masked": 60, "slower": 60} and len(probed) == 1
    assert "masked: 64 events/s (benchmark of plain, the same size)" in " ".join(map(str, said))
    # another size is probed on its own
    plan = plan_study("mstudy", data=str(study["data"]), budget="0.5min", runs_dir=tmp_path / "b", log=said.append)
    plan.configs["masked"] = plan.configs["masked"].with_overrides({"embedder.dim": 16}, where="test")
    plan.study_dir.mkdir(parents=True)
    fix_steps(plan, None, said.append)
    assert len(probed) == 3 and plan.steps["plain"] == plan.steps["slower"] != plan.steps["masked"]


# ------------------------------------------------------------------------------ M9
def test_m9_a_stages_bad_init_from_leaves_no_run_directory(world, capsys):
    spec = 'backbone={name="transformer", depth=1, heads=2, init_from="NOSUCH"}'
    one_line_error(capsys, *train_args(world, "M9stage", "--set", spec),
                   contains=("pipelines.tiny.backbone.init_from", "no successful run of pipeline NOSUCH"))
    assert not (world["runs"] / "M9stage").exists()


def _one_file_dataset(world, tmp_path) -> Path:
    import shutil

    import polars as pl

    one = tmp_path / "one"
    (one / "train").mkdir(parents=True)
    shutil.copy(world["data"] / "train" / "batch_1.parquet", one / "train")
    shutil.copy(world["data"] / "sensor_geometry.csv", one)
    pl.read_parquet(world["data"] / "train_meta.parquet").filter(pl.col("batch_id") == 1).write_parquet(
        one / "train_meta.parquet")
    return one


@pytest.mark.parametrize("case", ["single_file_data", "bad_device"])
def test_m9_reproduce_checks_its_inputs_before_making_the_study_folder(study, tmp_path, capsys, case):
    runs = tmp_path / "runs"
    if case == "single_file_data":
        args, contains = ("--data", _one_file_dataset(study, tmp_path)), ("training needs at least 2 batch files",)
    else:
        args, contains = ("--data", study["data"], "--device", "cuda:99", "--budget", "1min"), ("--device cuda:99",)
    one_line_error(capsys, "reproduce", "mstudy", "--runs-dir", runs, "--no-progress", *args, contains=contains)
    assert not runs.exists()


# ------------------------------------------------------------------------------ M11
def test_m11_tta_is_bounded_and_says_what_it_does(world, tmp_path, capsys):
    for cmd in (("evaluate", world["run"]), ("predict", world["run"], "--data", world["data"], "--out", tmp_path / "s.csv")):
        one_line_error(capsys, *cmd, "--tta", 1000, contains=("--tta 1000: at most 32 rotations",))
    assert not (tmp_path / "s.csv").exists()
    code, out, err = run_cli(capsys, "evaluate", world["run"], "--tta", 3)
    assert code == 0, err
    assert "evaluate: 1 run(s) x 1 + 3 view(s) = 4 model pass(es) over" in err  # said before the work starts


def test_m11_member_predictions_reports_each_view(world):
    from icezoo.engine.checkpoints import load_run_model
    import torch

    from icezoo.engine.predict import member_predictions

    _, info, _, model, _ = load_run_model(str(world["run"]), world["runs"])
    seen = []
    member_predictions(model, world["data"], "train", info["split"]["val_batches"], torch.device("cpu"), tta=4,
                       on_view=lambda: seen.append(1))
    assert len(seen) == 4


# ------------------------------------------------------------------------------ cosmetic
def test_cosmetic_a_run_named_twice_is_refused_not_counted_twice(world, tmp_path, capsys):
    for cmd in (("evaluate", world["run"], "T"), ("predict", "T", world["run"], "--data", world["data"],
                                                  "--out", tmp_path / "s.csv")):
        one_line_error(capsys, *cmd, "--runs-dir", world["runs"], contains=("is named twice",))


def test_cosmetic_budgets_read_as_given_and_absurd_ones_are_refused(capsys):
    from icezoo.engine.studies import Budget

    assert (Budget.parse("10s").slug, str(Budget.parse("10s"))) == ("10s", "10 s")
    assert (Budget.parse("5min").slug, Budget.parse("1.5min").slug, Budget.parse("30k").slug) == ("5min", "90s", "30k")
    for text in ("99999999999999999999", "20000min"):
        with pytest.raises(ValueError, match="at most"):
            Budget.parse(text)
    one_line_error(capsys, "reproduce", "losses", "--budget", "99999999999999999999", contains=("at most",))


def test_cosmetic_a_studys_own_pipeline_is_named_by_its_path(tmp_path):
    from icezoo.engine.studies import parse_study_file
    from icezoo.zoo import registry

    f = tmp_path / "s.toml"
    f.write_text('[studies.mini]\nquestion = "q"\npipeline = "NOSUCH"\nreference = "a"\n'
                 '[studies.mini.variants]\na = {}\nb = { set = { "train.lr" = 1e-4 } }\n')
    with pytest.raises(IcezooError, match=r"s.toml: studies.mini.pipeline: ") as exc:
        parse_study_file(f, registry())
    assert "(study)" not in str(exc.value)


def test_cosmetic_typed_settings_are_not_coerced(capsys):
    one_line_error(capsys, "compose", "--set", "train.batch_size=true", contains=("train.batch_size",))
    one_line_error(capsys, "compose", "--set", 'backbone={name="transformer", freeze="yes"}',
                   contains=("backbone.freeze",))


def test_cosmetic_bench_and_data_arguments_are_checked_first(tmp_path, capsys):
    code, _, err = run_cli(capsys, "bench", "data", "--passes", "0")
    assert code == 2 and "--passes" in err
    one_line_error(capsys, "bench", "predict", "--run", "nosuchrun", "--runs-dir", tmp_path,
                   contains=("run 'nosuchrun' not found",))
    assert not list(tmp_path.iterdir())
    f = tmp_path / "file.txt"
    f.write_text("x")
    # a file is read when a format detects it (issue 22: GraphNeT .db); this text file is none
    one_line_error(capsys, "reproduce", "losses", "--data", f, contains=("file.txt", "not a dataset icezoo can read"))


def test_cosmetic_experiments_says_when_the_runs_directory_is_missing(tmp_path, capsys):
    code, out, err = run_cli(capsys, "experiments", "--markdown", "--runs-dir", tmp_path / "nowhere")
    assert code == 0 and "no such directory" in err and "| EXP_00 |" in out
    (tmp_path / "afile").write_text("x")
    one_line_error(capsys, "experiments", "--runs-dir", tmp_path / "afile", contains=("is a file",))


def test_cosmetic_pipeline_errors_name_the_file_the_entry_and_the_toml(world, tmp_path, capsys):
    pf = tmp_path / "h.toml"
    pf.write_text(TINY.replace("heads = 2", "heads = 3"))  # dim 8 is not divisible by 3 heads: found at build
    one_line_error(capsys, *train_args(world, "H3")[:2], pf, *train_args(world, "H3")[3:],
                   contains=(f"error: {pf}: pipelines.tiny.backbone", "divisible"))
    pf.write_text(TINY.replace('backbone = { name = "transformer", depth = 1, heads = 2 }',
                               'backbone = [{ name = "transformer", depth = 1, heads = 2 }, '
                               '{ name = "transformer", depth = 1, heads = 2, init_from = 5 }]'))
    one_line_error(capsys, "show", "tiny", "--pipeline-file", pf, contains=("pipelines.tiny.backbone.1.init_from",))
    one_line_error(capsys, "compose", "--set", 'backbone={name="transformer", name="x"}',
                   contains=("--set backbone: not a valid TOML value", "Duplicate"))


def test_cosmetic_a_renamed_component_drops_the_old_ones_params(capsys):
    from icezoo.core.pipelines import pipeline_config
    from icezoo.zoo import registry

    default = pipeline_config("default", reg=registry())
    config = default.with_overrides({"backbone.k": 4, "backbone.name": "pyg"})
    assert config.to_table()["backbone"] == {"name": "pyg", "k": 4}  # the transformer's heads and depth are gone
    selection = default.with_overrides({"selection.name": "time_order"}).to_table()["selection"]
    assert selection["max_pulses"] == default.max_pulses  # every selection's param is kept


def test_cosmetic_a_study_report_says_where_its_data_came_from(world, tmp_path):
    from icezoo.engine.reproduce import _data_origin

    assert "written by icezoo simulate" in _data_origin(world["data"]) and "?" not in _data_origin(world["data"])
    assert _data_origin(tmp_path) == "not simulated by icezoo: scores are on this data"
